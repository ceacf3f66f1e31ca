"""The drift model: what a node's Kubernetes networking should be, what it is, what is wrong, and the fix.

Stdlib only; it runs on the node. The want is computed once on the controller for the whole cluster
(the inventory, the flannel leases from etcd, the services and their endpoints) and handed to every
node; the state is what the node module gathered in one pass (files, /proc, `iptables-save`,
`ip -j`, `bridge -j fdb`, `conntrack -L`, firewalld, DNS answers). audit(state, want) returns the
findings and, for each, the actions that fix it; the module runs the actions unless in check mode.

Every action touches only what Kubernetes or netmend owns: KUBE-*, FLANNEL-* and NETMEND-* chains,
flannel's devices and peer entries, cni0's address, netmend's own files, the pods' resolv.conf, the
Corefile netmend renders, the node's nameserver lines (every other line of resolv.conf is kept).
"""

import ipaddress
import re
from dataclasses import dataclass, field

from . import firewalld, flannel, kubeproxy, proxymode, resolvconf, sysctl
from .coredns import CorefileError, loopback_upstreams
from .errors import ProblemsError
from .findings import Finding
from .iptables import FORWARD_CHAIN, forward_accept_rules, owned, restore_payload, rule_target
from .kmod import PROXY_MODES

# Finding ID -> (severity, component). docs/findings/<ID>.md documents each.
CATALOG = {
    "KMOD-BR-NETFILTER-MISSING": ("critical", "kernel"),
    "SYSCTL-BRIDGE-NF-CALL-IPTABLES-OFF": ("error", "kernel"),
    "SYSCTL-BRIDGE-NF-CALL-IP6TABLES-OFF": ("warning", "kernel"),
    "SYSCTL-IP-FORWARD-OFF": ("critical", "kernel"),
    "SYSCTL-IPV6-FORWARDING-OFF": ("warning", "kernel"),
    "SYSCTL-VALUE-DRIFT": ("warning", "kernel"),
    "SYSCTL-NOT-PERSISTED": ("warning", "kernel"),
    "FIREWALLD-BLOCKING": ("error", "firewall"),
    "FIREWALLD-RUNNING": ("error", "firewall"),
    "FORWARD-POLICY-DROP": ("critical", "forward"),
    "MASQUERADE-MISSING": ("error", "flannel"),
    "DNAT-STALE-POD-IP": ("error", "kube-proxy"),
    "DNAT-STALE-HOST-IP": ("error", "kube-proxy"),
    "KUBE-PROXY-MODE-LEFTOVERS": ("error", "kube-proxy"),
    "RESOLV-NAMESERVER-DEAD": ("error", "dns"),
    "COREDNS-LOOPBACK-UPSTREAM": ("critical", "dns"),
    "POD-RESOLV-NO-CLUSTER-DNS": ("error", "dns"),
    "HOSTNET-POD-DNS-POLICY": ("error", "dns"),
    "FLANNEL-SUBNET-ENV-MISMATCH": ("error", "flannel"),
    "CNI0-ADDRESS-MISMATCH": ("critical", "flannel"),
    "FLANNEL-VXLAN-MISSING": ("critical", "flannel"),
    "FLANNEL-VXLAN-MTU": ("warning", "flannel"),
    "FLANNEL-VXLAN-VNI": ("critical", "flannel"),
    "FLANNEL-VXLAN-PORT": ("critical", "flannel"),
    "FLANNEL-PEER-ROUTE-MISSING": ("critical", "flannel"),
    "FLANNEL-PEER-NEIGH-MISSING": ("critical", "flannel"),
    "FLANNEL-PEER-FDB-MISSING": ("critical", "flannel"),
    "CONNTRACK-STALE-DNS": ("error", "conntrack"),
}

# Check -> the finding IDs it can report (a JUnit test case per ID per node). Also the order fixes run in.
CHECKS = {
    "kernel": ("KMOD-BR-NETFILTER-MISSING", "SYSCTL-BRIDGE-NF-CALL-IPTABLES-OFF", "SYSCTL-BRIDGE-NF-CALL-IP6TABLES-OFF",
               "SYSCTL-IP-FORWARD-OFF", "SYSCTL-IPV6-FORWARDING-OFF", "SYSCTL-VALUE-DRIFT", "SYSCTL-NOT-PERSISTED"),
    "firewall": ("FIREWALLD-BLOCKING", "FIREWALLD-RUNNING"),
    "forward": ("FORWARD-POLICY-DROP",),
    "masquerade": ("MASQUERADE-MISSING",),
    "flannel": ("FLANNEL-SUBNET-ENV-MISMATCH", "CNI0-ADDRESS-MISMATCH", "FLANNEL-VXLAN-MISSING", "FLANNEL-VXLAN-MTU",
                "FLANNEL-VXLAN-VNI", "FLANNEL-VXLAN-PORT", "FLANNEL-PEER-ROUTE-MISSING", "FLANNEL-PEER-NEIGH-MISSING",
                "FLANNEL-PEER-FDB-MISSING"),
    "kube-proxy": ("DNAT-STALE-POD-IP", "DNAT-STALE-HOST-IP"),
    "kube-proxy-mode": ("KUBE-PROXY-MODE-LEFTOVERS",),
    "node-dns": ("RESOLV-NAMESERVER-DEAD",),
    "coredns": ("COREDNS-LOOPBACK-UPSTREAM",),
    "pod-dns": ("POD-RESOLV-NO-CLUSTER-DNS", "HOSTNET-POD-DNS-POLICY"),
    "conntrack": ("CONNTRACK-STALE-DNS",),
}

SYSCTL_IDS = {
    "net.bridge.bridge-nf-call-iptables": "SYSCTL-BRIDGE-NF-CALL-IPTABLES-OFF",
    "net.bridge.bridge-nf-call-ip6tables": "SYSCTL-BRIDGE-NF-CALL-IP6TABLES-OFF",
    "net.ipv4.ip_forward": "SYSCTL-IP-FORWARD-OFF",
    "net.ipv4.conf.all.forwarding": "SYSCTL-IP-FORWARD-OFF",
    "net.ipv6.conf.all.forwarding": "SYSCTL-IPV6-FORWARDING-OFF",
}
FIREWALL_MODES = ("configured", "disabled", "unmanaged")
FORWARD_MODES = ("accept_pod_cidr", "policy_accept")
BACKENDS = ("vxlan", "host-gw")
PROTOCOLS = ("TCP", "UDP", "SCTP")
DNS_PORT = 53
EVIDENCE_ITEMS = 5  # per kube-proxy mode in KUBE-PROXY-MODE-LEFTOVERS
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_DNAT = re.compile(r"(?:^|\s)--to-destination\s+(\S+)")


