"""The lab's fault catalog: real breakage of a node's network, injected and recovered by name.

Every fault models something a real cluster does to itself (seed sections cited in its description),
changes one node with real commands (sysctl, iptables, iptables-restore --noflush, ip, bridge,
conntrack, service firewalld, file writes into the node), names the finding netmend's audit must
report for it, and lists the probes it breaks, as measured with `python -m lab probe` on the default
inventory after site.yml. An inject records what it needs to put the node back exactly as it was; a
recover re-asserts that original state idempotently, so it is also safe after netmend's remediation
fixed the fault in between.

Active faults live in RUN/faults.json, several at once and on several nodes (the same fault on two
nodes too); `lab down` removes them with the rest of the lab.
"""

import fnmatch
import ipaddress
import json
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from lab import dataplane, topology
from lab.inventory import load_cluster
from lab.sh import LabError, in_node, ip_batch, node_path
from netmend.flannel import MASQ_CHAIN as FLANNEL_CHAIN
from netmend.kubeproxy import NFTABLES_TABLE, endpoint_chain, endpoint_rules, service_chain
from netmend.proxymode import parse_nft_tables

STATE = topology.RUN / "faults.json"
SAVE_DIR = "/var/lib/netmend-lab/faults"  # inside the node: what a fault moved out of the way
DEAD_NAMESERVER = "198.51.100.53"  # a DHCP server that is gone: on the underlay, nobody answers
LOOPBACK_UPSTREAM = "127.0.0.53"  # systemd-resolved's stub, fed to CoreDNS
STALE_OFFSET = 100  # an old endpoint: the current one's last octet + 100
WRONG_SUBNET_INDEX = 200  # 10.244.200.0/24 in the default pod CIDR: leased by nobody
FIXED_SPORT = 53535  # the probe's fixed DNS source port (lab/probe.py FIXED_DNS_SPORT)
OLD_DNS_HOST = 250  # the stale DNS endpoint: host .250 of the current endpoint's /24
CONNTRACK_TIMEOUT = 3600  # seconds: the stale entry outlives any test (the probe's packets refresh it)
SETTLE_SECONDS = 15.0
# flannel.1 with an MTU other than underlay - 50. Not 1500: the kernel refuses a VXLAN MTU above its lower
# device's MTU minus the 50 bytes of headers (EINVAL), so 1500 needs a jumbo underlay.
WRONG_MTU = 1400
NETMEND_CHAIN = "NETMEND-FORWARD"


class FaultError(LabError):
    """A bad request (unknown fault or node, already active, not active): nothing was changed."""


# --------------------------------------------------------------------------- the node a fault works on


class Ctx:
    """One node of the running lab, as a fault sees it, plus the fault's record (JSON-able)."""

    def __init__(self, state, cluster, variables, node_name, record=None):
        self.cluster, self.variables = cluster, variables
        self.node = next(n for n in cluster.nodes if n.name == node_name)
        self.name = node_name
        self.pid = state["nodes"][node_name]["pid"]
        self.netns = topology.PREFIX + node_name
        self.record = record if record is not None else {}

    # commands
    def sh(self, *argv, input=None, check=True, timeout=60):
        return in_node(self.pid, list(argv), input=input, check=check, timeout=timeout)

    def ip(self, *commands, tool="ip"):
        ip_batch(self.netns, list(commands), tool=tool)

    def ipj(self, *args, tool="ip"):
        out = self.sh(tool, "-j", *args).stdout.strip()
        return json.loads(out) if out else []

    def restore(self, text):
        """One iptables-restore --noflush transaction inside the node."""
        self.sh("iptables-restore", "-w", "5", "--noflush", input=text)

    def save(self, table=None):
        """iptables-save without its comment lines."""
        out = self.sh("iptables-save", *(["-t", table] if table else [])).stdout
        return "".join(line + "\n" for line in out.splitlines() if not line.startswith("#"))

    # files inside the node
    def read(self, path):
        with open(node_path(self.pid, path), encoding="utf-8") as fh:
            return fh.read()

    def write(self, path, text):
        """Rewrite a node file in place (same inode, mode and owner)."""
        with open(node_path(self.pid, path), "w", encoding="utf-8") as fh:
            fh.write(text)

    def exists(self, path):
        return os.path.exists(node_path(self.pid, path))

    # sysctls
    def sysctls(self, regex=r"^net\.(ipv4|ipv6|bridge)\."):
        out = self.sh("sysctl", "-a", "-r", regex, check=False).stdout
        return dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)

    def restore_sysctls(self, wanted):
        """Write back every recorded sysctl whose value differs now (only those)."""
        now = self.sysctls()
        changed = [f"{k}={v}" for k, v in wanted.items() if k in now and now[k] != v]
        if changed:
            self.sh("sysctl", "-q", "-w", *changed)
        left = {k for k, v in self.sysctls().items() if k in wanted and wanted[k] != v}
        if left:
            raise LabError(f"{self.name}: sysctls not restored: {', '.join(sorted(left))}")

    # the cluster around the node
    def pods(self, **match):
        return [p for p in self.cluster.pods_on(self.name) if all(getattr(p, k) == v for k, v in match.items())]

    def service(self, name):
        return next(s for s in self.cluster.services if s.name == name)

    def next_peer(self):
        nodes = self.cluster.nodes
        if len(nodes) == 1:
            raise LabError("the fault needs a peer node: the lab has one node")
        return nodes[(nodes.index(self.node) + 1) % len(nodes)]

    def vxlan(self):
        if self.cluster.flannel["backend"] != "vxlan":
            raise LabError(f"the fault needs flannel's vxlan backend (the inventory has "
                           f"{self.cluster.flannel['backend']})")


def _wait(what, predicate, seconds=SETTLE_SECONDS, step=0.2):
    deadline = time.monotonic() + seconds
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise LabError(f"timed out after {seconds:g} s waiting for {what}")
        time.sleep(step)


def _kube_proxy_settled(ctx):
    """kube-proxy's stand-in restores its rules within a second of a flush (its canary is gone): wait for the
    canary, then for the rules to stop changing."""
    last = [None]

    def stable():
        if ctx.sh("iptables", "-w", "5", "-t", "mangle", "-S", "KUBE-PROXY-CANARY", check=False).returncode != 0:
            last[0] = None
            return False
        now = ctx.save()
        same, last[0] = now == last[0], now
        return same

    _wait(f"kube-proxy's rules on {ctx.name}", stable, step=0.4)


# --------------------------------------------------------------------------- sysctl faults


def _sysctl_fault(key, value):
    def inject(ctx):
        ctx.record["sysctls"] = ctx.sysctls()
        if key not in ctx.record["sysctls"]:
            raise LabError(f"{ctx.name}: sysctl {key} does not exist in the node's network namespace")
        ctx.sh("sysctl", "-q", "-w", f"{key}={value}")

    def recover(ctx):
        saved = ctx.record["sysctls"]
        # The key first: writing ip_forward rewrites every interface's forwarding (and accept_redirects).
        ctx.sh("sysctl", "-q", "-w", f"{key}={saved[key]}")
        ctx.restore_sysctls(saved)

    return inject, recover


