#!/usr/bin/python
"""Ansible module: keep pod traffic forwarded whatever the FORWARD policy is."""

DOCUMENTATION = r"""
---
module: netmend_forward
short_description: Keep Kubernetes pod traffic forwarded when the FORWARD policy is DROP
description:
  - Docker sets the iptables FORWARD policy to DROP; without accept rules, cross-node pod traffic,
    pod-to-outside traffic and NodePorts whose endpoint is on another node are dropped
    (seed 000 section 4).
  - C(accept_pod_cidr) keeps netmend's own chain C(NETMEND-FORWARD) with one jump to it at the top of
    FORWARD. It accepts what kube-proxy's KUBE-FORWARD and flannel's FLANNEL-FWD accept; traffic from and
    to the pod CIDR, packets carrying kube-proxy's masquerade mark 0x4000 (a NodePort whose endpoint is
    on another node, hostNetwork endpoints included) and established replies. The policy is left as it is.
  - C(policy_accept) sets the FORWARD policy to ACCEPT (the seeds' C(iptables -P FORWARD ACCEPT)).
  - Changes are atomic (C(iptables-restore -w --noflush)) and touch only netmend's chain and its jump,
    never the host's own rules. Works with iptables-legacy and iptables-nft; the backend in use is returned.
options:
  mode:
    description: How forwarding is kept open.
    type: str
    choices: [accept_pod_cidr, policy_accept]
    default: accept_pod_cidr
  pod_cidr:
    description: The cluster pod CIDR, for example C(10.244.0.0/16).
    type: str
    required: true
  chain:
    description: netmend's own chain; must start with C(NETMEND-).
    type: str
    default: NETMEND-FORWARD
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
- name: Forward | Accept traffic from and to the pod CIDR
  netmend_forward:
    pod_cidr: 10.244.0.0/16

- name: Forward | Set the FORWARD policy to ACCEPT
  netmend_forward:
    mode: policy_accept
    pod_cidr: 10.244.0.0/16
"""

RETURN = r"""
backend:
  description: The iptables backend the node uses.
  type: str
  returned: always
  sample: nf_tables
policy:
  description: The FORWARD policy after the run.
  type: str
  returned: always
  sample: DROP
rules:
  description: The rules of netmend's chain after the run (accept_pod_cidr).
  type: list
  elements: str
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 - Ansible modules put DOCUMENTATION first
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.checks import audit  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.checks.forward import DEFAULT_FILTER, view  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.errors import ProblemsError  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.iptables import (  # noqa: E402
    IptablesSaveError,
    Table,
    parse_save,
    parse_version,
)
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.modulehost import ModuleHost  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.plan import ExecutionError, execute  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.want import check_forward  # noqa: E402


def main():
    module = AnsibleModule(
        argument_spec={
            "mode": {"type": "str", "choices": ["accept_pod_cidr", "policy_accept"], "default": "accept_pod_cidr"},
            "pod_cidr": {"type": "str", "required": True},
            "chain": {"type": "str", "default": "NETMEND-FORWARD"},
        },
        supports_check_mode=True,
    )
    p = module.params
    # The audit's want, reduced to what the forward check reads: the same judge for both.
    want = {"node": "this node", "pod_cidr": p["pod_cidr"], "forward": {"mode": p["mode"], "chain": p["chain"]}}
    try:
        check_forward(want)
    except ProblemsError as exc:
        module.fail_json(msg="; ".join(f"{f.rpartition('.')[2]}: {m}" for f, m in exc.problems))
    for tool in ("iptables", "iptables-save", "iptables-restore"):
        module.get_bin_path(tool, required=True)
    host = ModuleHost(module)
    _rc, out, _err = host.run(["iptables", "-V"])
    try:
        _, backend = parse_version(out)
        _rc, out, err = host.run(["iptables-save", "-t", "filter"])
        if _rc != 0:
            module.fail_json(msg=f"iptables-save -t filter failed: {(err or out).strip()}")
        table = parse_save(out).get("filter") or Table("filter", dict(DEFAULT_FILTER))
    except IptablesSaveError as exc:
        module.fail_json(msg=f"cannot read the filter table: {exc}")
    result = audit({"iptables": {"filter": table}}, want, ["forward"])
    actions = result.actions
    before = view(table, p["chain"])
    after_text = actions[0].after if actions else before
    if actions and not module.check_mode:
        try:
            execute(actions, host)
        except ExecutionError as exc:
            module.fail_json(msg=str(exc))
    if result.skipped:
        module.fail_json(msg="; ".join(f"{c}: {why}" for c, why in result.skipped))
    policy = "ACCEPT" if p["mode"] == "policy_accept" else table.policies.get("FORWARD", "ACCEPT")
    rules = [line for line in after_text.splitlines() if line.startswith(f"-A {p['chain']} ")]
    module.exit_json(changed=bool(actions), backend=backend, policy=policy, rules=rules,
                     findings=[f.id for f in result.findings],
                     diff={"before": before, "after": after_text, "before_header": "iptables filter (before)",
                           "after_header": "iptables filter (after)"})


if __name__ == "__main__":
    main()
