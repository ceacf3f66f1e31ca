#!/usr/bin/python
"""netmend_kube_proxy_config: write kube-proxy's KubeProxyConfiguration as a kubeadm fragment and a ConfigMap."""
# Ansible's module layout puts DOCUMENTATION, EXAMPLES and RETURN before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: netmend_kube_proxy_config
short_description: Write kube-proxy's KubeProxyConfiguration as a kubeadm config fragment and a ConfigMap manifest
description:
  - Validates the settings (every problem at once, each naming its option) and renders a
    KubeProxyConfiguration (C(kubeproxy.config.k8s.io/v1alpha1)) from them.
  - Writes two files in O(dest), C(kube-proxy-config.yaml) (the document to append to the configuration
    given to C(kubeadm init --config)) and C(kube-proxy-configmap.yaml) (ConfigMap C(kube-system/kube-proxy)
    with the configuration under C(config.conf), as kubeadm creates it).
  - A file whose content differs is backed up, then replaced atomically. It does not talk to the API server;
    RV(configmap) is the manifest to apply (the role does it with kubernetes.core.k8s).
options:
  mode:
    description: kube-proxy's mode.
    type: str
    choices: [iptables, ipvs, nftables]
    default: iptables
  ipvs_scheduler:
    description: The ipvs scheduler (C(ipvs.scheduler)).
    type: str
    choices: [rr, lc, dh, sh, sed, nq, wrr, wlc]
    default: rr
  ipvs_strict_arp:
    description: C(ipvs.strictARP), needed by MetalLB in ipvs mode.
    type: bool
    default: false
  cluster_cidr:
    description: C(clusterCIDR), the pod CIDR (or an IPv4,IPv6 pair); empty to leave it unset.
    type: str
    default: ""
  node_port_addresses:
    description: C(nodePortAddresses), CIDRs NodePorts answer on, or C([primary]); empty for kube-proxy's default.
    type: list
    elements: str
    default: []
  conntrack_max_per_core:
    description: C(conntrack.maxPerCore) (0 leaves nf_conntrack_max as it is).
    type: int
    default: 32768
  conntrack_min:
    description: C(conntrack.min).
    type: int
    default: 131072
  conntrack_tcp_established_timeout:
    description: C(conntrack.tcpEstablishedTimeout), a Go duration.
    type: str
    default: 24h0m0s
  conntrack_tcp_close_wait_timeout:
    description: C(conntrack.tcpCloseWaitTimeout), a Go duration.
    type: str
    default: 1h0m0s
  metrics_bind_address:
    description: C(metricsBindAddress), IP:port.
    type: str
    default: 127.0.0.1:10249
  healthz_bind_address:
    description: C(healthzBindAddress), IP:port, or empty to disable.
    type: str
    default: 0.0.0.0:10256
  config_extra:
    description:
      - More KubeProxyConfiguration fields, nested as in the document (for example C(iptables.masqueradeAll)),
        merged in. Names and value types are checked against the v1alpha1 fields; fields the options above
        set are refused here.
    type: dict
    default: {}
  dest:
    description: The directory the two files are written to (created when missing).
    type: path
    default: /etc/kubernetes/netmend
  backup:
    description: Keep a copy of a file before replacing it.
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
author:
  - netmend maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Kube-proxy | Write the configuration for ipvs mode
  netmend_kube_proxy_config:
    mode: ipvs
    ipvs_scheduler: lc
    ipvs_strict_arp: true
    cluster_cidr: 10.244.0.0/16
"""

RETURN = r"""
files:
  description: The files written (or that would be), fragment first.
  returned: always
  type: list
  elements: str
  sample: [/etc/kubernetes/netmend/kube-proxy-config.yaml, /etc/kubernetes/netmend/kube-proxy-configmap.yaml]
config:
  description: The KubeProxyConfiguration.
  returned: always
  type: dict
configmap:
  description: The ConfigMap manifest.
  returned: always
  type: dict
config_sha256:
  description: SHA-256 of the configuration text (config.conf), to tell whether kube-proxy must restart.
  returned: always
  type: str
backup_files:
  description: Copies made before replacing files.
  returned: always
  type: list
  elements: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.errors import ProblemsError
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.files import file_change, replace_file
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.kmod import IPVS_SCHEDULERS, PROXY_MODES
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.proxyconfig import (
    CONFIG_FILE,
    CONFIGMAP_FILE,
    DEFAULTS,
    render,
    validate,
)

FILE_MODE = 0o644




def main():
    spec = {
        "mode": {"type": "str", "choices": list(PROXY_MODES), "default": DEFAULTS["mode"]},
        "ipvs_scheduler": {"type": "str", "choices": list(IPVS_SCHEDULERS), "default": DEFAULTS["ipvs_scheduler"]},
        "ipvs_strict_arp": {"type": "bool", "default": False},
        "cluster_cidr": {"type": "str", "default": ""},
        "node_port_addresses": {"type": "list", "elements": "str", "default": []},
        "conntrack_max_per_core": {"type": "int", "default": DEFAULTS["conntrack_max_per_core"]},
        "conntrack_min": {"type": "int", "default": DEFAULTS["conntrack_min"]},
        "conntrack_tcp_established_timeout": {"type": "str",
                                              "default": DEFAULTS["conntrack_tcp_established_timeout"]},
        "conntrack_tcp_close_wait_timeout": {"type": "str", "default": DEFAULTS["conntrack_tcp_close_wait_timeout"]},
        "metrics_bind_address": {"type": "str", "default": DEFAULTS["metrics_bind_address"]},
        "healthz_bind_address": {"type": "str", "default": DEFAULTS["healthz_bind_address"]},
        "config_extra": {"type": "dict", "default": {}},
        "dest": {"type": "path", "default": "/etc/kubernetes/netmend"},
        "backup": {"type": "bool", "default": True},
    }
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    try:
        settings = validate({k: p[k] for k in DEFAULTS})
    except ProblemsError as exc:
        module.fail_json(msg="invalid kube-proxy settings, nothing was written: " + "; ".join(
            f"{name}: {message}" for name, message in exc.problems),
            problems=[{"option": name, "message": message} for name, message in exc.problems])
    dest = os.path.normpath(p["dest"])
    if not os.path.isabs(dest):
        module.fail_json(msg=f"dest: {p['dest']!r} is not an absolute path such as /etc/kubernetes/netmend")
    if os.path.exists(dest) and not os.path.isdir(dest):
        module.fail_json(msg=f"dest: {dest} exists and is not a directory")
    rendered = render(settings)
    result = {"changed": False, "files": [], "backup_files": [], "diff": [], "config": rendered["config"],
              "configmap": rendered["configmap"], "config_sha256": rendered["config_sha256"]}
    writes = []
    for name in (CONFIG_FILE, CONFIGMAP_FILE):
        path = os.path.join(dest, name)
        result["files"].append(path)
        if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
            module.fail_json(msg=f"dest: {path} is a symlink or not a regular file; netmend replaces the files it "
                                 "owns, so point dest at a directory of its own")
        text = rendered["files"][name]
        changed, diff = file_change(path, text, FILE_MODE)
        if changed:
            writes.append((path, text))
        result["diff"].append(diff)
    result["changed"] = bool(writes)
    if writes and not module.check_mode:
        for path, text in writes:
            try:
                backup_file = replace_file(module, path, text, mode=FILE_MODE, backup=p["backup"])
                result["backup_files"] += [backup_file] if backup_file else []
            except Exception as exc:  # atomic_move raises a plain Exception
                module.fail_json(msg=f"cannot write {path}: {exc}", **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