# --------------------------------------------------------------------------- firewalld


def _firewalld_running(ctx):
    return ctx.sh("service", "firewalld", "status", check=False).returncode == 0


def _netmend_forward(ctx):
    """(restore text that re-creates NETMEND-FORWARD and its FORWARD jump at its position, the jump line)."""
    rules = ctx.sh("iptables", "-w", "5", "-S").stdout.splitlines()
    forward = [r for r in rules if r.startswith("-A FORWARD ")]
    jump = next((r for r in forward if r.endswith(f"-j {NETMEND_CHAIN}")), None)
    own = [r for r in rules if r.startswith(f"-A {NETMEND_CHAIN} ")]
    if jump is None:
        return None, None
    position = forward.index(jump) + 1
    text = "\n".join(["*filter", f":{NETMEND_CHAIN} - [0:0]", *own,
                      jump.replace("-A FORWARD ", f"-I FORWARD {position} ", 1), "COMMIT"]) + "\n"
    return text, jump


def firewalld_default_zone_inject(ctx):
    rec = ctx.record
    rec["iptables"] = ctx.save()
    rec["running"] = _firewalld_running(ctx)
    rec["netmend_forward"], rec["netmend_jump"] = _netmend_forward(ctx)
    zones = "/etc/firewalld/zones"
    rec["zones"] = sorted(os.listdir(node_path(ctx.pid, zones)))
    save = f"{SAVE_DIR}/firewalld-default-zone"
    ctx.sh("service", "firewalld", "stop")
    ctx.sh("mkdir", "-p", save)
    if rec["zones"]:
        ctx.sh("mv", "-f", *(f"{zones}/{z}" for z in rec["zones"]), f"{save}/")
    ctx.sh("service", "firewalld", "start")
    # As after a reboot: no earlier VXLAN flow is ESTABLISHED (it would let the peers' packets through).
    ctx.sh("conntrack", "-D", "-p", "udp", "--dport", str(ctx.cluster.flannel["port"]), check=False)
    _kube_proxy_settled(ctx)


def firewalld_default_zone_recover(ctx):
    rec = ctx.record
    zones, save = "/etc/firewalld/zones", f"{SAVE_DIR}/firewalld-default-zone"
    ctx.sh("service", "firewalld", "stop")
    saved = set(os.listdir(node_path(ctx.pid, save))) if ctx.exists(save) else set()
    # Zone files written since (by netmend's remediation) give way to the originals.
    extra = [f"{zones}/{z}" for z in os.listdir(node_path(ctx.pid, zones)) if z not in rec["zones"] or z in saved]
    if extra:
        ctx.sh("rm", "-f", *extra)
    if saved:
        ctx.sh("mv", "-f", *(f"{save}/{z}" for z in sorted(saved)), f"{zones}/")
    ctx.sh("rm", "-rf", save)
    if rec["running"]:
        ctx.sh("service", "firewalld", "start")
    _kube_proxy_settled(ctx)
    if rec["netmend_forward"]:
        # What netmend's forward role does, from the chain as it was: a firewalld start flushed it.
        seen = []

        def forward_back():
            # The chain and its jump back, and still there a second later: a late flush (firewalld) or
            # resync (the kube-proxy stand-in) must not take them away after recover returns. Other rules
            # (the operator's own, which a firewalld start flushes too) are not this fault's to restore.
            rules = ctx.sh("iptables", "-w", "5", "-S").stdout.splitlines()
            if rec["netmend_jump"] not in rules:
                # At its old position, or last when rules above it (the operator's, flushed by the
                # firewalld restart) are gone: iptables refuses an insert past the chain's end.
                forward = sum(1 for r in rules if r.startswith("-A FORWARD "))
                ctx.restore(re.sub(r"^-I FORWARD (\d+) ", lambda m: f"-I FORWARD {min(int(m[1]), forward + 1)} ",
                                   rec["netmend_forward"], flags=re.M))
                seen.clear()
                return False
            seen.append(time.monotonic())
            return seen[-1] - seen[0] >= 1.0

        _wait(f"{NETMEND_CHAIN} back on {ctx.name}", forward_back, step=0.5)


# --------------------------------------------------------------------------- FORWARD policy


def forward_drop_inject(ctx):
    rules = ctx.sh("iptables", "-w", "5", "-S", "FORWARD").stdout.splitlines()
    policy = rules[0].split()[2]
    forward = [r for r in rules if r.startswith("-A FORWARD ")]
    jump = next((r for r in forward if r.endswith(f"-j {NETMEND_CHAIN}")), None)
    ctx.record.update(policy=policy, jump=jump, position=forward.index(jump) + 1 if jump else None)
    ctx.sh("iptables", "-w", "5", "-P", "FORWARD", "DROP")
    if jump:
        ctx.sh("iptables", "-w", "5", "-D", "FORWARD", *shlex.split(jump)[2:])


def forward_drop_recover(ctx):
    rec = ctx.record
    ctx.sh("iptables", "-w", "5", "-P", "FORWARD", rec["policy"])
    jump = rec["jump"]
    if jump and jump not in ctx.sh("iptables", "-w", "5", "-S", "FORWARD").stdout.splitlines():
        ctx.sh("iptables", "-w", "5", "-I", "FORWARD", str(rec["position"]), *shlex.split(jump)[2:])


# --------------------------------------------------------------------------- kube-proxy's and flannel's rules


def _chain_lines(save, chain):
    return [line for line in save.splitlines() if line.startswith(f"-A {chain} ")]


def _chains(save):
    return {line[1:].split()[0] for line in save.splitlines() if line.startswith(":")}


def _old_ip(ip):
    """The endpoint a kube-proxy that missed an update still points at: last octet + STALE_OFFSET."""
    old = ipaddress.ip_address(ip) + STALE_OFFSET
    if str(old).rsplit(".", 1)[0] != ip.rsplit(".", 1)[0]:
        old = ipaddress.ip_address(ip) - STALE_OFFSET
    return str(old)


def _retarget(lines, names):
    """kube-proxy's lines with the service port's current endpoint replaced by the old one (chain names
    included), in kube-proxy's own grammar (netmend.kubeproxy). names: (KUBE-SVC chain, current KUBE-SEP
    chain, old KUBE-SEP chain, current ip:port, old ip:port, protocol)."""
    return [_retarget_line(line, *names) for line in lines]


def _retarget_line(line, svc_chain, cur_sep, old_sep, cur_ep, old_ep, protocol):  # noqa: PLR0913, PLR0917
    if line == f":{cur_sep} - [0:0]":
        return f":{old_sep} - [0:0]"
    if line.startswith(f"-A {svc_chain} ") and line.endswith(f"-j {cur_sep}"):
        return line[:-len(cur_sep)] + old_sep
    written = endpoint_rules(cur_sep, cur_ep, protocol)
    if line in written:
        return endpoint_rules(old_sep, old_ep, protocol)[written.index(line)]
    return line


