#!/usr/bin/python
"""netmend_etcd_key: make one etcd key hold a JSON document (flannel's <prefix>/config), through etcdctl v3."""
# Ansible's module layout puts DOCUMENTATION, EXAMPLES and RETURN before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: netmend_etcd_key
short_description: Make one etcd key hold a JSON document, compared as JSON
description:
  - Reads O(key) with C(etcdctl get -w json) (v3 API) and compares its value with O(value) as JSON
    documents, so key order and whitespace do not count as a change (a value written by hand with
    spaces after the colons equals the same document written compactly).
  - When they differ, or the key is absent, writes the value compactly with C(etcdctl put), the value on
    standard input. A stored value that is not JSON is replaced, with a warning.
  - Only this one key is read or written. flannel's etcd store (seed 003) reads its network config from
    C(<prefix>/config), by default C(/coreos.com/network/config).
options:
  key:
    description: The key, an absolute path such as C(/coreos.com/network/config).
    type: str
    required: true
  value:
    description: The JSON document the key must hold (a mapping or list, or JSON text).
    type: raw
    required: true
  endpoints:
    description: etcd client URLs.
    type: list
    elements: str
    default: [http://127.0.0.1:2379]
  ca_file:
    description: CA certificate for TLS endpoints (C(--cacert)).
    type: path
  cert_file:
    description: Client certificate (C(--cert)); needs O(key_file).
    type: path
  key_file:
    description: Client key (C(--key)); needs O(cert_file).
    type: path
  timeout:
    description: Seconds etcdctl may take to connect and for each command.
    type: int
    default: 5
  etcdctl:
    description: The etcdctl binary; found on PATH when unset.
    type: path
attributes:
  check_mode:
    description: Reads the key and reports the change; writes nothing.
    support: full
  diff_mode:
    description: Shows the stored and wanted documents, pretty-printed.
    support: full
notes:
  - Uses C(ETCDCTL_API=3); etcd 3.4 and later default to it.
  - An unreachable etcd or a failing command fails the task with etcdctl's message and the endpoints.
author:
  - netmend maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Flannel | Put the network config into etcd
  netmend_etcd_key:
    key: /coreos.com/network/config
    value: {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}
    endpoints: [http://127.0.0.1:2379]
"""

RETURN = r"""
changed:
  description: Whether the key was (or would be) written.
  returned: always
  type: bool
key:
  description: The key.
  returned: always
  type: str
value:
  description: The document the key holds after the run (in check mode, would hold).
  returned: always
  type: raw
before:
  description: The stored value before the run, as text; null when the key was absent.
  returned: always
  type: str
diff:
  description: The stored and wanted documents.
  returned: always
  type: dict
"""

import json
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.flannel import (
    FlannelError,
    etcdctl_argv,
    parse_etcdctl_get,
)

KEY = re.compile(r"^(/[A-Za-z0-9._-]+)+$")
ENDPOINT = re.compile(r"^https?://[^\s,/]+(:[0-9]{1,5})?/?$")


def _pretty(text):
    try:
        return json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    except ValueError:
        return text if text.endswith("\n") else text + "\n"


class EtcdKey:
    def __init__(self, module):
        self.module = module
        self.p = module.params

    def validate(self):
        p = self.p
        problems = []
        if not KEY.match(p["key"]):
            problems.append(f"key: {p['key']!r} is not accepted; accepted: an absolute key such as "
                            "/coreos.com/network/config (letters, digits, '.', '_', '-' between slashes)")
        value = p["value"]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                problems.append(f"value: is not a JSON document ({exc}); accepted: a mapping, a list or JSON text")
        if not isinstance(value, (dict, list)):
            problems.append(f"value: {value!r} is not accepted; accepted: a JSON object or array")
        if not p["endpoints"]:
            problems.append("endpoints: is empty; accepted: etcd client URLs such as http://127.0.0.1:2379")
        problems += [f"endpoints: {url!r} is not accepted; accepted: http(s)://host:port"
                     for url in p["endpoints"] if not ENDPOINT.match(url)]
        if p["timeout"] < 1:
            problems.append(f"timeout: {p['timeout']} is not accepted; accepted: seconds, at least 1")
        if problems:
            self.module.fail_json(msg="invalid arguments, nothing was changed: " + "; ".join(problems),
                                  changed=False)
        self.value = value

    def etcdctl(self, *args, data=None):
        p = self.p
        binary = p["etcdctl"] or self.module.get_bin_path("etcdctl", required=True)
        argv = etcdctl_argv(binary, p["endpoints"], p["timeout"], p["ca_file"], p["cert_file"], p["key_file"])
        rc, out, err = self.module.run_command(argv + list(args), data=data, binary_data=True,
                                               environ_update={"ETCDCTL_API": "3", "LC_ALL": "C"})
        if rc != 0:
            self.module.fail_json(msg=f"etcdctl {args[0]} {self.p['key']} failed (rc {rc}) against "
                                      f"{', '.join(p['endpoints'])}: {(err or out).strip()}", changed=False)
        return out

    def run(self):
        self.validate()
        key = self.p["key"]
        try:
            current = parse_etcdctl_get(self.etcdctl("get", key, "-w", "json"), key)
        except FlannelError as exc:
            self.module.fail_json(msg=str(exc), changed=False)
        same = False
        if current is not None:
            try:
                same = json.loads(current) == self.value
            except ValueError:
                self.module.warn(f"{key} holds a value that is not JSON; it is replaced")
        wanted = json.dumps(self.value, separators=(",", ":"))
        result = {"changed": not same, "key": key, "value": self.value, "before": current,
                  "diff": {"before_header": key if current is not None else f"{key} (absent)", "after_header": key,
                           "before": _pretty(current) if current is not None else "",
                           "after": _pretty(wanted)}}
        if not same and not self.module.check_mode:
            self.etcdctl("put", key, data=wanted)
        return result


def main():
    module = AnsibleModule(
        argument_spec={
            "key": {"type": "str", "required": True, "no_log": False},  # a key name, not a secret
            "value": {"type": "raw", "required": True},
            "endpoints": {"type": "list", "elements": "str", "default": ["http://127.0.0.1:2379"]},
            "ca_file": {"type": "path"},
            "cert_file": {"type": "path"},
            "key_file": {"type": "path"},
            "timeout": {"type": "int", "default": 5},
            "etcdctl": {"type": "path"},
        },
        required_together=[("cert_file", "key_file")],
        supports_check_mode=True,
    )
    module.exit_json(**EtcdKey(module).run())


if __name__ == "__main__":
    main()