class WantError(ProblemsError):
    """The desired state handed to the node is not usable; every bad field is named."""


@dataclass
class Action:
    """One change that fixes (part of) a finding. kind: proc (write a /proc/sys file), file (back up and
    replace a file), iptables (iptables-restore --noflush of payload; ip6tables-restore for family ipv6),
    ip / bridge (batch commands), command (argv lists), firewalld (firewall-cmd argument lists plus the
    owned record)."""

    finding: str
    kind: str
    target: str
    payload: object
    before: str = ""
    after: str = ""
    mode: int = 0o644
    family: str = "ipv4"
    label: str = ""  # what the diff headers name, when not the target

    def describe(self):
        if self.kind == "proc":
            return f"{self.finding}: write {self.payload} to {self.target}"
        if self.kind == "file":
            return f"{self.finding}: rewrite {self.target} (backed up)"
        if self.kind == "iptables":
            tool = "ip6tables-restore" if self.family == "ipv6" else "iptables-restore"
            return f"{self.finding}: {tool} --noflush into the {self.target} table"
        if self.kind in ("ip", "bridge"):
            return f"{self.finding}: {self.kind} " + "; ".join(self.payload)
        if self.kind == "firewalld":
            return (f"{self.finding}: firewall-cmd, runtime and permanent: add "
                    + ", ".join(self.payload.get("missing", ())))
        return f"{self.finding}: " + "; ".join(" ".join(a) for a in self.payload)

    def diff(self):
        name = self.label or self.target
        return {"before_header": f"{name} (before)", "after_header": f"{name} (after)",
                "before": self.before, "after": self.after}


@dataclass
class Result:
    findings: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    checks: list = field(default_factory=list)  # the finding IDs this node was checked for
    skipped: list = field(default_factory=list)  # (check, why)


class _Audit:
    def __init__(self, want, state):
        self.want, self.state, self.result = want, state, Result()

    def find(self, fid, summary, expected, actual, fix, evidence=(), actions=()):  # noqa: PLR0913, PLR0917
        severity, component = CATALOG[fid]
        self.result.findings.append(Finding(fid, severity, self.want["node"], component, summary, expected, actual,
                                            fix, tuple(str(e) for e in evidence)))
        self.result.actions.extend(actions)

    def skip(self, check, why):
        self.result.skipped.append((check, why))


# --- the want ---------------------------------------------------------------------------------------

def _net(problems, name, value, strict=True):
    try:
        if "/" not in str(value):
            raise ValueError(value)
        return ipaddress.ip_network(str(value), strict=strict)
    except ValueError:
        problems.append((name, f"{value!r} is not a network in CIDR form such as 10.244.0.0/16"))
        return None


def _ip(problems, name, value):
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        problems.append((name, f"{value!r} is not an IP address such as 198.51.100.11"))
        return None


def _endpoint(problems, name, value):
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or _ip([], name, host) is None:  # noqa: PLR2004
        problems.append((name, f"{value!r} is not an endpoint ip:port such as 10.244.1.5:8080"))


def _choice(problems, name, value, choices):
    if value not in choices:
        problems.append((name, f"{value!r} is not one of {', '.join(choices)}"))


def check_want(want):
    """Validate the desired state (the module's `want` option); raises WantError naming every bad field."""
    p = []
    if not isinstance(want, dict):
        raise WantError([("want", "must be a mapping")])
    for key in ("node", "address", "pod_cidr", "service_cidr", "cluster_dns", "cluster_domain"):
        if not want.get(key):
            p.append((f"want.{key}", "is required"))
    if p:
        raise WantError(p)
    _ip(p, "want.address", want["address"])
    _net(p, "want.pod_cidr", want["pod_cidr"])
    _net(p, "want.service_cidr", want["service_cidr"])
    _ip(p, "want.cluster_dns", want["cluster_dns"])
    try:
        sysctl.check_settings(want.get("sysctls") or {"net.ipv4.ip_forward": 1})
    except ProblemsError as exc:
        p += [(f"want.sysctls.{k}", m) for k, m in exc.problems]
    _check_want_parts(p, want)
    if p:
        raise WantError(p)
    return want


def _check_want_parts(p, want):
    fw = want.get("firewall") or {}
    _choice(p, "want.firewall.mode", fw.get("mode", "unmanaged"), FIREWALL_MODES)
    if fw.get("mode") == "configured":
        try:
            firewalld.check_want({**fw, "zone": fw.get("zone") or "public"})
        except ProblemsError as exc:
            p += [(f"want.firewall.{k}", m) for k, m in exc.problems]
    _choice(p, "want.forward.mode", (want.get("forward") or {}).get("mode", "accept_pod_cidr"), FORWARD_MODES)
    if (want.get("kube_proxy") or {}).get("mode") is not None:
        _choice(p, "want.kube_proxy.mode", want["kube_proxy"]["mode"], PROXY_MODES)
    fl = want.get("flannel") or {}
    if fl:
        _choice(p, "want.flannel.backend", fl.get("backend"), BACKENDS)
        for key, low, high in (("vni", 1, 16777215), ("port", 1, 65535), ("mtu", 576, 65535)):
            if not isinstance(fl.get(key), int) or isinstance(fl.get(key), bool) or not low <= fl[key] <= high:
                p.append((f"want.flannel.{key}", f"{fl.get(key)!r} is not an integer from {low} to {high}"))
    for i, lease in enumerate(want.get("leases") or []):
        where = f"want.leases[{i}]"
        if not isinstance(lease, dict) or not lease.get("node"):
            p.append((where, "is not a lease {node, subnet, public_ip, vtep_mac}"))
            continue
        _net(p, f"{where}.subnet", lease.get("subnet"))
        _ip(p, f"{where}.public_ip", lease.get("public_ip"))
        if lease.get("vtep_mac") and not _MAC.match(str(lease["vtep_mac"]).lower()):
            p.append((f"{where}.vtep_mac", f"{lease['vtep_mac']!r} is not a MAC address such as 0a:58:0a:f4:01:01"))
    _check_services(p, want.get("services") or [])
    dns = want.get("dns") or {}
    for i, ns in enumerate(dns.get("node_nameservers") or []):
        _ip(p, f"want.dns.node_nameservers[{i}]", ns)
    for i, pod in enumerate(dns.get("pods") or []):
        if not isinstance(pod, dict) or not pod.get("name") or not str(pod.get("path", "")).startswith("/"):
            p.append((f"want.dns.pods[{i}]", "is not a pod {name, namespace, host_network, path (absolute)}"))


