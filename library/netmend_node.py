#!/usr/bin/python
"""Ansible module: audit a Kubernetes node's networking in one call, and fix what drifted."""

DOCUMENTATION = r"""
---
module: netmend_node
short_description: Audit (check mode) or remediate (normal run) a Kubernetes node's networking
description:
  - Gathers the node's state in one pass (C(/proc/sys), the sysctl.d files, C(iptables-save),
    C(ip -j -d link), C(ip -j addr/route/neigh), C(bridge -j fdb), firewalld, C(/run/flannel/subnet.env),
    resolv.conf files, the Corefile, C(conntrack -L -p udp), a DNS query to each of the node's nameservers,
    and for kube-proxy's mode C(ip6tables-save), C(nft list tables), C(ipset save), C(/proc/net/ip_vs)),
    compares it with O(want) and reports findings with stable IDs (docs/findings/<ID>.md).
  - In check mode nothing changes and the findings are the audit; C(--diff) shows each planned fix.
    In a normal run every fixable finding is fixed, then the node is audited again; a fix that did not
    take fails the task.
  - Fixes touch only what Kubernetes or netmend owns. Files are backed up before they are rewritten;
    iptables changes are one C(iptables-restore -w --noflush) transaction per fix, in KUBE-*, FLANNEL-*
    and NETMEND-* chains only.
  - O(want) is computed once on the controller for the whole cluster (roles/health) and validated here
    before anything runs; every bad field is named.
options:
  want:
    description:
      - The node's desired state. Keys C(node), C(address), C(pod_cidr), C(service_cidr), C(cluster_dns),
        C(cluster_domain) (required); C(sysctls), C(sysctl_file), C(modules_file), C(modules_text);
        C(firewall) (mode, zone, trusted_zone, ports, trusted_interfaces, trusted_sources, masquerade,
        state_file); C(forward) (mode, chain); C(flannel) (backend, vni, port, mtu, ip_masq);
        C(leases) (node, subnet, public_ip, vtep_mac for every node); C(services) (namespace, name,
        port_name, protocol, cluster_ip, port, endpoints); C(dns) (corefile_path, corefile,
        node_nameservers, pods, probe_timeout); C(kube_proxy) (mode).
    type: dict
    required: true
  checks:
    description: The checks to run (default all), in the order fixes run.
    type: list
    elements: str
    choices: [kernel, firewall, forward, masquerade, flannel, kube-proxy, kube-proxy-mode, node-dns, coredns, pod-dns,
              conntrack]
  backup:
    description: Back up every file before it is rewritten (Ansible's backup_local naming).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author: netmend
"""

EXAMPLES = r"""
- name: Health | Audit the node
  netmend_node:
    want: "{{ _health_want }}"
  check_mode: true
"""

RETURN = r"""
findings:
  description: What was wrong before the run (Finding fields; docs/findings/<ID>.md).
  type: list
  elements: dict
  returned: always
checks:
  description: The finding IDs this node was checked for (one JUnit test case each).
  type: list
  elements: str
  returned: always
actions:
  description: The fixes, run (normal run) or planned (check mode).
  type: list
  elements: str
  returned: always
remaining:
  description: Findings after the fixes (normal run); those without an automatic fix stay here.
  type: list
  elements: dict
  returned: always
skipped_checks:
  description:
    - Checks that could not run here, with the reason. (Not C(skipped), which Ansible reserves: a
      non-empty C(skipped) would make the task itself count as skipped.)
  type: list
  elements: str
  returned: always
backups:
  description: Backup files made.
  type: list
  elements: str
  returned: always
"""

import json  # noqa: E402 - Ansible modules put DOCUMENTATION first
import os  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import asdict  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.netmend import firewalld, iproute, resolvconf  # noqa: E402
from ansible.module_utils.netmend.conntrack import parse_conntrack  # noqa: E402
from ansible.module_utils.netmend.drift import CHECKS, audit, check_want, owned_only  # noqa: E402
from ansible.module_utils.netmend.errors import ProblemsError  # noqa: E402
from ansible.module_utils.netmend.files import read_text, replace_file, write_atomic  # noqa: E402
from ansible.module_utils.netmend.iptables import IptablesSaveError, parse_save  # noqa: E402
from ansible.module_utils.netmend.proxymode import StateError, read_snapshot  # noqa: E402
from ansible.module_utils.netmend.sysctl import CONF_SUFFIX, ETC_SYSCTL_CONF, SYSCTL_DIRS, proc_path  # noqa: E402

ENV = {"LC_ALL": "C"}
LOCK_WAIT = "5"
IPTABLES_CHECKS = ("forward", "masquerade", "kube-proxy", "kube-proxy-mode")