def _stale_dnat(service_name):
    def chains(ctx):
        svc = ctx.service(service_name)
        port = svc.ports[0]
        endpoints = [f"{ip}:{target}" for ip, target in ctx.cluster.endpoints(svc, port)]
        if len(endpoints) != 1:
            raise LabError(f"{service_name} has {len(endpoints)} endpoints; the fault needs exactly one")
        cur = endpoints[0]
        old = f"{_old_ip(cur.split(':')[0])}:{cur.split(':')[1]}"
        args = (svc.namespace, svc.name, port.name, port.protocol)
        return (service_chain(*args), endpoint_chain(*args, cur), endpoint_chain(*args, old), cur, old, port.protocol)

    def inject(ctx):
        svc_chain, cur_sep, old_sep, cur, old, protocol = chains(ctx)
        nat = ctx.save("nat")
        svc_lines, sep_lines = _chain_lines(nat, svc_chain), _chain_lines(nat, cur_sep)
        if not sep_lines or not any(line.endswith(f"-j {cur_sep}") for line in svc_lines):
            raise LabError(f"{ctx.name}: kube-proxy's rules have no {cur_sep} for {service_name}'s endpoint {cur} "
                           "(stale already?)")
        ctx.record.update(rules_file=ctx.read(dataplane.RULES), svc_lines=svc_lines, sep_lines=sep_lines,
                          chains=[svc_chain, cur_sep, old_sep], endpoints=[cur, old])
        # The stand-in's rules file first: a resync (after a flush) keeps the stale endpoint, as a kube-proxy
        # that missed the endpoint update would.
        names = (svc_chain, cur_sep, old_sep, cur, old, protocol)
        ctx.write(dataplane.RULES, "\n".join(_retarget(ctx.record["rules_file"].split("\n"), names)))
        ctx.restore("\n".join([
            "*nat", f":{svc_chain} - [0:0]", f":{old_sep} - [0:0]", f":{cur_sep} - [0:0]",
            *_retarget(svc_lines + sep_lines, names),
            f"-X {cur_sep}", "COMMIT"]) + "\n")

    def recover(ctx):
        rec = ctx.record
        svc_chain, cur_sep, old_sep = rec["chains"]
        ctx.write(dataplane.RULES, rec["rules_file"])
        live = _chains(ctx.save("nat"))
        stale = [old_sep] if old_sep in live else []
        ctx.restore("\n".join([
            "*nat", f":{svc_chain} - [0:0]", f":{cur_sep} - [0:0]", *(f":{c} - [0:0]" for c in stale),
            *rec["svc_lines"], *rec["sep_lines"], *(f"-X {c}" for c in stale), "COMMIT"]) + "\n")

    return inject, recover


def _masq_rule(ctx, lines):
    prefix = f"-A {FLANNEL_CHAIN} -s {ctx.cluster.pod_cidr} "
    return next((line for line in lines if line.startswith(prefix) and "-j MASQUERADE" in line), None)


def masquerade_missing_inject(ctx):
    nat = ctx.save("nat")
    chain = _chain_lines(nat, FLANNEL_CHAIN)
    rule = _masq_rule(ctx, chain)
    if rule is None:
        raise LabError(f"{ctx.name}: flannel's MASQUERADE rule for {ctx.cluster.pod_cidr} is not there")
    post = _chain_lines(nat, "POSTROUTING")
    jump = next((line for line in post if line.endswith(f"-j {FLANNEL_CHAIN}")), None)
    ctx.record.update(rules_file=ctx.read(dataplane.RULES), chain=chain, rule=rule, jump=jump,
                      position=post.index(jump) + 1 if jump else None)
    ctx.write(dataplane.RULES, "".join(line + "\n" for line in ctx.record["rules_file"].splitlines()
                                       if line != rule))
    ctx.restore("\n".join(["*nat", f":{FLANNEL_CHAIN} - [0:0]", *(line for line in chain if line != rule),
                           "COMMIT"]) + "\n")


def masquerade_missing_recover(ctx):
    rec = ctx.record
    ctx.write(dataplane.RULES, rec["rules_file"])
    lines = ["*nat", f":{FLANNEL_CHAIN} - [0:0]", *rec["chain"]]
    if rec["jump"] and rec["jump"] not in _chain_lines(ctx.save("nat"), "POSTROUTING"):
        lines.append(rec["jump"].replace("-A POSTROUTING ", f"-I POSTROUTING {rec['position']} ", 1))
    ctx.restore("\n".join([*lines, "COMMIT"]) + "\n")


# --------------------------------------------------------------------------- files: resolv.conf, Corefile, subnet.env


def _file_fault(path_of, change):
    """A fault that rewrites one node file: change(ctx, text) -> new text; recover writes the original back."""
    def inject(ctx):
        path = path_of(ctx)
        if not ctx.exists(path):
            raise LabError(f"{ctx.name}: {path} does not exist")
        text = ctx.read(path)
        ctx.record.update(path=path, text=text)
        ctx.write(path, change(ctx, text))

    def recover(ctx):
        ctx.write(ctx.record["path"], ctx.record["text"])

    return inject, recover


def _dead_nameserver(ctx, text):
    """Only the nameserver lines change (into one dead server); every other line stays byte-identical."""
    out, done = [], False
    for line in text.splitlines(keepends=True):
        if re.match(r"\s*nameserver\s", line):
            if not done:
                out.append(f"nameserver {DEAD_NAMESERVER}\n")
                done = True
            continue
        out.append(line)
    if not done:
        raise LabError(f"{ctx.name}: /etc/resolv.conf has no nameserver line")
    return "".join(out)


def _node_resolv(ctx, _text):
    return ctx.read("/etc/resolv.conf")


def _netcheck_resolv(ctx):
    pod = next(iter(ctx.pods(app="netcheck", host_network=False)), None)
    if pod is None:
        raise LabError(f"{ctx.name} runs no netcheck pod")
    return f"/etc/netns/{dataplane.POD_PREFIX}{pod.name}/resolv.conf"


def _hostnet_resolv(ctx):
    pods = sorted(ctx.pods(host_network=True), key=lambda p: p.app == "kubernetes")
    if not pods:
        raise LabError(f"{ctx.name} runs no hostNetwork pod")
    return dataplane.HOSTNET_RESOLV.format(pod=pods[0].name)


def _unused_subnet(cluster):
    """A subnet of the pod CIDR no node leases (index WRONG_SUBNET_INDEX if free)."""
    leased = {n.subnet for n in cluster.nodes}
    subnets = list(ipaddress.ip_network(cluster.pod_cidr).subnets(new_prefix=cluster.flannel["subnet_len"]))
    order = subnets[WRONG_SUBNET_INDEX:] + subnets[:WRONG_SUBNET_INDEX]
    return next(s for s in order if str(s) not in leased)


