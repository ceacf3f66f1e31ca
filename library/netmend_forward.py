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
    FORWARD. It accepts what kube-proxy's KUBE-FORWARD and flannel's FLANNEL-FWD accept: traffic from and
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
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author: netmend
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

import ipaddress  # noqa: E402 - Ansible modules put DOCUMENTATION first

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.netmend.iptables import (  # noqa: E402
    IptablesSaveError,
    Table,
    parse_save,
    parse_version,
    restore_payload,
)
from ansible.module_utils.netmend.iptables import forward_accept_rules as desired  # noqa: E402

LOCK_WAIT = "5"
MAX_CHAIN = 28  # iptables chain names are at most 28 characters


def view(table, chain):
    """The text a person compares: FORWARD's policy and rules, and netmend's chain."""
    lines = [f":FORWARD {table.policies.get('FORWARD', 'ACCEPT')}", *table.chain_rules("FORWARD")]
    if chain in table.policies:
        lines += [f":{chain} -", *table.chain_rules(chain)]
    return "\n".join(lines) + "\n"


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
    try:
        cidr = str(ipaddress.ip_network(p["pod_cidr"], strict=True))
    except ValueError:
        module.fail_json(msg=f"pod_cidr: {p['pod_cidr']!r} is not a network in CIDR form such as 10.244.0.0/16")
    if not p["chain"].startswith("NETMEND-") or len(p["chain"]) > MAX_CHAIN:
        module.fail_json(msg=f"chain: {p['chain']!r} must start with NETMEND- and be at most 28 characters")
    env = {"LC_ALL": "C"}
    iptables = module.get_bin_path("iptables", required=True)
    save_bin = module.get_bin_path("iptables-save", required=True)
    restore_bin = module.get_bin_path("iptables-restore", required=True)
    _rc, out, _err = module.run_command([iptables, "-V"], environ_update=env)
    try:
        _, backend = parse_version(out)
        _rc, out, _err = module.run_command([save_bin, "-t", "filter"], check_rc=True, environ_update=env)
        table = parse_save(out).get("filter") or Table("filter", {"INPUT": "ACCEPT", "FORWARD": "ACCEPT",
                                                                   "OUTPUT": "ACCEPT"})
    except IptablesSaveError as exc:
        module.fail_json(msg=f"cannot read the filter table: {exc}")

    before = view(table, p["chain"])
    after_table = Table("filter", dict(table.policies), list(table.rules))
    commands = []
    if p["mode"] == "policy_accept":
        if table.policies.get("FORWARD", "ACCEPT") != "ACCEPT":
            after_table.policies["FORWARD"] = "ACCEPT"
            commands.append(("cmd", [iptables, "-w", LOCK_WAIT, "-P", "FORWARD", "ACCEPT"]))
    else:
        rules, jump = desired(p["chain"], cidr)
        chain_ok = p["chain"] in table.policies and table.chain_rules(p["chain"]) == rules
        jump_ok = jump in table.chain_rules("FORWARD")
        if not (chain_ok and jump_ok):
            payload = restore_payload("filter", {p["chain"]: rules}, [jump], table)
            commands.append(("restore", payload))
            after_table.policies[p["chain"]] = "-"
            after_table.rules = [r for r in after_table.rules if r[0] != p["chain"]]
            if not jump_ok:
                after_table.rules.insert(0, ("FORWARD", jump))
            after_table.rules += [(p["chain"], r) for r in rules]
    after = view(after_table, p["chain"])
    changed = bool(commands)
    if changed and not module.check_mode:
        for kind, what in commands:
            if kind == "cmd":
                module.run_command(what, check_rc=True, environ_update=env)
            else:
                module.run_command([restore_bin, "-w", LOCK_WAIT, "--noflush"], data=what, binary_data=True,
                                   check_rc=True, environ_update=env)
    module.exit_json(changed=changed, backend=backend, policy=after_table.policies.get("FORWARD", "ACCEPT"),
                     rules=after_table.chain_rules(p["chain"]),
                     diff={"before": before, "after": after, "before_header": "iptables filter (before)",
                           "after_header": "iptables filter (after)"})


if __name__ == "__main__":
    main()
