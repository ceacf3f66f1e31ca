#!/usr/bin/python
"""Ansible module: read flannel's subnet leases from etcd (read-only)."""

DOCUMENTATION = r"""
---
module: netmend_flannel_leases
short_description: Read flannel's subnet leases from etcd
description:
  - Reads every key under C(<prefix>/subnets/) with C(etcdctl get --prefix -w json) (v3 API), as
    flanneld's etcd store keeps them (seed 003), and returns one lease per subnet with its public IP
    and VXLAN VtepMAC. Nothing is written; the audit reads the leases once and hands them to every node.
options:
  endpoints:
    description: etcd client URLs.
    type: list
    elements: str
    default: [http://127.0.0.1:2379]
  prefix:
    description: flannel's etcd prefix.
    type: str
    default: /coreos.com/network
  ca_file:
    description: CA certificate for TLS endpoints (C(--cacert)).
    type: path
  cert_file:
    description: Client certificate (C(--cert)).
    type: path
  key_file:
    description: Client key (C(--key)).
    type: path
  timeout:
    description: Seconds for etcdctl to connect and answer.
    type: int
    default: 5
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    platforms: linux
  check_mode:
    support: full
  diff_mode:
    support: none
author: netmend maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Health | Read the leases
  netmend_flannel_leases:
    endpoints: [http://198.51.100.11:2379]
"""

RETURN = r"""
leases:
  description: One per subnet, sorted, as {subnet, public_ip, backend, vtep_mac, vni}.
  type: list
  elements: dict
  returned: always
"""

import re  # noqa: E402 - Ansible modules put DOCUMENTATION first

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.flannel import (  # noqa: E402
    FlannelError,
    etcdctl_argv,
    parse_etcd_leases,
)

PREFIX = re.compile(r"^(/[A-Za-z0-9._-]+)+$")
ENDPOINT = re.compile(r"^https?://[^\s,/]+(:[0-9]{1,5})?/?$")


def main():
    module = AnsibleModule(
        argument_spec={
            "endpoints": {"type": "list", "elements": "str", "default": ["http://127.0.0.1:2379"]},
            "prefix": {"type": "str", "default": "/coreos.com/network"},
            "ca_file": {"type": "path"},
            "cert_file": {"type": "path"},
            "key_file": {"type": "path"},
            "timeout": {"type": "int", "default": 5},
        },
        supports_check_mode=True,
    )
    p = module.params
    problems = [f"endpoints: {url!r} is not accepted; accepted: http(s)://host:port"
                for url in p["endpoints"] if not ENDPOINT.match(url)]
    if not p["endpoints"]:
        problems.append("endpoints: is empty; accepted: etcd client URLs such as http://127.0.0.1:2379")
    if not PREFIX.match(p["prefix"]):
        problems.append(f"prefix: {p['prefix']!r} is not accepted; accepted: a key such as /coreos.com/network")
    if p["timeout"] < 1:
        problems.append(f"timeout: {p['timeout']} is not accepted; accepted: seconds, at least 1")
    if problems:
        module.fail_json(msg="invalid arguments: " + "; ".join(problems))
    binary = module.get_bin_path("etcdctl", required=True)
    argv = etcdctl_argv(binary, p["endpoints"], p["timeout"], p["ca_file"], p["cert_file"], p["key_file"])
    prefix = p["prefix"].rstrip("/")
    rc, out, err = module.run_command([*argv, "get", "--prefix", f"{prefix}/subnets/", "-w", "json"],
                                      environ_update={"ETCDCTL_API": "3", "LC_ALL": "C"})
    if rc != 0:
        module.fail_json(msg=f"etcdctl get --prefix {prefix}/subnets/ failed (rc {rc}) against "
                             f"{', '.join(p['endpoints'])}: {(err or out).strip()}")
    try:
        leases = parse_etcd_leases(out, prefix)
    except FlannelError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=False, leases=leases)


if __name__ == "__main__":
    main()