def _other_subnet_env(ctx, text):
    other = _unused_subnet(ctx.cluster)
    new, count = re.subn(r"^FLANNEL_SUBNET=.*$", f"FLANNEL_SUBNET={other.network_address + 1}/{other.prefixlen}",
                         text, flags=re.M)
    if not count:
        raise LabError(f"{ctx.name}: /run/flannel/subnet.env has no FLANNEL_SUBNET line")
    return new


def _dns_log(ctx):
    """The log of the cluster DNS stand-in, when its pod runs on ctx's node (it reads that node's Corefile)."""
    pod = next((p for p in ctx.pods(host_network=False) if p.ip in {
        ip for s in ctx.cluster.services if s.cluster_ip == ctx.cluster.cluster_dns
        for port in s.ports for ip, _ in ctx.cluster.endpoints(s, port)}), None)
    return f"/var/log/pods/{pod.name}-dns.log" if pod else None


def _dns_command(ctx, log):
    lines = [line for line in ctx.read(log).splitlines() if line.startswith("clusterdns: dnsmasq ")]
    return lines[-1] if lines else None


def coredns_loopback_inject(ctx):
    path = dataplane.corefile_path(ctx.variables)
    if not ctx.exists(path):
        raise LabError(f"{ctx.name} has no Corefile at {path} (control-plane nodes have it)")
    text = ctx.read(path)
    new, count = re.subn(r"^(\s*forward\s+\.)[^{\n]*?(\s*\{?\s*)$", rf"\1 {LOOPBACK_UPSTREAM}\2", text,
                         count=1, flags=re.M)
    if not count:
        raise LabError(f"{ctx.name}: the Corefile at {path} has no `forward .` line")
    log = _dns_log(ctx)
    ctx.record.update(path=path, text=text, log=log, command=_dns_command(ctx, log) if log else None)
    ctx.write(path, new)
    if log:  # the cluster DNS reloads the Corefile within a second or two, as CoreDNS's reload plugin does
        _wait("the cluster DNS to reload its Corefile",
              lambda: f"--server={LOOPBACK_UPSTREAM}#53" in (_dns_command(ctx, log) or ""))


def coredns_loopback_recover(ctx):
    rec = ctx.record
    ctx.write(rec["path"], rec["text"])
    if rec["log"] and rec["command"]:
        _wait("the cluster DNS to reload its Corefile", lambda: _dns_command(ctx, rec["log"]) == rec["command"])


# --------------------------------------------------------------------------- flannel's devices and peers


def _flannel_link(ctx):
    links = ctx.ipj("-d", "link", "show", "flannel.1")
    if not links:
        raise LabError(f"{ctx.name} has no flannel.1")
    link = links[0]
    data = link["linkinfo"]["info_data"]
    return {"mac": link["address"], "mtu": link["mtu"], "id": data["id"], "local": data["local"],
            "dev": data["link"], "port": data["port"], "learning": data.get("learning", False)}


def _flannel_capture(ctx):
    ctx.vxlan()
    addrs = [f"{a['local']}/{a['prefixlen']}" for a in ctx.ipj("addr", "show", "dev", "flannel.1")[0]["addr_info"]
             if a["family"] == "inet"]
    routes = [r for r in ctx.ipj("route", "show", "dev", "flannel.1") if "gateway" in r]
    neighs = [n for n in ctx.ipj("neigh", "show", "dev", "flannel.1") if "PERMANENT" in n.get("state", [])]
    fdb = [f for f in ctx.ipj("fdb", "show", "dev", "flannel.1", tool="bridge") if f.get("dst")]
    sysctls = ctx.sysctls(r"\.flannel/1\.")
    return {"link": _flannel_link(ctx), "addrs": addrs, "routes": routes, "neighs": neighs, "fdb": fdb,
            "sysctls": sysctls}


def _route_cmd(route):
    return (f"route replace {route['dst']} via {route['gateway']} dev {route.get('dev', 'flannel.1')}"
            + (" onlink" if "onlink" in route.get("flags", []) else ""))


def _neigh_cmd(neigh):
    return f"neigh replace {neigh['dst']} lladdr {neigh['lladdr']} dev flannel.1 nud permanent"


def _fdb_cmd(entry):
    return f"fdb replace {entry['mac']} dev flannel.1 dst {entry['dst']} self permanent"


def _flannel_entries(ctx, saved):
    ctx.ip(*(_route_cmd(r) for r in saved["routes"]), *(_neigh_cmd(n) for n in saved["neighs"]))
    ctx.ip(*(_fdb_cmd(f) for f in saved["fdb"]), tool="bridge")


def _flannel_recreate(ctx, saved, link):
    """Delete flannel.1 and create it again with `link`'s settings (same MAC), its address and peer entries,
    as flanneld does at start; the device's own sysctls come back as they were."""
    ctx.ip("link del flannel.1",
           f"link add flannel.1 address {link['mac']} type vxlan id {link['id']} local {link['local']} "
           f"dev {link['dev']} dstport {link['port']}" + ("" if link["learning"] else " nolearning"),
           f"link set flannel.1 mtu {link['mtu']}",
           *(f"addr add {a} dev flannel.1" for a in saved["addrs"]),
           "link set flannel.1 up")
    ctx.restore_sysctls(saved["sysctls"])
    _flannel_entries(ctx, saved)
    _wait("flannel.1's IPv6 link-local address", lambda: _link_local_settled(ctx, "flannel.1"))


def _link_local_settled(ctx, dev):
    """Whether a link that just came up has its IPv6 link-local address past duplicate address detection
    (about a second after `up`), with its local route: until then the node's routes differ from before.
    True at once where IPv6 is off on the link."""
    out = ctx.sh("sh", "-c", f"cat /proc/sys/net/ipv6/conf/{dev}/disable_ipv6 2>/dev/null || echo 1; "
                             f"ip -6 -o addr show dev {dev} scope link; ip -6 route show table local dev {dev}").stdout
    lines = out.splitlines()
    if not lines or lines[0].strip() != "0":
        return True
    addrs = [line for line in lines[1:] if " inet6 fe80:" in line]
    return bool(addrs) and not any("tentative" in line for line in addrs) and any(
        line.startswith("local fe80:") for line in lines[1:])


def _flannel_setting(field, value):
    def inject(ctx):
        saved = _flannel_capture(ctx)
        ctx.record.update(saved)
        _flannel_recreate(ctx, saved, {**saved["link"], field: value})

    def recover(ctx):
        saved = ctx.record
        if _flannel_link(ctx) != saved["link"]:
            _flannel_recreate(ctx, saved, saved["link"])
        else:  # remediation recreated it already: only re-assert the peer entries
            _flannel_entries(ctx, saved)

    return inject, recover


def flannel_mtu_inject(ctx):
    ctx.vxlan()
    ctx.record["mtu"] = _flannel_link(ctx)["mtu"]
    ctx.ip(f"link set flannel.1 mtu {WRONG_MTU}")


def flannel_mtu_recover(ctx):
    ctx.ip(f"link set flannel.1 mtu {ctx.record['mtu']}")


