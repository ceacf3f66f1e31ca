#!/usr/bin/python
"""Ansible module: give a running firewalld exactly what a Kubernetes node needs."""

DOCUMENTATION = r"""
---
module: netmend_firewalld
short_description: Open a Kubernetes node's ports in firewalld and trust the pod network, keeping firewalld on
description:
  - With firewalld's default zone, pod traffic, VXLAN and NodePorts are rejected. This module opens
    C(ports) and enables masquerade in the node's zone, and binds the pod network's interfaces
    (C(cni0), C(flannel.1)) and the pod and service CIDRs to a trusted zone.
  - Only what netmend added is ever removed (recorded in C(state_file)); the operator's own services,
    ports, interfaces and rules stay as they are.
  - It judges with the audit's C(firewall) check (netmend_node), so what it changes is exactly what the
    audit reports (FIREWALLD-BLOCKING, FIREWALLD-NOT-PERSISTED, FIREWALLD-STALE-ENTRY) and a node it leaves
    alone audits clean. The runtime configuration (C(firewall-cmd --list-all-zones)) and the permanent one
    (C(firewall-cmd --permanent --list-all-zones)) are both judged, with netmend's record (C(state_file)).
  - Runtime and permanent configurations are changed separately, never with C(firewall-cmd --reload);
    a reload flushes every iptables rule on the node (firewalld 1.3 does), kube-proxy's and flannel's
    included, until they resync.
  - firewalld must be running (the firewall role starts it first). A stopped firewalld fails the module
    (in check mode it reports changed, since the role would start it); the audit reports no finding for a
    stopped firewalld, which blocks nothing, and never starts it.
options:
  zone:
    description: The zone of the node's own interface; empty means firewalld's default zone.
    type: str
    default: ""
  trusted_zone:
    description: The zone the pod network is bound to.
    type: str
    default: trusted
  ports:
    description: Ports to open in C(zone), as C(N/proto) or C(N-M/proto).
    type: list
    elements: str
    default: []
  trusted_interfaces:
    description: Interfaces bound to C(trusted_zone) (moved there from another zone if need be).
    type: list
    elements: str
    default: []
  trusted_sources:
    description: Networks bound to C(trusted_zone), such as the pod and service CIDRs.
    type: list
    elements: str
    default: []
  masquerade:
    description: Enable masquerade in C(zone) (disabling removes it only if netmend enabled it).
    type: bool
    default: true
  state_file:
    description: Where netmend records what it added.
    type: path
    default: /var/lib/netmend/firewalld.json
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
- name: Firewall | A worker with flannel VXLAN
  netmend_firewalld:
    ports: [10250/tcp, 10256/tcp, 30000-32767/tcp, 30000-32767/udp, 8472/udp]
    trusted_interfaces: [cni0, flannel.1]
    trusted_sources: [10.244.0.0/16, 10.96.0.0/12]
"""

RETURN = r"""
findings:
  description: The C(firewall) check's finding IDs before the run (docs/findings/<ID>.md), as the audit reports them.
  type: list
  elements: str
  returned: success
  sample: [FIREWALLD-BLOCKING]
zone:
  description: The node's zone (the default zone when C(zone) was empty).
  type: str
  returned: success
  sample: public
commands:
  description: The firewall-cmd calls made (or planned, in check mode), runtime first, then permanent.
  type: list
  elements: str
  returned: success
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - Ansible modules put DOCUMENTATION first
from ansible_collections.netmend.netmend.plugins.module_utils.netmend import firewalld  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.checks import audit  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.checks.firewall import wanted_zones  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.errors import ProblemsError  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.facts import gather  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.modulehost import ModuleHost  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.plan import ExecutionError, execute  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.want import check_firewall  # noqa: E402

OPTIONS = ("zone", "trusted_zone", "ports", "trusted_interfaces", "trusted_sources", "masquerade", "state_file")


def _problems(exc):
    return "; ".join(f"{f.rpartition('.')[2]}: {m}" for f, m in exc.problems)


def main():
    module = AnsibleModule(
        argument_spec={
            "zone": {"type": "str", "default": ""},
            "trusted_zone": {"type": "str", "default": "trusted"},
            "ports": {"type": "list", "elements": "str", "default": []},
            "trusted_interfaces": {"type": "list", "elements": "str", "default": []},
            "trusted_sources": {"type": "list", "elements": "str", "default": []},
            "masquerade": {"type": "bool", "default": True},
            "state_file": {"type": "path", "default": "/var/lib/netmend/firewalld.json"},
        },
        supports_check_mode=True,
    )
    p = module.params
    # The audit's want, reduced to what the firewall check reads: the same judge for both.
    want = {"node": "this node", "firewall": {"mode": "configured", **{k: p[k] for k in OPTIONS}}}
    try:
        check_firewall(want)  # the options first, before firewalld is asked
    except ProblemsError as exc:
        module.fail_json(msg=_problems(exc))
    if not module.get_bin_path("firewall-cmd"):
        module.fail_json(msg="firewall-cmd is not installed; install firewalld or use firewall_mode unmanaged")
    host = ModuleHost(module)
    facts = gather(host, want, ["firewall"])
    if "firewalld" in facts["errors"]:
        module.fail_json(msg=f"cannot read firewalld: {facts['errors']['firewalld']}")
    st = facts["firewalld"]
    # Not the check's judgement (a stopped firewalld blocks nothing, and the audit never starts it): the role
    # starts firewalld before this module runs, so here a stopped firewalld is a step skipped or to come.
    if not st["running"] and module.check_mode:
        module.exit_json(changed=True, zone=p["zone"], commands=[],
                         msg="firewalld is not running: it would be started, then configured")
    if not st["running"]:
        module.fail_json(msg="firewalld is not running; firewall_mode configured starts it before this module runs")
    result = audit(facts, want, ["firewall"])
    if result.skipped:
        module.fail_json(msg="; ".join(why for _check, why in result.skipped))
    want_z = wanted_zones(want["firewall"], st)
    zone = next(iter(want_z))
    ran = [argv for a in result.actions for argv in a.payload["commands"]]  # check mode: what would run
    if result.actions and not module.check_mode:
        ran = []
        try:
            execute(result.actions, host, lambda payload: ran.extend(host.firewalld(payload)))
        except ExecutionError as exc:
            module.fail_json(msg=str(exc))
    before, after = (result.actions[0].before, result.actions[0].after) if result.actions else \
        firewalld.view(want_z, {"runtime": st["zones"], "permanent": st["permanent"]})
    module.exit_json(changed=bool(result.actions), zone=zone, commands=["firewall-cmd " + " ".join(a) for a in ran],
                     findings=[f.id for f in result.findings],
                     diff={"before": before, "after": after,
                           "before_header": "firewalld (before)", "after_header": "firewalld (after)"})


if __name__ == "__main__":
    main()