class Node:
    def __init__(self, module):
        self.module = module
        self.backups = []

    def run(self, argv, data=None, check=True):
        rc, out, err = self.module.run_command(argv, data=data, binary_data=data is not None, environ_update=ENV)
        if check and rc != 0:
            self.module.fail_json(msg=f"{' '.join(argv)} failed (rc {rc}): {(err or out).strip()}")
        return rc, out, err

    def tool(self, name):
        return self.module.get_bin_path(name)

    # Gathering: one pass over everything the checks read.

    def gather(self, want, checks):
        state = {}
        if "kernel" in checks:
            state.update(self._kernel(want))
        if any(c in checks for c in IPTABLES_CHECKS):
            state.update(self._iptables())
        if "firewall" in checks and (want.get("firewall") or {}).get("mode", "unmanaged") != "unmanaged":
            state["firewalld"] = self._firewalld()
        if "flannel" in checks:
            state.update(self._links())
        if any(c in checks for c in ("node-dns", "pod-dns", "coredns")):
            state.update(self._dns(want, checks))
        if "conntrack" in checks:
            state.update(self._conntrack(want))
        if "kube-proxy-mode" in checks and (want.get("kube_proxy") or {}).get("mode"):
            state["proxy"] = self._proxy(state.get("iptables"))
        return state

    def _kernel(self, want):
        proc = {}
        for key in (want.get("sysctls") or {}):
            text = read_text(proc_path(key))
            proc[key] = text.strip() if text is not None else None
        files = {}
        for entry in (*SYSCTL_DIRS, ETC_SYSCTL_CONF):
            if os.path.isdir(entry):
                for name in sorted(os.listdir(entry)):
                    path = os.path.join(entry, name)
                    if name.endswith(CONF_SUFFIX) and not name.startswith(".") and os.path.isfile(path):
                        files[path] = read_text(path)
            elif os.path.isfile(entry):
                files[entry] = read_text(entry)
        modules = read_text(want["modules_file"]) if want.get("modules_file") else None
        return {"proc": proc, "bridge_nf_present": os.path.isdir("/proc/sys/net/bridge"), "sysctl_files": files,
                "modules_file": modules}

    def _iptables(self):
        save = self.tool("iptables-save")
        if not save:
            return {"iptables": None, "iptables_error": "iptables-save is not installed"}
        _rc, out, _err = self.run([save])
        try:
            return {"iptables": parse_save(out)}
        except IptablesSaveError as exc:
            self.module.fail_json(msg=f"iptables-save printed what netmend cannot read, nothing was changed: {exc}")
        return {}

    def _firewalld(self):
        fwcmd = self.tool("firewall-cmd")
        if not fwcmd:
            return None
        rc, _out, _err = self.run([fwcmd, "--state"], check=False)
        if rc != 0:
            return {"running": False}
        default = self.run([fwcmd, "--get-default-zone"])[1].strip()
        try:
            zones = firewalld.parse_zones(self.run([fwcmd, "--list-all-zones"])[1])
        except ProblemsError as exc:
            self.module.fail_json(msg=f"firewall-cmd --list-all-zones: {exc}")
        return {"running": True, "default_zone": default, "zones": zones}

    def _links(self):
        out = {}
        try:
            out["links"] = iproute.parse_links(self.run(["ip", "-j", "-d", "link", "show"])[1])
            out["addrs"] = iproute.parse_addrs(self.run(["ip", "-j", "addr", "show"])[1])
            out["routes"] = iproute.parse_routes(self.run(["ip", "-j", "route", "show"])[1])
            out["neighs"] = iproute.parse_neighs(self.run(["ip", "-j", "neigh", "show"])[1])
            out["fdb"] = iproute.parse_fdb(self.run(["bridge", "-j", "fdb", "show"])[1])
        except ProblemsError as exc:
            self.module.fail_json(msg=f"cannot read the node's links: {exc}")
        out["subnet_env"] = read_text("/run/flannel/subnet.env")
        return out

    def _dns(self, want, checks):
        dns = want.get("dns") or {}
        text = read_text("/etc/resolv.conf")
        link = os.path.realpath("/etc/resolv.conf") if os.path.islink("/etc/resolv.conf") else None
        state = {"resolv": {"text": text, "link": link}, "alive": {}}
        if "node-dns" in checks and text is not None:
            try:
                servers = [ns.address for ns in resolvconf.parse(text, "/etc/resolv.conf").nameservers]
            except resolvconf.ResolvConfError:
                servers = []
            timeout = float(dns.get("probe_timeout", 1.0))
            with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
                answers = list(pool.map(lambda s: resolvconf.nameserver_answers(s, timeout=timeout), servers))
            state["alive"] = dict(zip(servers, answers, strict=True))
        if "coredns" in checks and dns.get("corefile_path"):
            state["corefile"] = read_text(dns["corefile_path"])
            resolved = read_text(resolvconf.RESOLVED_RESOLV_CONF)
            state["corefile_resolv"] = {k: v for k, v in (("/etc/resolv.conf", text),
                                                          (resolvconf.RESOLVED_RESOLV_CONF, resolved)) if v is not None}
        if "pod-dns" in checks:
            state["pod_resolv"] = {pod["path"]: read_text(pod["path"]) for pod in dns.get("pods") or []}
        return state

    def _proxy(self, ipv4):
        try:
            return read_snapshot(lambda argv: self.run(argv, check=False), self.tool, ipv4)
        except (StateError, IptablesSaveError) as exc:
            self.module.fail_json(msg=f"cannot read kube-proxy's state, nothing was changed: {exc}")
        return None

    def _conntrack(self, want):
        binary = self.tool("conntrack")
        if not binary:
            return {"conntrack": None, "conntrack_error": "conntrack (conntrack-tools) is not installed"}
        rc, out, err = self.run([binary, "-L", "-p", "udp", "--orig-dst", want["cluster_dns"]], check=False)
        if rc != 0:
            return {"conntrack": None, "conntrack_error": f"conntrack -L failed: {(err or out).strip()}"}
        try:
            return {"conntrack": parse_conntrack(out, err)}
        except ProblemsError as exc:
            self.module.fail_json(msg=f"conntrack -L printed something netmend cannot read: {exc}")
        return {}

    # Acting.

    def apply(self, action):
        if not owned_only(action):
            self.module.fail_json(msg=f"refusing {action.describe()}: it touches a chain netmend does not own")
        kind = action.kind
        if kind == "proc":
            with open(action.target, "w", encoding="utf-8") as handle:
                handle.write(str(action.payload))
        elif kind == "file":
            backup = replace_file(self.module, action.target, action.payload, mode=_mode(action.target, action.mode),
                                  backup=self.module.params["backup"])
            if backup:
                self.backups.append(backup)
        elif kind == "iptables":
            restore = "ip6tables-restore" if action.family == "ipv6" else "iptables-restore"
            self.run([restore, "-w", LOCK_WAIT, "--noflush"], data=action.payload)
        elif kind in ("ip", "bridge"):
            self.run([kind, "-batch", "-"], data="\n".join(action.payload) + "\n")
        elif kind == "command":
            for argv in action.payload:
                self.run(self._service(argv) if argv[0] == "@service" else argv)
        elif kind == "firewalld":
            self._firewalld_fix(action.payload)

    def _service(self, argv):
        name, verb = argv[1], argv[2]
        if os.path.isdir("/run/systemd/system") and self.tool("systemctl"):
            return [self.tool("systemctl"), verb, name]
        return [self.tool("service") or "service", name, verb]

    def _firewalld_fix(self, payload):
        fwcmd = self.tool("firewall-cmd")
        path = payload.get("state_file") or "/var/lib/netmend/firewalld.json"
        try:
            owned = firewalld.load_owned(read_text(path), path)
        except ProblemsError as exc:
            self.module.fail_json(msg=str(exc))

        def list_zone(zname, permanent):
            return self.run([fwcmd, *(["--permanent"] if permanent else []), f"--zone={zname}", "--list-all"])[1]

        argvs, new_owned, _before, _after = firewalld.reconcile(payload["want"], owned, list_zone)
        for argv in argvs:
            self.run([fwcmd, *argv])
        if new_owned != owned:
            write_atomic(self.module, path, json.dumps(new_owned, indent=2, sort_keys=True) + "\n", 0o644)