def peer_route_inject(ctx):
    peer = ctx.next_peer()
    routes = ctx.ipj("route", "show", peer.subnet)
    if not routes:
        raise LabError(f"{ctx.name} has no route to {peer.name}'s subnet {peer.subnet}")
    ctx.record.update(peer=peer.name, route={"dev": "flannel.1", **routes[0]})
    ctx.ip(f"route del {peer.subnet}")


def peer_route_recover(ctx):
    ctx.ip(_route_cmd(ctx.record["route"]))


def peer_neigh_inject(ctx):
    ctx.vxlan()
    peer = ctx.next_peer()
    neighs = [n for n in ctx.ipj("neigh", "show", peer.vtep_ip, "dev", "flannel.1") if n.get("lladdr")]
    if not neighs:
        raise LabError(f"{ctx.name} has no neighbour entry for {peer.name}'s VTEP {peer.vtep_ip}")
    ctx.record.update(peer=peer.name, neigh=neighs[0])
    ctx.ip(f"neigh del {peer.vtep_ip} dev flannel.1")


def peer_neigh_recover(ctx):
    ctx.ip(_neigh_cmd(ctx.record["neigh"]))


def peer_fdb_inject(ctx):
    ctx.vxlan()
    peer = ctx.next_peer()
    entry = next((f for f in ctx.ipj("fdb", "show", "dev", "flannel.1", tool="bridge")
                  if f.get("dst") == peer.address), None)
    if entry is None:
        raise LabError(f"{ctx.name} has no fdb entry for {peer.name} ({peer.address}) on flannel.1")
    ctx.record.update(peer=peer.name, fdb=entry)
    ctx.ip(f"fdb del {entry['mac']} dev flannel.1 dst {entry['dst']} self", tool="bridge")


def peer_fdb_recover(ctx):
    ctx.ip(_fdb_cmd(ctx.record["fdb"]), tool="bridge")


def cni0_address_inject(ctx):
    addrs = [f"{a['local']}/{a['prefixlen']}" for a in ctx.ipj("addr", "show", "dev", "cni0")[0]["addr_info"]
             if a["family"] == "inet"]
    other = _unused_subnet(ctx.cluster)
    wrong = f"{other.network_address + 1}/{other.prefixlen}"
    ctx.record.update(addrs=addrs, wrong=wrong)
    ctx.ip(*(f"addr del {a} dev cni0" for a in addrs), f"addr add {wrong} dev cni0")


def cni0_address_recover(ctx):
    rec = ctx.record
    now = [f"{a['local']}/{a['prefixlen']}" for a in ctx.ipj("addr", "show", "dev", "cni0")[0]["addr_info"]
           if a["family"] == "inet"]
    ctx.ip(*(f"addr del {a} dev cni0" for a in now if a == rec["wrong"]),
           *(f"addr replace {a} dev cni0" for a in rec["addrs"]))


# --------------------------------------------------------------------------- conntrack


def dns_conntrack_stale_inject(ctx):
    pod = next(iter(ctx.pods(app="netcheck", host_network=False)), None)
    if pod is None:
        raise LabError(f"{ctx.name} runs no netcheck pod")
    dns = next(s for s in ctx.cluster.services if s.cluster_ip == ctx.cluster.cluster_dns)
    port = next(p for p in dns.ports if p.protocol == "UDP")
    endpoint_ip, target = ctx.cluster.endpoints(dns, port)[0]
    old = str(ipaddress.ip_network(f"{endpoint_ip}/24", strict=False).network_address + OLD_DNS_HOST)
    timeout_key = "net.netfilter.nf_conntrack_udp_timeout"
    ctx.record.update(pod_ip=pod.ip, service=dns.cluster_ip, port=port.port, old=old, target=target,
                      timeout=ctx.sh("sysctl", "-n", timeout_key).stdout.strip())
    flow = ["-p", "udp", "-s", pod.ip, "-d", dns.cluster_ip, "--sport", str(FIXED_SPORT), "--dport", str(port.port)]
    # The probe's packets refresh an unreplied UDP entry to this timeout: raised so the entry stays.
    ctx.sh("sysctl", "-q", "-w", f"{timeout_key}={CONNTRACK_TIMEOUT}")
    ctx.sh("conntrack", "-D", *flow, check=False)  # the live entry for that exact tuple, if any
    ctx.sh("conntrack", "-I", *flow, "-r", old, "-q", pod.ip, "--reply-port-src", str(target),
           "--reply-port-dst", str(FIXED_SPORT), "-t", str(CONNTRACK_TIMEOUT))
    listed = ctx.sh("conntrack", "-L", *flow).stdout
    if f"src={old} " not in listed:
        raise LabError(f"{ctx.name}: the stale conntrack entry is not listed: {listed.strip()!r}")


def dns_conntrack_stale_recover(ctx):
    rec = ctx.record
    ctx.sh("conntrack", "-D", "-p", "udp", "-s", rec["pod_ip"], "-d", rec["service"], "--sport", str(FIXED_SPORT),
           "--dport", str(rec["port"]), "-r", rec["old"], check=False)  # gone already after remediation
    ctx.sh("sysctl", "-q", "-w", f"net.netfilter.nf_conntrack_udp_timeout={rec['timeout']}")


# --------------------------------------------------------------------------- kube-proxy mode leftovers


def _nftables_leftover(ctx):
    """What kube-proxy in nftables mode (pkg/proxy/nftables/proxier.go, setupNFTables) leaves when the node
    goes back to iptables mode without `kube-proxy --cleanup`: its tables, base chains and jump chains, the
    ClusterIPs it knew, and its last view of the cluster DNS service: no endpoints yet (CoreDNS was not
    running), so @no-endpoint-services rejects it. filter-output runs before DNAT (priority dstnat - 10, -110):
    the node's own (hostNetwork) DNS queries to the cluster DNS are rejected; pods' traffic, DNATed by
    iptables in prerouting first, is not."""
    dns = ctx.cluster.cluster_dns
    ips = ", ".join(sorted({s.cluster_ip for s in ctx.cluster.services}, key=ipaddress.ip_address))
    return f"""table ip kube-proxy {{
    comment "rules for kube-proxy"
    set cluster-ips {{ type ipv4_addr; comment "Active ClusterIPs"; elements = {{ {ips} }} }}
    map no-endpoint-services {{
        type ipv4_addr . inet_proto . inet_service : verdict
        comment "vmap to drop or reject packets to services with no endpoints"
        elements = {{ {dns} . udp . 53 : goto reject-chain, {dns} . tcp . 53 : goto reject-chain }}
    }}
    map no-endpoint-nodeports {{ type inet_proto . inet_service : verdict; }}
    map service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict; }}
    map service-nodeports {{ type inet_proto . inet_service : verdict; }}
    map firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict; }}
    chain reject-chain {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports"; reject; }}
    chain service-endpoints-check {{ ip daddr . meta l4proto . th dport vmap @no-endpoint-services; }}
    chain nodeport-endpoints-check {{ ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @no-endpoint-nodeports; }}
    chain firewall-check {{ ip daddr . meta l4proto . th dport vmap @firewall-ips; }}
    chain cluster-ips-check {{ ip daddr @cluster-ips reject; }}
    chain services {{ ip daddr . meta l4proto . th dport vmap @service-ips; }}
    chain mark-for-masquerade {{ meta mark set meta mark | 0x4000; }}
    chain masquerading {{
        meta mark & 0x4000 == 0 return
        meta mark set meta mark ^ 0x4000
        masquerade fully-random
    }}
    chain filter-prerouting {{ type filter hook prerouting priority dstnat - 10; ct state new jump firewall-check; }}
    chain filter-input {{
        type filter hook input priority -110
        ct state new jump nodeport-endpoints-check
        ct state new jump service-endpoints-check
    }}
    chain filter-forward {{
        type filter hook forward priority -110
        ct state new jump service-endpoints-check
        ct state new jump cluster-ips-check
    }}
    chain filter-output {{
        type filter hook output priority -110
        ct state new jump service-endpoints-check
        ct state new jump firewall-check
    }}
    chain filter-output-post-dnat {{
        type filter hook output priority -90
        ct state new jump cluster-ips-check
    }}
    chain nat-prerouting {{ type nat hook prerouting priority dstnat; jump services; }}
    chain nat-output {{ type nat hook output priority -100; jump services; }}
    chain nat-postrouting {{ type nat hook postrouting priority srcnat; jump masquerading; }}
}}
table ip6 kube-proxy {{
    comment "rules for kube-proxy"
    chain nat-prerouting {{ type nat hook prerouting priority dstnat; }}
}}
"""