def _check_services(p, services):
    for i, svc in enumerate(services):
        where = f"want.services[{i}]"
        if not isinstance(svc, dict):
            p.append((where, "is not a service port {namespace, name, port_name, protocol, cluster_ip, port, "
                             "endpoints}"))
            continue
        for key in ("namespace", "name"):
            if not svc.get(key):
                p.append((f"{where}.{key}", "is required"))
        _choice(p, f"{where}.protocol", svc.get("protocol"), PROTOCOLS)
        _ip(p, f"{where}.cluster_ip", svc.get("cluster_ip"))
        if not isinstance(svc.get("port"), int) or not 0 < svc["port"] < 65536:  # noqa: PLR2004
            p.append((f"{where}.port", f"{svc.get('port')!r} is not a port number"))
        for j, ep in enumerate(svc.get("endpoints") or []):
            _endpoint(p, f"{where}.endpoints[{j}]", ep)


# --- kernel -----------------------------------------------------------------------------------------

def _check_kernel(a):
    want, state = a.want, a.state
    wanted = sysctl.check_settings(want["sysctls"]) if want.get("sysctls") else {}
    if not state.get("bridge_nf_present", True):
        a.find("KMOD-BR-NETFILTER-MISSING", "br_netfilter is not loaded: bridged pod traffic skips iptables",
               "/proc/sys/net/bridge present (br_netfilter loaded)", "/proc/sys/net/bridge is missing",
               "modprobe br_netfilter and persist it in " + want.get("modules_file", "modules-load.d"),
               actions=[Action("KMOD-BR-NETFILTER-MISSING", "command", "br_netfilter", [["modprobe", "br_netfilter"]]),
                        *_modules_file_action(a)])
    live, by_id = state.get("proc", {}), {}
    for key, value in sorted(wanted.items()):
        have = live.get(key)
        if have is None and key.startswith("net.bridge.") and not state.get("bridge_nf_present", True):
            continue  # the keys come with br_netfilter: KMOD-BR-NETFILTER-MISSING is the one finding
        if have is None or not sysctl.same_value(have, value):
            by_id.setdefault(SYSCTL_IDS.get(key, "SYSCTL-VALUE-DRIFT"), []).append((key, value, have))
    for fid, keys in by_id.items():
        actions = [Action(fid, "proc", sysctl.proc_path(k), v, before=f"{k} = {h}\n", after=f"{k} = {v}\n")
                   for k, v, h in keys if h is not None]
        a.find(fid, "kernel parameter " + ", ".join(k for k, _, _ in keys) + " is not as Kubernetes needs it",
               ", ".join(f"{k} = {v}" for k, v, _ in keys),
               ", ".join(f"{k} = {h if h is not None else '(absent)'}" for k, _, h in keys),
               "set it live; the boot value comes from " + want.get("sysctl_file", sysctl.DEFAULT_PATH),
               [f"/proc/sys: {k} = {h}" for k, _, h in keys], actions)
    files = dict(state.get("sysctl_files") or {})
    path = want.get("sysctl_file") or sysctl.DEFAULT_PATH
    boot = sysctl.effective(files)
    wrong = {k: v for k, v in wanted.items() if k not in boot or not sysctl.same_value(boot[k][0], v)}
    if wrong and state.get("sysctl_files") is not None:
        ours = sysctl.render(wanted)
        after_files = {**files, path: ours}
        later = sysctl.conflicts(path, wanted, after_files)
        actions = [] if later else [Action("SYSCTL-NOT-PERSISTED", "file", path, ours, files.get(path, ""), ours)]
        fix = (f"rewrite netmend's {path}" if not later else
               "the host's own file(s) " + ", ".join(sorted({c['path'] for c in later})) + " set another value "
               "after netmend's file: change them (netmend never edits the host's sysctl files)")
        a.find("SYSCTL-NOT-PERSISTED", "a reboot would bring back the wrong kernel parameters",
               ", ".join(f"{k} = {v} at boot" for k, v in sorted(wrong.items())),
               ", ".join(f"{k} = {boot[k][0]} ({boot[k][1]})" if k in boot else f"{k} unset" for k in sorted(wrong)),
               fix, [f"{c['path']}: {c['key']} = {c['value']}" for c in later], actions)


def _modules_file_action(a):
    path, text = a.want.get("modules_file"), a.want.get("modules_text")
    if not path or not text or a.state.get("modules_file") == text:
        return []
    return [Action("KMOD-BR-NETFILTER-MISSING", "file", path, text, a.state.get("modules_file") or "", text)]


# --- firewalld --------------------------------------------------------------------------------------

