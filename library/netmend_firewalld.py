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
  - Runtime and permanent configurations are changed separately, never with C(firewall-cmd --reload);
    a reload flushes every iptables rule on the node (firewalld 1.3 does), kube-proxy's and flannel's
    included, until they resync.
  - firewalld must be running (the firewall role starts it first).
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
zone:
  description: The node's zone (the default zone when C(zone) was empty).
  type: str
  returned: success
  sample: public
commands:
  description: The firewall-cmd calls made (or planned, in check mode).
  type: list
  elements: str
  returned: success
"""

import json  # noqa: E402 - Ansible modules put DOCUMENTATION first

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.files import read_text, write_atomic  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.firewalld import (  # noqa: E402
    FirewalldError,
    check_want,
    load_owned,
    reconcile,
)


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
    env = {"LC_ALL": "C"}
    fwcmd = module.get_bin_path("firewall-cmd")
    if not fwcmd:
        module.fail_json(msg="firewall-cmd is not installed; install firewalld or use firewall_mode unmanaged")

    def firewall_cmd(args, check=True):
        rc, out, err = module.run_command([fwcmd, *args], environ_update=env)
        if check and rc != 0:
            module.fail_json(msg=f"firewall-cmd {' '.join(args)} failed (rc {rc}): {(err or out).strip()}")
        return rc, out

    try:
        want = check_want({**p, "zone": p["zone"] or "public"})  # the options first, before firewalld is asked
        rc, out = firewall_cmd(["--state"], check=False)
        if rc != 0 and module.check_mode:
            module.exit_json(changed=True, zone=p["zone"], commands=[],
                             msg="firewalld is not running: it would be started, then configured")
        if rc != 0:
            module.fail_json(msg=f"firewalld is not running ({out.strip() or 'no answer'}); "
                                 "firewall_mode configured starts it before this module runs")
        zone = p["zone"] or firewall_cmd(["--get-default-zone"])[1].strip()
        want = check_want({**p, "zone": zone})
        owned = load_owned(read_text(p["state_file"]), p["state_file"])

        def list_zone(zname, permanent):
            return firewall_cmd((["--permanent"] if permanent else []) + [f"--zone={zname}", "--list-all"])[1]

        all_changes, new_owned, before, after = reconcile(want, owned, list_zone)
    except FirewalldError as exc:
        module.fail_json(msg=str(exc))

    changed = bool(all_changes)
    if not module.check_mode:
        for argv in all_changes:
            firewall_cmd(argv)
        if new_owned != owned:
            write_atomic(module, p["state_file"], json.dumps(new_owned, indent=2, sort_keys=True) + "\n", 0o644)
    module.exit_json(changed=changed, zone=zone, commands=["firewall-cmd " + " ".join(a) for a in all_changes],
                     diff={"before": before, "after": after,
                           "before_header": "firewalld (before)", "after_header": "firewalld (after)"})


if __name__ == "__main__":
    main()