def _kube_proxy_tables(ctx):
    """The families of the node's kube-proxy nft tables."""
    return [fam for fam, name in parse_nft_tables(ctx.sh("nft", "list", "tables").stdout) if name == NFTABLES_TABLE]


def nftables_leftovers_inject(ctx):
    if _kube_proxy_tables(ctx):
        raise LabError(f"{ctx.name} already has kube-proxy nft tables")
    ctx.sh("nft", "-f", "-", input=_nftables_leftover(ctx))


def nftables_leftovers_recover(ctx):
    for family in _kube_proxy_tables(ctx):
        ctx.sh("nft", "delete", "table", family, NFTABLES_TABLE)


# --------------------------------------------------------------------------- the catalog


@dataclass(frozen=True)
class Fault:
    name: str
    node: str  # the default node
    finding: str  # the finding ID netmend's audit must report (docs/findings/<ID>.md)
    description: str  # what a real cluster does to get there
    inject: Callable
    recover: Callable
    # The probes it breaks, measured on the default node: fnmatch patterns over probe IDs with {node}, {pod}
    # (the node's netcheck pod), {hostnet} (the probed hostNetwork pod when it runs on the node, else "-"),
    # {peer} and {peer_pod} (the next node in inventory order, its netcheck pod); a pattern starting with "!"
    # takes matching IDs out again.
    breaks: tuple = ()
    quiet: str = ""  # why it breaks no probe (when breaks is empty)
    also: tuple = ()  # further finding IDs the fault's state carries (measured), reported beside `finding`

    @property
    def findings(self):
        """Every finding ID the audit must report for this fault on its node."""
        return (self.finding, *self.also)

    def patterns(self, cluster, node):
        values = _placeholders(cluster, node)
        return [p.format(**values) for p in self.breaks]

    def broken(self, probe_ids, cluster, node):
        """The probe IDs out of probe_ids this fault breaks on node."""
        pats = self.patterns(cluster, node)
        keep = [p for p in pats if not p.startswith("!")]
        drop = [p[1:] for p in pats if p.startswith("!")]
        return sorted(i for i in probe_ids if any(fnmatch.fnmatchcase(i, p) for p in keep)
                      and not any(fnmatch.fnmatchcase(i, p) for p in drop))


def _placeholders(cluster, node):
    nodes = cluster.nodes
    me = next(n for n in nodes if n.name == node)
    peer = nodes[(nodes.index(me) + 1) % len(nodes)]
    netcheck = {p.node: p.name for p in cluster.pods if p.app == "netcheck" and not p.host_network}
    hostnet = next((p for p in cluster.pods if p.host_network and p.app != "kubernetes"), None)  # as lab/probe.py
    return {"node": node, "pod": netcheck.get(node, "-"), "peer": peer.name, "peer_pod": netcheck.get(peer.name, "-"),
            "hostnet": hostnet.name if hostnet is not None and hostnet.node == node else "-"}


def _fault(name, node, finding, description, pair, **more):
    return Fault(name, node, finding, description, pair[0], pair[1], tuple(more.get("breaks", ())),
                 more.get("quiet", ""), tuple(more.get("also", ())))


# Probe patterns shared by several faults (see Fault.breaks), measured on w1.
_W1_ROUTING = (  # w1 forwards nothing: its pods reach nothing off the bridge, nothing reaches its pods
    "pod-outside:{pod}", "pod-pod-cross-node:{pod}->*", "pod-pod-cross-node:*->{pod}",
    "clusterip:{pod}->default/kubernetes:*", "clusterip:{pod}->kube-system/kube-dns:*",
    "clusterip:*->default/hello-world-service:*", "clusterip:*->default/hello-world-single:*",
    "nodeport:outside->*:30001", "nodeport:outside->*:30002", "pod-dns:{pod}:*", "pod-dns-fixed-port:{pod}",
)
_W1_CUT_OFF = (  # w1 cannot exchange VXLAN packets with its peers
    "pod-pod-cross-node:{pod}->*", "pod-pod-cross-node:*->{pod}",
    "clusterip:*->default/hello-world-service:*", "clusterip:*->default/hello-world-single:*",
    "!clusterip:{pod}->default/hello-world-single:*", "clusterip:{pod}->kube-system/kube-dns:*",
    "hostnet-dns:*:ClusterFirstWithHostNet:*", "nodeport:outside->*:30001", "nodeport:outside->*:30002",
    "!nodeport:outside->{node}:30002", "pod-dns:{pod}:*", "pod-dns-fixed-port:{pod}",
)
_PEER_CUT_OFF = (  # w1 and the next node cannot reach each other's pods
    "pod-pod-cross-node:{pod}->{peer_pod}", "pod-pod-cross-node:{peer_pod}->{pod}",
    "clusterip:{pod}->default/hello-world-service:*", "clusterip:{peer_pod}->default/hello-world-service:*",
    "clusterip:{peer_pod}->default/hello-world-single:*", "nodeport:outside->{node}:30001",
    "nodeport:outside->{peer}:30001", "nodeport:outside->{peer}:30002",
)