def _check_firewall(a):
    fw, st = a.want.get("firewall") or {}, a.state.get("firewalld")
    mode = fw.get("mode", "unmanaged")
    if mode == "unmanaged":
        return
    if st is None:
        a.skip("firewall", "firewalld is not installed")
        return
    if mode == "disabled":
        if st.get("running"):
            a.find("FIREWALLD-RUNNING", "firewalld is running although firewall_mode is disabled",
                   "firewalld stopped", "firewalld running", "stop firewalld",
                   actions=[Action("FIREWALLD-RUNNING", "command", "firewalld", [["@service", "firewalld", "stop"]])])
        return
    if not st.get("running"):
        return  # a stopped firewalld blocks nothing
    zone = fw.get("zone") or st.get("default_zone") or "public"
    want_z = firewalld.check_want({**fw, "zone": zone})
    absent = [z for z in want_z if z not in st.get("zones", {})]
    if absent:
        a.skip("firewall", f"firewalld has no zone {', '.join(absent)}")
        return
    lacking = firewalld.missing(want_z, st["zones"])
    changes = [c for c in firewalld.plan(want_z, st["zones"], {})[0] if c[1] != "remove"]
    if lacking:
        a.find("FIREWALLD-BLOCKING", f"firewalld is running and zone {zone} lacks what the node needs",
               "the node's ports open, cni0/flannel.1 and the pod and service CIDRs trusted, masquerade on",
               f"{len(lacking)} missing: " + ", ".join(lacking[:8]) + (" ..." if len(lacking) > 8 else ""),  # noqa: PLR2004
               "add exactly what is missing, runtime and permanent (no reload)", lacking,
               [Action("FIREWALLD-BLOCKING", "firewalld", "firewalld",
                       {"want": want_z, "state_file": fw.get("state_file"), "missing": lacking},
                       "".join(firewalld.render(st["zones"][z]) for z in want_z),
                       "".join(firewalld.render(firewalld.apply_changes(st["zones"][z], changes)) for z in want_z))])


# --- iptables ---------------------------------------------------------------------------------------

def _reachable(table, start, limit=64):
    """The rules of `start` and of every chain it jumps to, transitively (bounded)."""
    seen, todo, rules = set(), [start], []
    while todo and len(seen) < limit:
        chain = todo.pop(0)
        if chain in seen:
            continue
        seen.add(chain)
        for line in table.chain_rules(chain):
            rules.append(line)
            target = rule_target(line)
            if target in table.policies and target not in seen:
                todo.append(target)
    return rules


def _check_forward(a):
    tables = a.state.get("iptables")
    if tables is None:
        a.skip("forward", a.state.get("iptables_error", "iptables-save is not available"))
        return
    filt = tables.get("filter")
    policy = filt.policies.get("FORWARD", "ACCEPT") if filt else "ACCEPT"
    if policy == "ACCEPT":
        return
    cidr = a.want["pod_cidr"]
    rules = _reachable(filt, "FORWARD")
    accepts = [r for r in rules if rule_target(r) == "ACCEPT"]
    if any(_matches(r, "-s", cidr) for r in accepts) and any(_matches(r, "-d", cidr) for r in accepts):
        return
    fwd = a.want.get("forward") or {}
    chain = fwd.get("chain") or FORWARD_CHAIN
    before = "".join(f"{r}\n" for r in [f":FORWARD {policy}", *filt.chain_rules("FORWARD")])
    if fwd.get("mode") == "policy_accept":
        action = Action("FORWARD-POLICY-DROP", "command", "filter",
                        [["iptables", "-w", "5", "-P", "FORWARD", "ACCEPT"]], before, ":FORWARD ACCEPT\n")
    else:
        chain_rules, jump = forward_accept_rules(chain, cidr)
        payload = restore_payload("filter", {chain: chain_rules}, [jump], filt)
        action = Action("FORWARD-POLICY-DROP", "iptables", "filter", payload, before, payload)
    a.find("FORWARD-POLICY-DROP", f"the FORWARD policy is {policy} and nothing accepts the pod CIDR {cidr}",
           f"pod CIDR {cidr} accepted in FORWARD ({chain})", f"policy {policy}, no accept rule for {cidr}",
           "add netmend's accept chain" if fwd.get("mode") != "policy_accept" else "set the FORWARD policy to ACCEPT",
           [f"iptables -S FORWARD: -P FORWARD {policy}", *filt.chain_rules("FORWARD")[:10]], [action])


def _matches(rule, flag, value):
    """Whether the rule has `flag value` not negated (`-s 10.244.0.0/16`, not `! -s 10.244.0.0/16`)."""
    words = rule.split()
    return any(words[i] == flag and words[i + 1] == value and (i == 0 or words[i - 1] != "!")
               for i in range(len(words) - 1))


def _check_masquerade(a):
    fl = a.want.get("flannel") or {}
    lease = _own_lease(a.want)
    tables = a.state.get("iptables")
    if not fl.get("ip_masq", True) or tables is None or lease is None:
        if tables is None:
            a.skip("masquerade", a.state.get("iptables_error", "iptables-save is not available"))
        return
    nat = tables.get("nat")
    cidr = a.want["pod_cidr"]
    rules = _reachable(nat, "POSTROUTING") if nat else []
    if any(_matches(r, "-s", cidr) and not _matches(r, "-d", cidr) and rule_target(r) == "MASQUERADE"
           for r in rules):
        return
    chain_rules = flannel.masquerade_rules(cidr, lease["subnet"])
    payload = restore_payload("nat", {flannel.MASQ_CHAIN: chain_rules}, [flannel.MASQ_JUMP], nat)
    before = "".join(f"{r}\n" for r in (nat.chain_rules("POSTROUTING") + nat.chain_rules(flannel.MASQ_CHAIN)
                                        if nat else []))
    a.find("MASQUERADE-MISSING", f"nothing masquerades traffic from the pod CIDR {cidr} to the outside",
           f"a MASQUERADE rule for -s {cidr} reachable from nat POSTROUTING (flannel's {flannel.MASQ_CHAIN})",
           "none", f"restore flannel's {flannel.MASQ_CHAIN} chain and its POSTROUTING jump",
           ["iptables -t nat -S POSTROUTING: " + " | ".join(nat.chain_rules("POSTROUTING")) if nat else "no nat table"],
           [Action("MASQUERADE-MISSING", "iptables", "nat", payload, before, payload)])


def _dnat_target(rules):
    for line in rules:
        match = _DNAT.search(line)
        if match:
            return match.group(1)
    return None


