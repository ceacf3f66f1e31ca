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
        C(cluster_domain) (required); C(sysctls), C(sysctl_file), C(sysctl_scan), C(sysctl_live), C(modules_file),
        C(modules_text);
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
    choices: [kernel, firewall, forward, masquerade, flannel, kube-proxy, kube-proxy-chains, kube-proxy-mode, node-dns,
              coredns, pod-dns, conntrack]
  backup:
    description: Back up every file before it is rewritten (Ansible's backup_local naming).
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    platforms: linux
  check_mode:
    support: full
  diff_mode:
    support: full
author: netmend maintainers (!UNKNOWN)
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
    - Checks that could not run here, with the reason. (Not C(skipped), which Ansible reserves; a
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

from dataclasses import asdict  # noqa: E402 - Ansible modules put DOCUMENTATION first

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.checks import CHECKS, audit  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.errors import ProblemsError  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.facts import gather  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.modulehost import ModuleHost  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.plan import ExecutionError, execute  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.want import check_want  # noqa: E402


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
    host = ModuleHost(module, backup=module.params["backup"])
    before = audit(gather(host, want, checks), want, checks)
    result = {"changed": bool(before.actions), "findings": [_finding(f) for f in before.findings],
              "checks": before.checks, "actions": [a.describe() for a in before.actions],
              "skipped_checks": [f"{c}: {why}" for c, why in before.skipped], "remaining": [], "backups": [],
              "diff": [a.diff() for a in before.actions]}
    if module.check_mode or not before.actions:
        result["remaining"] = result["findings"]
        module.exit_json(**result)
    try:
        result["backups"] = execute(before.actions, host, host.firewalld)
    except ExecutionError as exc:
        module.fail_json(msg=f"the fix stopped: {exc}", done=exc.done, rolled_back=exc.rolled_back, **result)
    after = audit(gather(host, want, checks), want, checks)
    result["remaining"] = [_finding(f) for f in after.findings]
    fixable = {a.finding for a in before.actions}
    # A fix that did not take is planned again; a finding that stays with nothing to plan (a host file netmend
    # never edits, after netmend's own file was rewritten) is left in `remaining`.
    stuck = sorted({a.finding for a in after.actions if a.finding in fixable})
    if stuck:
        module.fail_json(msg=f"the fix did not take for {', '.join(stuck)}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