FAULTS = (
    _fault("bridge-nf-off", "w1", "SYSCTL-BRIDGE-NF-CALL-IPTABLES-OFF",
           "br_netfilter's bridge-nf-call-iptables is 0 (module reloaded, or a sysctl.d file of the distro wins), "
           "so bridged pod traffic skips iptables and a ClusterIP whose endpoint is on the same bridge breaks "
           "(seed 000 sections 5.1.1 and 5.3)",
           _sysctl_fault("net.bridge.bridge-nf-call-iptables", 0),
           breaks=("clusterip:{pod}->default/hello-world-service:*", "clusterip:{pod}->default/hello-world-single:*")),
    _fault("ip-forward-off", "w1", "SYSCTL-IP-FORWARD-OFF",
           "net.ipv4.ip_forward is 0 (a reboot without a persisted sysctl), so the node routes nothing between "
           "cni0, flannel.1 and eth0 (seed 000 section 5.1.1)",
           _sysctl_fault("net.ipv4.ip_forward", 0), breaks=_W1_ROUTING),
    _fault("firewalld-default-zone", "w1", "FIREWALLD-BLOCKING",
           "firewalld comes back with the package's default zones (the configuration was reset or reinstalled) "
           "and is restarted: VXLAN, kubelet, NodePorts and masquerade are closed, the pod interfaces are no "
           "longer trusted, and the restart flushed NETMEND-FORWARD (seed 000 section 5.1.2)",
           (firewalld_default_zone_inject, firewalld_default_zone_recover),
           breaks=("pod-pod-same-node:{pod}->*", "pod-pod-cross-node:{pod}->*", "pod-pod-cross-node:*->{pod}",
                   "pod-outside:{pod}", "clusterip:{pod}->kube-system/kube-dns:*",
                   "clusterip:*->default/hello-world-service:*", "clusterip:*->default/hello-world-single:*",
                   "!clusterip:{pod}->default/hello-world-single:*", "clusterip:*->default/hello-hostnet:*",
                   "!clusterip:{pod}->default/hello-hostnet:*", "hostnet-dns:*:ClusterFirstWithHostNet:*",
                   "nodeport:outside->*", "!nodeport:outside->{node}:30002", "!nodeport:outside->{node}:30003",
                   "pod-dns:{pod}:*", "pod-dns-fixed-port:{pod}"),
           also=("FORWARD-ACCEPTS-MISSING",)),
    _fault("forward-drop", "w1", "FORWARD-POLICY-DROP",
           "the filter FORWARD policy is DROP (Docker sets it at start) and netmend's NETMEND-FORWARD jump is gone, "
           "as after a reboot that lost it (seed 000 section 4)",
           (forward_drop_inject, forward_drop_recover), breaks=(*_W1_ROUTING, "pod-pod-same-node:{pod}->*")),
    _fault("stale-dnat-pod", "w2", "DNAT-STALE-POD-IP",
           "kube-proxy on the node missed an endpoint update: hello-world-single's KUBE-SEP DNAT still points at "
           "the pod IP its pod had before it was rescheduled (seed 000 section 5.1.3)",
           _stale_dnat("hello-world-single"),
           breaks=("clusterip:{pod}->default/hello-world-single:*", "nodeport:outside->{node}:30002")),
    _fault("stale-dnat-hostnet", "w2", "DNAT-STALE-HOST-IP",
           "hello-hostnet's hostNetwork endpoint moved to a new host IP and kube-proxy on the node still DNATs to "
           "the old one, 198.51.100.112:8081 (seed 000 section 5.1.3)",
           _stale_dnat("hello-hostnet"),
           breaks=("clusterip:{pod}->default/hello-hostnet:*", "nodeport:outside->{node}:30003")),
    _fault("resolv-dead-nameserver", "w2", "RESOLV-NAMESERVER-DEAD",
           f"the node's /etc/resolv.conf names the DHCP server that handed out the lease, {DEAD_NAMESERVER}, "
           "which is gone (seed 000 section 5.1.4)",
           _file_fault(lambda ctx: "/etc/resolv.conf", _dead_nameserver), breaks=("node-dns:{node}",)),
    _fault("coredns-loopback", "cp1", "COREDNS-LOOPBACK-UPSTREAM",
           f"the Corefile forwards to {LOOPBACK_UPSTREAM}, systemd-resolved's stub copied from the host's "
           "resolv.conf, which inside the CoreDNS pod is nobody: names outside the cluster fail "
           "(seed 000 section 5.1.4)",
           (coredns_loopback_inject, coredns_loopback_recover), breaks=("pod-dns:*:outside.test",)),
    _fault("pod-resolv-no-cluster-dns", "w2", "POD-RESOLV-NO-CLUSTER-DNS",
           "the netcheck pod's resolv.conf is the node's (a pod created with dnsPolicy Default, or a kubelet "
           "without clusterDNS), so cluster names do not resolve (seed 000 section 5.1.4)",
           _file_fault(_netcheck_resolv, _node_resolv), breaks=("pod-dns:{pod}:*", "!pod-dns:{pod}:outside.test")),
    _fault("hostnet-no-clusterfirst", "w1", "HOSTNET-POD-DNS-POLICY",
           "hello-hostnet's resolv.conf is the host's: a hostNetwork pod without dnsPolicy "
           "ClusterFirstWithHostNet cannot resolve cluster names (seed 000 section 4)",
           _file_fault(_hostnet_resolv, _node_resolv), breaks=("hostnet-dns:*:ClusterFirstWithHostNet:*",)),
    _fault("subnet-env-mismatch", "w2", "FLANNEL-SUBNET-ENV-MISMATCH",
           "/run/flannel/subnet.env names another subnet than the node's lease (flanneld restarted with a lost "
           "lease, or a restored file), so the CNI plugin would address new pods wrongly (seed 003 section 3)",
           _file_fault(lambda ctx: "/run/flannel/subnet.env", _other_subnet_env),
           quiet="only pods created after it are hit (the CNI plugin reads subnet.env when it adds a pod); the "
                 "lab's pods keep their addresses"),
    _fault("cni0-address", "w2", "CNI0-ADDRESS-MISMATCH",
           "cni0 holds an address of another subnet (the node got a new lease and the old bridge stayed: "
           "\"cni0 already has an IP address different from ...\"), so its pods lose their gateway "
           "(seed 003 section 3)",
           (cni0_address_inject, cni0_address_recover),
           breaks=("pod-pod-cross-node:{pod}->*", "pod-pod-cross-node:*->{pod}", "pod-outside:{pod}",
                   "clusterip:{pod}->*", "clusterip:*->default/hello-world-service:*", "nodeport:outside->*:30001",
                   "pod-dns:{pod}:*", "pod-dns-fixed-port:{pod}")),
    _fault("flannel-mtu", "w1", "FLANNEL-VXLAN-MTU",
           f"flannel.1 has MTU {WRONG_MTU} instead of the underlay's 1500 - 50 (set by hand for an old "
           "encapsulation, or the underlay's MTU changed after flanneld started), so pods (MTU 1450) send packets "
           "flannel.1 must fragment or drop (seed 003 section 3)",
           (flannel_mtu_inject, flannel_mtu_recover),
           quiet="the probes send small packets; only packets above the MTU are hit"),
    _fault("flannel-vni", "w1", "FLANNEL-VXLAN-VNI",
           "flannel.1 was recreated with VNI 2 (a flanneld started with another network config), so its peers "
           "drop its VXLAN packets (seed 003 section 3)",
           _flannel_setting("id", 2), breaks=_W1_CUT_OFF),
    _fault("flannel-port", "w1", "FLANNEL-VXLAN-PORT",
           "flannel.1 was recreated with the IANA VXLAN port 4789 instead of flannel's 8472 (a flanneld with the "
           "kernel's default Port), so it neither reaches nor hears its peers (seed 003 section 3)",
           _flannel_setting("port", 4789), breaks=_W1_CUT_OFF),
    _fault("peer-route-missing", "w1", "FLANNEL-PEER-ROUTE-MISSING",
           "the route to the next peer's pod subnet via its VTEP is gone (deleted by hand, or flanneld missed the "
           "lease event) (seed 003 section 3)",
           (peer_route_inject, peer_route_recover), breaks=_PEER_CUT_OFF),
    _fault("peer-neigh-missing", "w1", "FLANNEL-PEER-NEIGH-MISSING",
           "the permanent neighbour entry of the next peer's VTEP on flannel.1 is gone, and with nolearning "
           "nothing resolves it (seed 003 section 3)",
           (peer_neigh_inject, peer_neigh_recover), breaks=_PEER_CUT_OFF),
    _fault("peer-fdb-missing", "w1", "FLANNEL-PEER-FDB-MISSING",
           "the fdb entry that sends the next peer's VtepMAC to its node IP is gone, so VXLAN frames for it have "
           "no destination (seed 003 section 3)",
           (peer_fdb_inject, peer_fdb_recover), breaks=_PEER_CUT_OFF),
    _fault("masquerade-missing", "w2", "MASQUERADE-MISSING",
           "flannel's MASQUERADE rule for the pod CIDR is gone from FLANNEL-POSTRTG (an iptables flush that "
           "flanneld did not repair), also from the rules kube-proxy's stand-in re-applies (seed 003 section 3)",
           (masquerade_missing_inject, masquerade_missing_recover),
           quiet="firewalld's public zone masquerades too (netmend's firewall role turns masquerade on, so pod "
                 "traffic to outside is still SNATed to the node's address); without firewalld pod-outside breaks"),
    _fault("dns-conntrack-stale", "w2", "CONNTRACK-STALE-DNS",
           "a UDP conntrack entry for the netcheck pod's fixed-port DNS flow to the cluster DNS still holds the "
           "DNAT to the DNS pod's old IP (the endpoint changed and nobody deleted the flow), so that flow keeps "
           "going to a dead endpoint while new flows work (field guide failure mode 10)",
           (dns_conntrack_stale_inject, dns_conntrack_stale_recover), breaks=("pod-dns-fixed-port:{pod}",)),
    _fault("kube-proxy-nftables-leftovers", "w1", "KUBE-PROXY-MODE-LEFTOVERS",
           "kube-proxy went back from nftables to iptables mode without `kube-proxy --cleanup`: its tables stay, "
           "and their last view of the cluster DNS (no endpoints yet) rejects the node's own DNS queries to it "
           "before iptables DNATs them (field guide failure mode 9)",
           (nftables_leftovers_inject, nftables_leftovers_recover),
           breaks=("hostnet-dns:{hostnet}:ClusterFirstWithHostNet:*",)),
)
BY_NAME = {f.name: f for f in FAULTS}