def _check_dnat(a):
    tables = a.state.get("iptables")
    if tables is None:
        a.skip("kube-proxy", a.state.get("iptables_error", "iptables-save is not available"))
        return
    nat = tables.get("nat")
    if nat is None:
        return
    pod_net = ipaddress.ip_network(a.want["pod_cidr"])
    for svc in a.want.get("services") or []:
        chain = kubeproxy.service_chain(svc["namespace"], svc["name"], svc.get("port_name", ""), svc["protocol"])
        if chain not in nat.policies or not svc.get("endpoints"):
            continue
        jumps = [r for r in nat.chain_rules(chain) if (rule_target(r) or "").startswith("KUBE-SEP-")]
        current = {rule_target(r): _dnat_target(nat.chain_rules(rule_target(r))) for r in jumps}
        wanted = list(svc["endpoints"])
        stale = {sep: dest for sep, dest in current.items() if dest is not None and dest not in wanted}
        if not stale:
            continue
        payload, before = _dnat_rewrite(nat, svc, chain, jumps, current, stale)
        spn = kubeproxy.service_port_name(svc["namespace"], svc["name"], svc.get("port_name", ""))
        by_kind = {}
        for sep, dest in sorted(stale.items()):
            host = ipaddress.ip_address(dest.rpartition(":")[0])
            by_kind.setdefault("DNAT-STALE-POD-IP" if host in pod_net else "DNAT-STALE-HOST-IP", []).append((sep, dest))
        action_done = False
        for fid, items in sorted(by_kind.items()):
            what = "a pod IP that no longer serves it" if fid == "DNAT-STALE-POD-IP" else "an old host IP"
            a.find(fid, f"service {spn} ({svc['cluster_ip']}:{svc['port']}) DNATs to {what}",
                   "endpoints " + ", ".join(wanted), "DNAT to " + ", ".join(d for _, d in items),
                   f"rewrite the stale KUBE-SEP chains of {chain} and its jumps (one iptables-restore --noflush)",
                   [f"{sep}: DNAT --to-destination {dest}" for sep, dest in items],
                   [] if action_done else [Action(fid, "iptables", "nat", payload, before, payload)])
            action_done = True


def _dnat_rewrite(nat, svc, chain, jumps, current, stale):  # noqa: PLR0913, PLR0917
    """One --noflush transaction: the service chain's other rules kept in place, its endpoint jumps
    rewritten for the wanted endpoints, new KUBE-SEP chains made from a stale one's rules, stale ones deleted."""
    ns, name, port_name, proto = svc["namespace"], svc["name"], svc.get("port_name", ""), svc["protocol"]
    wanted = list(svc["endpoints"])
    by_dest = {dest: sep for sep, dest in current.items() if sep not in stale}
    template_sep = sorted(stale)[0]
    template_dest = stale[template_sep]
    sep_chains, new_seps = {}, []
    for dest in wanted:
        sep = by_dest.get(dest) or kubeproxy.endpoint_chain(ns, name, port_name, proto, dest)
        new_seps.append(sep)
        if sep not in by_dest.values():
            sep_chains[sep] = [_retarget(line, template_sep, sep, template_dest, dest)
                               for line in nat.chain_rules(template_sep)]
    jump_template = jumps[-1]
    svc_rules, placed = [], False
    for line in nat.chain_rules(chain):
        if line in jumps:
            if not placed:
                svc_rules += _jumps(jump_template, current[rule_target(jump_template)], wanted, new_seps)
                placed = True
            continue
        svc_rules.append(line)
    doomed = sorted(s for s in stale if s not in new_seps)
    chains = {chain: svc_rules, **sep_chains}
    payload = restore_payload("nat", chains, delete=doomed)
    before = "".join(f"{r}\n" for c in [chain, *sorted(current)] for r in nat.chain_rules(c))
    return payload, before


def _retarget(line, old_chain, new_chain, old_dest, new_dest):
    old_ip, new_ip = old_dest.rpartition(":")[0], new_dest.rpartition(":")[0]
    line = line.replace(f"-A {old_chain} ", f"-A {new_chain} ", 1).replace(old_dest, new_dest)
    return line.replace(f"-s {old_ip}/32", f"-s {new_ip}/32")


_STATISTIC = re.compile(r" -m statistic --mode random --probability \S+")


def _jumps(template, template_dest, wanted, seps):
    base = _STATISTIC.sub("", template)
    head, _, _ = base.rpartition(" -j ")
    out = []
    for i, (dest, sep) in enumerate(zip(wanted, seps, strict=True)):
        p = kubeproxy.probability(i, len(wanted))
        stat = f" -m statistic --mode random --probability {p}" if p else ""
        out.append(f"{head.replace(template_dest, dest) if template_dest else head}{stat} -j {sep}")
    return out


# --- DNS --------------------------------------------------------------------------------------------

def _check_node_dns(a):
    res = a.state.get("resolv") or {}
    text = res.get("text")
    if text is None:
        a.skip("node-dns", "/etc/resolv.conf does not exist")
        return
    try:
        conf = resolvconf.parse(text, "/etc/resolv.conf")
    except resolvconf.ResolvConfError as exc:
        a.skip("node-dns", str(exc))
        return
    alive = a.state.get("alive") or {}
    dead = [ns.address for ns in conf.nameservers if alive.get(ns.address) is False]
    if not dead:
        return
    live = [ns.address for ns in conf.nameservers if ns.address not in dead]
    spare = [s for s in (a.want.get("dns") or {}).get("node_nameservers") or [] if s not in dead]
    new = _drop_nameservers(text, dead, [] if live else spare)
    actions, fix = [], f"remove the dead nameserver(s) {', '.join(dead)} from /etc/resolv.conf (backed up)"
    if res.get("link"):
        fix = (f"/etc/resolv.conf is a symlink to {res['link']}: fix the program that writes it "
               "(DHCP client, NetworkManager, systemd-resolved); netmend does not rewrite it")
    elif not live and not spare:
        fix = "no nameserver answers: set dns_node_nameservers so netmend can write working ones"
    else:
        actions = [Action("RESOLV-NAMESERVER-DEAD", "file", "/etc/resolv.conf", new, text, new)]
        if not live:
            fix += f", using dns_node_nameservers {', '.join(spare)}"
    a.find("RESOLV-NAMESERVER-DEAD", "the node's resolv.conf names nameservers that do not answer",
           "every nameserver answers DNS", "no answer from " + ", ".join(dead), fix,
           [f"no DNS answer from {d}:53 within the timeout" for d in dead], actions)


def _drop_nameservers(text, dead, replacement):
    out, placed = [], False
    for line in text.splitlines(keepends=True):
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver" and words[1] in dead:  # noqa: PLR2004
            if replacement and not placed:
                out += [f"nameserver {s}\n" for s in replacement]
                placed = True
            continue
        out.append(line)
    return "".join(out)


