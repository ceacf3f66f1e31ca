#!/usr/bin/python
"""netmend_coredns: write CoreDNS's Corefile and the coredns ConfigMap manifest that holds it."""
# Ansible's module layout puts DOCUMENTATION, EXAMPLES and RETURN before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: netmend_coredns
short_description: Write CoreDNS's Corefile and the kube-system/coredns ConfigMap manifest
description:
  - Renders kubeadm's standard Corefile (errors, health with lameduck, ready, kubernetes for the
    cluster domain and the reverse zones, prometheus, forward, cache, loop, reload, loadbalance)
    and writes it to O(corefile_path), and a C(ConfigMap) C(coredns) in C(kube-system) holding it to
    O(configmap_path).
  - C(forward .) goes to the explicit O(upstreams) or, when there are none, to O(resolv_conf) as the
    CoreDNS pod sees it (the kubelet copies its resolvConf there; the netmend_dns module makes sure
    that file has no loopback nameserver). Loopback upstreams are refused, since inside the CoreDNS pod they
    are CoreDNS itself, and the C(loop) plugin halts it.
  - The written Corefile is parsed back and returned as RV(settings). Applying the manifest to a
    cluster is the caller's business (the dns role uses kubernetes.core.k8s).
options:
  cluster_domain:
    description: The cluster domain the kubernetes plugin answers for, for example C(cluster.local).
    type: str
    required: true
  upstreams:
    description:
      - Upstream DNS servers (up to 15) as C(ADDRESS), C(ADDRESS:PORT), C([IPv6]:PORT), or with
        C(dns://) or C(tls://) (C(tls://9.9.9.9%dns.quad9.net)). Empty forwards to O(resolv_conf).
    type: list
    elements: str
    default: []
  resolv_conf:
    description: The file forwarded to when O(upstreams) is empty, as seen inside the CoreDNS pod.
    type: str
    default: /etc/resolv.conf
  cache_ttl:
    description: The cache plugin's maximum TTL in seconds (1-86400).
    type: int
    default: 30
  max_concurrent:
    description: The forward plugin's max_concurrent.
    type: int
    default: 1000
  corefile_path:
    description: Where the Corefile is written.
    type: path
    required: true
  configmap_path:
    description: Where the ConfigMap manifest is written (empty to skip).
    type: path
    default: ""
  backup:
    description: Keep a copy of a file before rewriting it.
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
- name: Dns | Write the Corefile and the coredns ConfigMap
  netmend_coredns:
    cluster_domain: cluster.local
    corefile_path: /etc/kubernetes/netmend/coredns/Corefile
    configmap_path: /etc/kubernetes/netmend/coredns/coredns-configmap.yaml

- name: Dns | Forward to explicit upstreams
  netmend_coredns:
    cluster_domain: cluster.local
    upstreams: [192.0.2.53, 192.0.2.54]
    cache_ttl: 60
    corefile_path: /etc/kubernetes/netmend/coredns/Corefile
"""

RETURN = r"""
corefile:
  description: The Corefile text.
  returned: success
  type: str
settings:
  description:
    - The root server block parsed back from the Corefile (netmend.coredns.root_settings), with
      forward_to, forward_addresses, forward_resolv_conf, kubernetes_zones, cluster_domain, cache_ttl and plugins.
  returned: success
  type: dict
configmap:
  description: The ConfigMap as data (for kubernetes.core.k8s definition).
  returned: success
  type: dict
backup_files:
  description: Copies made before rewriting files.
  returned: success
  type: list
  elements: str
diff:
  description: Before and after of each file.
  returned: always
  type: list
  elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.coredns import (
    DEFAULT_RESOLV_CONF,
    MAX_CONCURRENT,
    configmap,
    render_configmap,
    render_corefile,
    root_settings,
)
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.errors import ProblemsError
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.files import file_change, replace_file

FILE_MODE = 0o644
# The option and role variable behind each field of the core's errors, so that a failure names what
# the operator sets.
FIELDS = {"domain": ("cluster_domain", "dns_cluster_domain"), "upstreams": ("upstreams", "dns_upstreams"),
          "cache_ttl": ("cache_ttl", "dns_cache_ttl"),
          "max_concurrent": ("max_concurrent", "dns_forward_max_concurrent"), "resolv_conf": ("resolv_conf", "")}


def _named(fieldname):
    base, sep, rest = fieldname.partition("[")
    option, variable = FIELDS.get(base, (base, ""))
    return f"{option}{sep}{rest}" + (f" ({variable})" if variable else "")




def _check_path(name, path):
    if not os.path.isabs(path) or os.path.basename(path).startswith(".") or path.endswith("/"):
        return f"{name}: {path!r} is not an absolute path to a file"
    if os.path.islink(path):
        return f"{name}: {path} is a symlink; netmend rewrites the file it owns, so give a regular file"
    if os.path.exists(path) and not os.path.isfile(path):
        return f"{name}: {path} exists and is not a regular file"
    return ""


def main():
    module = AnsibleModule(
        argument_spec={
            "cluster_domain": {"type": "str", "required": True},
            "upstreams": {"type": "list", "elements": "str", "default": []},
            "resolv_conf": {"type": "str", "default": DEFAULT_RESOLV_CONF},
            "cache_ttl": {"type": "int", "default": 30},
            "max_concurrent": {"type": "int", "default": MAX_CONCURRENT},
            "corefile_path": {"type": "path", "required": True},
            "configmap_path": {"type": "path", "default": ""},
            "backup": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = {"changed": False, "diff": [], "backup_files": []}
    problems = []
    try:
        corefile = render_corefile(p["cluster_domain"], p["upstreams"], resolv_conf=p["resolv_conf"],
                                   cache_ttl=p["cache_ttl"], max_concurrent=p["max_concurrent"])
    except ProblemsError as exc:
        problems += [f"{_named(f)}: {m}" for f, m in exc.problems]
    files = [("corefile_path", p["corefile_path"])] + ([("configmap_path", p["configmap_path"])]
                                                        if p["configmap_path"] else [])
    problems += [msg for msg in (_check_path(n, path) for n, path in files) if msg]
    if len({os.path.realpath(path) for _, path in files}) != len(files):
        problems.append("configmap_path: must differ from corefile_path")
    if problems:
        module.fail_json(msg="invalid arguments, nothing was changed: " + "; ".join(problems), **result)

    texts = {p["corefile_path"]: corefile}
    if p["configmap_path"]:
        texts[p["configmap_path"]] = render_configmap(corefile)
    for path, text in texts.items():
        changed, diff = file_change(path, text, FILE_MODE)
        result["diff"].append(diff)
        if not changed:
            continue
        result["changed"] = True
        if module.check_mode:
            continue
        try:
            backup_file = replace_file(module, path, text, mode=FILE_MODE, backup=p["backup"])
            result["backup_files"] += [backup_file] if backup_file else []
        except Exception as exc:  # atomic_move raises a plain Exception
            module.fail_json(msg=f"cannot write {path}: {exc}", **result)
    result.update(corefile=corefile, settings=root_settings(corefile), configmap=configmap(corefile))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