# --------------------------------------------------------------------------- state and commands


def load():
    try:
        return json.loads(STATE.read_text())["active"]
    except (OSError, ValueError, KeyError):
        return []


def _store(active):
    STATE.parent.mkdir(parents=True, exist_ok=True)
    tmp = STATE.with_name(f".{STATE.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"active": active}, indent=2) + "\n")
    tmp.replace(STATE)


def _lab():
    state = topology.require_up()
    cluster, variables = load_cluster(state["inventory"])
    return state, cluster, variables


def _check_name(name):
    if name not in BY_NAME:
        raise FaultError(f"unknown fault {name!r}; the catalog has: {', '.join(BY_NAME)}")
    return BY_NAME[name]


def inject(name, node=None, log=print):
    """Inject a fault on node (default: the fault's own); returns its record."""
    fault = _check_name(name)
    state, cluster, variables = _lab()
    node = node or fault.node
    if node not in state["nodes"]:
        raise FaultError(f"unknown node {node!r}; the lab has: {', '.join(state['nodes'])}")
    active = load()
    if any(a["name"] == name and a["node"] == node for a in active):
        raise FaultError(f"fault {name} is already active on {node}: `python -m lab recover {name}` first")
    ctx = Ctx(state, cluster, variables, node)
    try:
        fault.inject(ctx)
    except BaseException as exc:
        if ctx.record:  # changed something, maybe: put it back as far as possible
            try:
                fault.recover(ctx)
            except Exception as again:  # report both; the first error is the one that matters
                raise LabError(f"injecting {name} on {node} failed ({exc}); undoing it failed too: {again}") from exc
        raise
    entry = {"name": name, "node": node, "since": datetime.now(UTC).isoformat(timespec="seconds"),
             "record": ctx.record}
    _store([*active, entry])
    log(f"lab: injected {name} on {node} (expect finding {', '.join(fault.findings)})")
    return entry


def recover(names=(), node=None, log=print):
    """Recover the named active faults (all of them when names is empty), newest first."""
    for name in names:
        _check_name(name)
    active = load()
    if node is not None and node not in {a["node"] for a in active} | set((topology.load_state() or {})
                                                                           .get("nodes", {})):
        raise FaultError(f"unknown node {node!r}")
    chosen = [a for a in active if (not names or a["name"] in names) and (node is None or a["node"] == node)]
    missing = [n for n in names if not any(a["name"] == n for a in chosen)]
    if missing:
        now = ", ".join(f"{a['name']} on {a['node']}" for a in active) or "none"
        raise FaultError(f"not active: {', '.join(missing)}{f' on {node}' if node else ''} (active: {now})")
    if not chosen:
        log("lab: no fault is active")
        return []
    state, cluster, variables = _lab()
    done = []
    for entry in reversed(chosen):
        ctx = Ctx(state, cluster, variables, entry["node"], entry["record"])
        BY_NAME[entry["name"]].recover(ctx)
        _store([a for a in load() if (a["name"], a["node"]) != (entry["name"], entry["node"])])
        done.append(entry)
        log(f"lab: recovered {entry['name']} on {entry['node']}")
    return done


def catalog(inventory):
    """The catalog as dicts, with the probe patterns expanded for each fault's default node."""
    cluster, _ = load_cluster((topology.load_state() or {}).get("inventory") or inventory)
    rows = []
    for f in FAULTS:
        known = f.node in {n.name for n in cluster.nodes}
        rows.append({"name": f.name, "node": f.node, "finding": f.finding, "also": list(f.also),
                     "description": f.description,
                     "breaks": f.patterns(cluster, f.node) if known else list(f.breaks), "quiet": f.quiet})
    return rows