def _check_coredns(a):
    dns = a.want.get("dns") or {}
    path, wanted = dns.get("corefile_path"), dns.get("corefile")
    text = a.state.get("corefile")
    if not path or text is None:
        return
    try:
        loops = loopback_upstreams(text, a.state.get("corefile_resolv") or {}, path)
    except CorefileError as exc:
        a.skip("coredns", str(exc))
        return
    if not loops:
        return
    actions = [Action("COREDNS-LOOPBACK-UPSTREAM", "file", path, wanted, text, wanted)] if wanted else []
    a.find("COREDNS-LOOPBACK-UPSTREAM", "the cluster DNS forwards to a loopback address: CoreDNS queries itself",
           "upstreams outside the pod (explicit servers or a resolv.conf without loopback nameservers)",
           ", ".join(f"{lp['address']}:{lp['port']}" + (f" via {lp['via']}" if lp["via"] else "") for lp in loops),
           f"rewrite {path} as the dns role renders it" if wanted else "set dns_upstreams or the kubelet's resolvConf",
           [f"{path} line {lp['line']}: forward {lp['from']} {lp['target']} reaches {lp['reaches']}" for lp in loops],
           actions)


def _check_pod_dns(a):
    want, dns = a.want, a.want.get("dns") or {}
    search = []
    try:
        if (a.state.get("resolv") or {}).get("text"):
            search = list(resolvconf.parse(a.state["resolv"]["text"]).search)
    except resolvconf.ResolvConfError:
        search = []
    for pod in dns.get("pods") or []:
        text = (a.state.get("pod_resolv") or {}).get(pod["path"])
        if text is None:
            continue  # the pod does not run here
        try:
            servers = [ns.address for ns in resolvconf.parse(text, pod["path"]).nameservers]
        except resolvconf.ResolvConfError as exc:
            servers = [f"unreadable: {exc}"]
        if servers == [want["cluster_dns"]]:
            continue
        expected = resolvconf.pod_resolv_conf(want["cluster_dns"], pod.get("namespace", "default"),
                                              want["cluster_domain"], search)
        fid = "HOSTNET-POD-DNS-POLICY" if pod.get("host_network") else "POD-RESOLV-NO-CLUSTER-DNS"
        why = ("hostNetwork pod without dnsPolicy ClusterFirstWithHostNet: it gets the host's resolv.conf"
               if pod.get("host_network") else "the pod's resolv.conf does not name the cluster DNS")
        a.find(fid, f"pod {pod['name']}: {why}", f"nameserver {want['cluster_dns']} (kube-dns)",
               "nameserver " + ", ".join(servers or ["(none)"]),
               f"rewrite {pod['path']} as the kubelet writes it for ClusterFirst"
               + ("; set dnsPolicy: ClusterFirstWithHostNet in the pod spec" if pod.get("host_network") else ""),
               [f"{pod['path']}: " + " | ".join(text.splitlines()[:4])],
               [Action(fid, "file", pod["path"], expected, text, expected)])


# --- flannel ----------------------------------------------------------------------------------------

def _own_lease(want):
    return next((lease for lease in want.get("leases") or [] if lease["node"] == want["node"]), None)


def _check_flannel(a):
    want, fl = a.want, a.want.get("flannel") or {}
    lease = _own_lease(want)
    if not fl or lease is None:
        a.skip("flannel", "no flannel settings or no lease for this node")
        return
    subnet = ipaddress.ip_network(lease["subnet"])
    gateway = f"{subnet.network_address + 1}/{subnet.prefixlen}"
    _check_subnet_env(a, fl, gateway)
    _check_cni0(a, fl, gateway)
    recreate = _check_vxlan(a, fl, lease) if fl["backend"] == "vxlan" else False
    _check_peers(a, fl, lease, recreate)


def _check_subnet_env(a, fl, gateway):
    text = a.state.get("subnet_env")
    wanted = flannel.render_subnet_env(a.want["pod_cidr"], gateway, fl["mtu"], fl.get("ip_masq", True))
    if text is None:
        return  # flanneld has not started yet: nothing reads a file it never wrote
    try:
        env = flannel.parse_subnet_env(text)
        diffs = [f"{k}={have} (lease: {w})" for k, have, w in (
            ("FLANNEL_NETWORK", env["network"], a.want["pod_cidr"]),
            ("FLANNEL_SUBNET", f"{env['gateway']}/{env['subnet'].split('/')[1]}", gateway),
            ("FLANNEL_MTU", env["mtu"], fl["mtu"])) if str(have) != str(w)]
    except ProblemsError as exc:
        diffs = [f"unreadable: {exc}"]
    if diffs:
        a.find("FLANNEL-SUBNET-ENV-MISMATCH", "/run/flannel/subnet.env disagrees with the node's lease",
               f"FLANNEL_SUBNET={gateway}, FLANNEL_MTU={fl['mtu']}", "; ".join(diffs),
               "rewrite /run/flannel/subnet.env from the lease (backed up)", diffs,
               [Action("FLANNEL-SUBNET-ENV-MISMATCH", "file", flannel.SUBNET_ENV_PATH, wanted, text, wanted)])


def _check_cni0(a, fl, gateway):
    bridge = fl.get("bridge", "cni0")
    links = {link.name for link in a.state.get("links") or []}
    if bridge not in links:
        return  # the CNI plugin creates it with the first pod
    have = [ad.cidr for ad in a.state.get("addrs") or [] if ad.ifname == bridge and ad.family == "inet"]
    if have == [gateway]:
        return
    wrong = [c for c in have if c != gateway]
    cmds = [f"addr del {c} dev {bridge}" for c in wrong] + ([] if gateway in have else
                                                            [f"addr add {gateway} dev {bridge}"])
    a.find("CNI0-ADDRESS-MISMATCH", f"{bridge} already has an IP address different from {gateway}",
           f"{bridge} {gateway} (the .1 of the node's lease)", f"{bridge} " + (", ".join(have) or "no address"),
           f"re-address {bridge}", [f"ip addr show {bridge}: " + ", ".join(have)],
           [Action("CNI0-ADDRESS-MISMATCH", "ip", bridge, cmds, "".join(f"{c}\n" for c in have), f"{gateway}\n")])