def _mode(path, default):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return default


def _finding(f):
    return dict(asdict(f), evidence=list(f.evidence))


def main():
    module = AnsibleModule(
        argument_spec={
            "want": {"type": "dict", "required": True},
            "checks": {"type": "list", "elements": "str", "choices": list(CHECKS)},
            "backup": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    want = module.params["want"]
    checks = module.params["checks"] or list(CHECKS)
    try:
        check_want(want)
    except ProblemsError as exc:
        module.fail_json(msg="want is not valid, nothing was checked or changed: " + str(exc),
                         problems=[{"field": f, "problem": m} for f, m in exc.problems])
    node = Node(module)
    try:
        before = audit(node.gather(want, checks), want, checks)
    except ProblemsError as exc:
        module.fail_json(msg=f"cannot audit, nothing was changed: {exc}")
    result = {"changed": bool(before.actions), "findings": [_finding(f) for f in before.findings],
              "checks": before.checks, "actions": [a.describe() for a in before.actions],
              "skipped_checks": [f"{c}: {why}" for c, why in before.skipped], "remaining": [], "backups": [],
              "diff": [a.diff() for a in before.actions]}
    if module.check_mode or not before.actions:
        result["remaining"] = result["findings"]
        module.exit_json(**result)
    for action in before.actions:
        node.apply(action)
    after = audit(node.gather(want, checks), want, checks)
    result["remaining"] = [_finding(f) for f in after.findings]
    result["backups"] = node.backups
    fixable = {a.finding for a in before.actions}
    stuck = sorted({f.id for f in after.findings if f.id in fixable})
    if stuck:
        module.fail_json(msg=f"the fix did not take for {', '.join(stuck)}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