def _check_vxlan(a, fl, lease):
    """flannel.1's VNI, port and MTU; True when the device is (re)created (its peer entries go with it)."""
    dev = fl.get("device", "flannel.1")
    link = next((lk for lk in a.state.get("links") or [] if lk.name == dev), None)
    vtep = f"{ipaddress.ip_network(lease['subnet']).network_address}/32"
    mac = lease.get("vtep_mac") or (link.address if link else None)
    underlay = (link.vxlan.dev if link and link.vxlan and link.vxlan.dev else
                next((ad.ifname for ad in a.state.get("addrs") or [] if ad.local == a.want["address"]), "eth0"))
    create = [f"link add {dev}" + (f" address {mac}" if mac else "")
              + f" type vxlan id {fl['vni']} local {a.want['address']} dev {underlay} dstport {fl['port']} nolearning",
              f"link set {dev} mtu {fl['mtu']}", f"addr add {vtep} dev {dev}", f"link set {dev} up"]
    if link is None or link.vxlan is None:
        a.find("FLANNEL-VXLAN-MISSING", f"{dev} does not exist: no VXLAN to the other nodes",
               f"{dev} vxlan id {fl['vni']} dstport {fl['port']}", "absent", f"create {dev} with the lease's VtepMAC",
               [f"ip -d link show {dev}: absent"],
               [Action("FLANNEL-VXLAN-MISSING", "ip", dev, create, "", _lines(create))])
        return True
    wrong = []
    if link.vxlan.id != fl["vni"]:
        wrong.append(("FLANNEL-VXLAN-VNI", f"VNI {link.vxlan.id}", f"VNI {fl['vni']}"))
    if link.vxlan.port is not None and link.vxlan.port != fl["port"]:
        wrong.append(("FLANNEL-VXLAN-PORT", f"dstport {link.vxlan.port}", f"dstport {fl['port']}"))
    before = f"{dev}: vxlan id {link.vxlan.id} dstport {link.vxlan.port} mtu {link.mtu} address {link.address}\n"
    recreate = [f"link del {dev}", *create]
    for i, (fid, have, need) in enumerate(wrong):
        a.find(fid, f"{dev} has {have}; the other nodes use {need}", need, have,
               f"recreate {dev} with the same MAC and re-add its peer entries", [before.strip()],
               [Action(fid, "ip", dev, recreate, before, _lines(recreate))] if i == 0 else [])
    if not wrong and link.mtu != fl["mtu"]:
        cmd = [f"link set {dev} mtu {fl['mtu']}"]
        a.find("FLANNEL-VXLAN-MTU", f"{dev} MTU {link.mtu} does not fit the underlay (want {fl['mtu']})",
               f"mtu {fl['mtu']}", f"mtu {link.mtu}", f"ip link set {dev} mtu {fl['mtu']}", [before.strip()],
               [Action("FLANNEL-VXLAN-MTU", "ip", dev, cmd, before, _lines(cmd))])
    return bool(wrong)


def _lines(cmds):
    return "".join(f"{c}\n" for c in cmds)


def _check_peers(a, fl, lease, recreated):
    dev = fl.get("device", "flannel.1")
    routes, neighs, fdbs = a.state.get("routes") or [], a.state.get("neighs") or [], a.state.get("fdb") or []
    missing = {"FLANNEL-PEER-ROUTE-MISSING": [], "FLANNEL-PEER-NEIGH-MISSING": [], "FLANNEL-PEER-FDB-MISSING": []}
    fixes = {k: [] for k in missing}
    for peer in a.want.get("leases") or []:
        if peer is lease:
            continue
        if fl["backend"] == "host-gw":
            ok = any(r.dst == peer["subnet"] and r.gateway == peer["public_ip"] for r in routes)
            if not ok or recreated:
                missing["FLANNEL-PEER-ROUTE-MISSING"].append(f"{peer['subnet']} via {peer['public_ip']}")
                fixes["FLANNEL-PEER-ROUTE-MISSING"].append(f"route replace {peer['subnet']} via {peer['public_ip']}")
            continue
        vtep = str(ipaddress.ip_network(peer["subnet"]).network_address)
        mac = (peer.get("vtep_mac") or "").lower()
        route_ok = any(r.dst == peer["subnet"] and r.gateway == vtep and r.dev == dev for r in routes)
        if recreated or not route_ok:
            missing["FLANNEL-PEER-ROUTE-MISSING"].append(f"{peer['subnet']} via {vtep} dev {dev} onlink")
            fixes["FLANNEL-PEER-ROUTE-MISSING"].append(f"route replace {peer['subnet']} via {vtep} dev {dev} onlink")
        if not mac:
            continue  # no VtepMAC in the lease (kube subnet manager without the API): routes only
        neigh_ok = any(n.dst == vtep and n.dev == dev and (n.lladdr or "").lower() == mac for n in neighs)
        if recreated or not neigh_ok:
            missing["FLANNEL-PEER-NEIGH-MISSING"].append(f"{vtep} lladdr {mac}")
            fixes["FLANNEL-PEER-NEIGH-MISSING"].append(f"neigh replace {vtep} lladdr {mac} dev {dev} nud permanent")
        fdb_ok = any(f.mac.lower() == mac and f.dev == dev and f.dst == peer["public_ip"] for f in fdbs)
        if recreated or not fdb_ok:
            missing["FLANNEL-PEER-FDB-MISSING"].append(f"{mac} dst {peer['public_ip']}")
            fixes["FLANNEL-PEER-FDB-MISSING"].append(
                f"fdb replace {mac} dev {dev} dst {peer['public_ip']} self permanent")
    for fid, items in missing.items():
        if not items:
            continue
        kind = "bridge" if fid == "FLANNEL-PEER-FDB-MISSING" else "ip"
        action = Action(fid, kind, dev, fixes[fid], "", _lines(fixes[fid]))
        if recreated:
            a.result.actions.append(action)  # re-added after the device is recreated; not a finding of its own
            continue
        what = fid.split("-")[2].lower()
        a.find(fid, f"{len(items)} peer {what} entr{'y is' if len(items) == 1 else 'ies are'} missing or wrong",
               "an entry for every other node's lease", "missing: " + "; ".join(items), f"{kind} {fixes[fid][0]} ...",
               items, [action])


# --- conntrack --------------------------------------------------------------------------------------

def _check_conntrack(a):
    flows = a.state.get("conntrack")
    if flows is None:
        a.skip("conntrack", a.state.get("conntrack_error", "conntrack is not installed"))
        return
    dns = [s for s in a.want.get("services") or []
           if s["protocol"] == "UDP" and s["cluster_ip"] == a.want["cluster_dns"] and s.get("endpoints")]
    for svc in dns:
        stale = [f for f in flows if f.protocol == "udp" and f.original.dst == svc["cluster_ip"]
                 and f.original.dport == svc["port"] and f"{f.reply.src}:{f.reply.sport}" not in svc["endpoints"]]
        if not stale:
            continue
        argvs = [["conntrack", "-D", "-p", "udp", "--orig-src", f.original.src, "--orig-dst", f.original.dst,
                  "--orig-port-src", str(f.original.sport), "--orig-port-dst", str(f.original.dport),
                  "--reply-src", f.reply.src] for f in stale]
        evidence = [f"udp src={f.original.src}:{f.original.sport} dst={f.original.dst}:{f.original.dport} "
                    f"reply src={f.reply.src}:{f.reply.sport}" + (" UNREPLIED" if f.unreplied else "") for f in stale]
        a.find("CONNTRACK-STALE-DNS", f"{len(stale)} UDP conntrack entr{'y' if len(stale) == 1 else 'ies'} still send "
               f"DNS for {svc['cluster_ip']} to an endpoint that is gone",
               "replies from " + ", ".join(svc["endpoints"]),
               "replies from " + ", ".join(sorted({f"{f.reply.src}:{f.reply.sport}" for f in stale})),
               "delete exactly those conntrack entries", evidence,
               [Action("CONNTRACK-STALE-DNS", "command", "conntrack", argvs, _lines(evidence), "")])


# --- kube-proxy mode leftovers ---------------------------------------------------------------------

def _check_proxy_mode(a):
    mode = (a.want.get("kube_proxy") or {}).get("mode")
    snap = a.state.get("proxy")
    if mode is None or snap is None:
        why = "no kube-proxy mode configured" if mode is None else "kube-proxy's state was not read"
        a.skip("kube-proxy-mode", why)
        return
    try:
        p = proxymode.plan(snap, mode)
    except ValueError as exc:
        a.skip("kube-proxy-mode", f"cannot plan the cleanup: {exc}")
        return
    others = {m: why for m, why in p.evident.items() if m != mode}
    if not others:
        return
    evidence = [f"{m} mode: {', '.join(why[:EVIDENCE_ITEMS])}{' ...' if len(why) > EVIDENCE_ITEMS else ''}"
                for m, why in sorted(others.items())]
    evidence += [f"kept {what}: {why}" for what, why in p.kept] + p.notes
    old = ", ".join(sorted(others))
    actions = []
    if mode not in p.evident:
        fix = (f"none automatic: the node shows no {mode}-mode state, so kube-proxy may not run in {mode} mode "
               "here (kube_proxy_mode): netmend removes another mode's state only next to a running configured mode")
    elif not p.removes:
        fix = f"none automatic: what is left of {old} mode is still referred to (see the evidence)"
    else:
        actions = _proxy_mode_actions(p, proxymode.view(snap), proxymode.view(snap, p))
        steps = "; ".join(action.describe().split(": ", 1)[1] for action in actions)
        fix = (f"remove exactly what `kube-proxy --cleanup` removes for {old} mode ({steps}); kube-proxy's "
               f"{mode}-mode state and the host's rules stay")
    a.find("KUBE-PROXY-MODE-LEFTOVERS", f"kube-proxy runs in {mode} mode, and the node still holds the state of "
           f"{old} mode", f"only {mode}-mode kube-proxy state", f"{old} mode state as well", fix, evidence, actions)


def _proxy_mode_actions(p, before, after):
    """The cleanup plan as actions, in the order it must run: virtual servers, the dummy link, the chains
    (one --noflush transaction per family), the ipsets once nothing matches them, the nft tables."""
    fid = "KUBE-PROXY-MODE-LEFTOVERS"
    commands = [["ipvsadm", *vs.ipvsadm_delete()] for vs in p.virtual_servers]
    commands += [["ip", "link", "delete", p.link]] if p.link else []
    actions = [Action(fid, "command", "ipvs", commands)] if commands else []
    for family in proxymode.FAMILIES:
        if family in p.payloads:
            tables = ", ".join(sorted(p.chains.get(family, {})))
            actions.append(Action(fid, "iptables", tables, p.payloads[family], family=family))
    late = [["ipset", "destroy", name] for name in p.ipsets]
    late += [["nft", "delete", "table", family, name] for family, name in p.nft_tables]
    if late:
        actions.append(Action(fid, "command", "ipsets and nft tables", late))
    actions[0].before, actions[0].after, actions[0].label = before, after, "kube-proxy state"  # the whole plan's diff
    return actions


RUNNERS = {"kernel": _check_kernel, "firewall": _check_firewall, "forward": _check_forward,
           "masquerade": _check_masquerade, "flannel": _check_flannel, "kube-proxy": _check_dnat,
           "kube-proxy-mode": _check_proxy_mode,
           "node-dns": _check_node_dns, "coredns": _check_coredns, "pod-dns": _check_pod_dns,
           "conntrack": _check_conntrack}


def audit(state, want, checks=None):
    """Run the checks (default: all, in CHECKS order) on the gathered state. Returns a Result whose
    actions are in the order they must run."""
    checks = list(CHECKS) if checks is None else [c for c in CHECKS if c in checks]
    a = _Audit(want, state)
    for check in checks:
        before = len(a.result.skipped)
        RUNNERS[check](a)
        if len(a.result.skipped) == before:
            a.result.checks.extend(CHECKS[check])
    return a.result


def owned_only(action):
    """Whether an iptables action touches only chains netmend may write (a safety net under every fix)."""
    if action.kind != "iptables":
        return True
    for line in action.payload.splitlines():
        words = line.split()
        if line.startswith(":") and not owned(line[1:].split()[0]):
            return False
        if words[:1] in (["-A"], ["-X"]) and not owned(words[1]):
            return False
    return True
