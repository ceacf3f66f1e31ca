#!/usr/bin/python
"""netmend_flannel: write flannel's net-conf.json, the CNI conflist and the kube-flannel manifests."""
# Ansible's module layout puts DOCUMENTATION, EXAMPLES and RETURN before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: netmend_flannel
short_description: Write flannel's net-conf.json, CNI conflist and kube-flannel manifests
description:
  - Validates every setting, then renders flannel's network config (C(net-conf.json)), the CNI network
    list (C(10-flannel.conflist), the flannel plugin delegating to bridge, plus portmap) and the
    kube-flannel manifests (Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding, ConfigMap
    C(kube-flannel-cfg), DaemonSet C(kube-flannel-ds)).
  - Writes the node files (O(net_conf_path), O(cni_conf_path)) and, when O(manifest_path) is set, the
    manifests as one multi-document YAML file. Each file is written whole, through a temp file and an
    atomic move, and backed up first when its content changes. Nothing else is touched.
  - The ConfigMap holds the node files byte for byte, so the DaemonSet's install-cni container writes
    the same conflist and a later run reports no change. The pod template carries a hash of the
    ConfigMap data, so a config change rolls the DaemonSet.
  - Returns the rendered documents (RV(manifests) for C(kubernetes.core.k8s), C(net_conf) for the etcd
    store) in every mode, check mode included.
options:
  pod_cidr:
    description: The cluster pod network, flannel's C(Network) (flannel_pod_cidr).
    type: str
    required: true
  subnet_len:
    description: The prefix length of each node's subnet (flannel_subnet_len); at least the pod CIDR's plus 2.
    type: int
    default: 24
  backend:
    description: flannel's backend (flannel_backend_type).
    type: str
    choices: [vxlan, host-gw]
    default: vxlan
  vni:
    description: VXLAN identifier; the device is C(flannel.<vni>) (flannel_vxlan_vni).
    type: int
    default: 1
  port:
    description: VXLAN UDP port (flannel_vxlan_port).
    type: int
    default: 8472
  direct_routing:
    description: vxlan only; route directly to nodes on the same subnet, encapsulate to the others.
    type: bool
    default: false
  mtu:
    description:
      - The pod MTU (flannel_mtu), C(auto) or an integer.
      - C(auto) lets flanneld derive it from the interface (underlay MTU minus 50 for vxlan).
      - An integer must be 576 to O(underlay_mtu) minus the backend's overhead; it is written into the
        CNI delegate (C(mtu)) and, for vxlan, into net-conf.json as C(Backend.MTU) = mtu + 50 (flannel's
        C(Backend.MTU) is the underlay MTU).
    type: raw
    default: auto
  underlay_mtu:
    description: The MTU of the node interface flannel uses (netmend_underlay_mtu).
    type: int
    default: 1500
  iface:
    description: flanneld C(--iface) values (interface names or addresses), in order. Not with O(iface_regex).
    type: list
    elements: str
    default: []
  iface_regex:
    description: flanneld C(--iface-regex) values, in order. Not with O(iface).
    type: list
    elements: str
    default: []
  ip_masq:
    description: flanneld C(--ip-masq) (masquerade pod traffic leaving the pod network).
    type: bool
    default: true
  store:
    description: Where flanneld keeps its config and leases; C(kube) (C(--kube-subnet-mgr)) or C(etcd).
    type: str
    choices: [kube, etcd]
    default: kube
  etcd_endpoints:
    description: With O(store=etcd), flanneld's C(--etcd-endpoints).
    type: list
    elements: str
    default: [http://127.0.0.1:2379]
  etcd_prefix:
    description: With O(store=etcd), flanneld's C(--etcd-prefix).
    type: str
    default: /coreos.com/network
  etcd_cafile:
    description: With O(store=etcd), a CA file on the nodes (mounted into the DaemonSet).
    type: str
    default: ""
  etcd_certfile:
    description: With O(store=etcd), a client certificate file on the nodes.
    type: str
    default: ""
  etcd_keyfile:
    description: With O(store=etcd), a client key file on the nodes.
    type: str
    default: ""
  namespace:
    description: The namespace of the kube-flannel objects.
    type: str
    default: kube-flannel
  image:
    description: The flannel image, without tag.
    type: str
    default: ghcr.io/flannel-io/flannel
  image_tag:
    description: The flannel image tag, or a C(sha256:) digest.
    type: str
    default: v0.27.4
  cni_plugin_image:
    description: The flannel CNI plugin image, without tag.
    type: str
    default: ghcr.io/flannel-io/flannel-cni-plugin
  cni_plugin_image_tag:
    description: The flannel CNI plugin image tag, or a C(sha256:) digest.
    type: str
    default: v1.8.0-flannel1
  net_conf_path:
    description: Where net-conf.json is written on the node; C("") writes none.
    type: str
    default: /etc/kube-flannel/net-conf.json
  cni_conf_path:
    description: The CNI conflist on the node (also where the DaemonSet installs it); must end in C(.conflist).
    type: str
    default: /etc/cni/net.d/10-flannel.conflist
  write_cni_conf:
    description: Write O(cni_conf_path) on the node.
    type: bool
    default: true
  manifest_path:
    description: Where to write the manifests (one YAML file); unset or C("") writes none.
    type: str
    default: ""
  backup:
    description: Keep a copy of a file before rewriting it.
    type: bool
    default: true
attributes:
  check_mode:
    description: Reports what would change and returns everything rendered; writes nothing.
    support: full
  diff_mode:
    description: Shows every file before and after.
    support: full
notes:
  - Errors name the role variable (for example C(flannel_mtu)) and what is accepted; nothing is written
    when any setting is bad.
  - Files that are symlinks or not regular files are refused rather than replaced.
author:
  - netmend maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Flannel | Write the node files and the manifests
  netmend_flannel:
    pod_cidr: 10.244.0.0/16
    manifest_path: /etc/kubernetes/netmend/kube-flannel.yml

- name: Flannel | host-gw with an explicit MTU on eth1
  netmend_flannel:
    pod_cidr: 10.244.0.0/16
    backend: host-gw
    mtu: 1400
    iface: [eth1]
"""

RETURN = r"""
changed:
  description: Whether a file changed (or would change, in check mode).
  returned: always
  type: bool
mtu:
  description: The pod MTU (flannel.1, cni0, pods); with C(auto), what flanneld computes from O(underlay_mtu).
  returned: always
  type: int
  sample: 1450
net_conf:
  description: flannel's network config, as written to net-conf.json and the ConfigMap.
  returned: always
  type: dict
  sample: {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}
cni_conf:
  description: The CNI network list.
  returned: always
  type: dict
manifests:
  description: The kube-flannel objects, in apply order.
  returned: always
  type: list
  elements: dict
files:
  description: Per file written or checked, whether it changed and the backup made.
  returned: always
  type: dict
  sample: {"/etc/kube-flannel/net-conf.json": {"changed": true, "backup_file": "/etc/kube-flannel/net-conf.json.1.2~"}}
diff:
  description: One before/after pair per file.
  returned: always
  type: list
  elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.files import read_text, write_atomic
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.flannel import (
    CNI_CONF_PATH,
    CNI_PLUGIN_IMAGE,
    CNI_PLUGIN_IMAGE_TAG,
    ETCD_PREFIX,
    IMAGE,
    IMAGE_TAG,
    NAMESPACE,
    NET_CONF_PATH,
    FlannelError,
    cni_conflist,
    manifests,
    net_conf,
    render_json,
    render_manifests,
    settings,
)

FILE_MODE = 0o644
# The role variable each option comes from, so errors name both.
OPTION = {"flannel_pod_cidr": "pod_cidr", "flannel_subnet_len": "subnet_len", "flannel_backend_type": "backend",
          "flannel_vxlan_vni": "vni", "flannel_vxlan_port": "port", "flannel_vxlan_direct_routing": "direct_routing",
          "flannel_mtu": "mtu", "flannel_underlay_mtu": "underlay_mtu", "flannel_iface": "iface",
          "flannel_iface_regex": "iface_regex", "flannel_store": "store", "flannel_etcd_endpoints": "etcd_endpoints",
          "flannel_etcd_prefix": "etcd_prefix", "flannel_etcd_cafile": "etcd_cafile",
          "flannel_etcd_certfile": "etcd_certfile", "flannel_etcd_keyfile": "etcd_keyfile",
          "flannel_namespace": "namespace", "flannel_image": "image", "flannel_image_tag": "image_tag",
          "flannel_cni_plugin_image": "cni_plugin_image", "flannel_cni_plugin_image_tag": "cni_plugin_image_tag",
          "flannel_cni_conf_path": "cni_conf_path", "flannel_ip_masq": "ip_masq"}
LOOPBACK = ("://127.", "://localhost", "://[::1]")


def _label(field):
    variable = field.split("[", 1)[0]
    option = OPTION.get(variable)
    return f"{option} ({field})" if option else field



class Flannel:
    """One run: validate everything, render, compare each file, then write unless in check mode."""

    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.result = {"changed": False, "files": {}, "diff": []}

    def fail(self, msg, **extra):
        self.module.fail_json(msg=msg, **{**self.result, **extra})

    def validate(self):
        p = self.p
        try:
            self.s = settings({variable: p[option] for variable, option in OPTION.items()})
        except FlannelError as exc:
            self.fail("invalid flannel settings, nothing was changed: "
                      + "; ".join(f"{_label(f)}: {m}" for f, m in exc.problems),
                      problems=[{"field": f, "message": m} for f, m in exc.problems])
        paths = [p["net_conf_path"], p["cni_conf_path"] if p["write_cni_conf"] else "", p["manifest_path"]]
        self.paths = [os.path.normpath(x) for x in paths if x]
        for option, path in (("net_conf_path", p["net_conf_path"]), ("manifest_path", p["manifest_path"])):
            if path and not os.path.isabs(path):
                self.fail(f"{option}: {path!r} is not an absolute path")
        if len(set(self.paths)) != len(self.paths):
            self.fail(f"net_conf_path, cni_conf_path and manifest_path must differ: {', '.join(self.paths)}")
        for path in self.paths:
            if os.path.islink(path):
                self.fail(f"{path} is a symlink (to {os.path.realpath(path)}); netmend rewrites the files it owns, "
                          "so point the path at a regular file")
            if os.path.exists(path) and not os.path.isfile(path):
                self.fail(f"{path} exists and is not a regular file")
        if p["store"] == "etcd" and any(m in url for url in p["etcd_endpoints"] for m in LOOPBACK):
            self.module.warn("etcd_endpoints (flannel_etcd_endpoints) has a loopback address; flanneld in the "
                             "DaemonSet runs on every node, so nodes without a local etcd cannot reach it")

    def render(self):
        p, s = self.p, self.s
        conf = net_conf(s["pod_cidr"], s["subnet_len"], s["backend"], s["vni"], s["port"], s["direct_routing"],
                        mtu=s["explicit_mtu"])
        cni = cni_conflist(s["explicit_mtu"])
        conf_text, cni_text = render_json(conf), render_json(cni)
        docs = manifests(conf_text, cni_text, {**s, "cni_conf_path": os.path.normpath(s["cni_conf_path"])})
        self.result.update(mtu=s["mtu"], net_conf=conf, cni_conf=cni, manifests=docs)
        texts = {}
        if p["net_conf_path"]:
            texts[os.path.normpath(p["net_conf_path"])] = conf_text
        if p["write_cni_conf"]:
            texts[os.path.normpath(p["cni_conf_path"])] = cni_text
        if p["manifest_path"]:
            texts[os.path.normpath(p["manifest_path"])] = render_manifests(docs)
        return texts

    def compare(self, texts):
        plan = []
        for path, text in texts.items():
            current = None
            if os.path.exists(path):
                try:
                    current = read_text(path)
                except OSError as exc:
                    self.fail(f"cannot read {path}: {exc.strerror or exc}")
            mode_wrong = current is not None and os.stat(path).st_mode & 0o7777 != FILE_MODE
            changed = current != text or mode_wrong
            self.result["files"][path] = {"changed": changed}
            self.result["diff"].append({"before_header": path if current is not None else f"{path} (absent)",
                                        "after_header": path, "before": current or "", "after": text})
            if changed:
                plan.append((path, text, current))
        return plan

    def write(self, plan):
        for path, text, current in plan:
            if current == text:
                os.chmod(path, FILE_MODE)
                continue
            if self.p["backup"] and current is not None:
                self.result["files"][path]["backup_file"] = self.module.backup_local(path)
            try:
                write_atomic(self.module, path, text, FILE_MODE)
            except Exception as exc:  # atomic_move raises a plain Exception
                done = [f for f, r in self.result["files"].items() if r.get("written")]
                self.fail(f"cannot write {path}: {exc}" + (f" (already written: {', '.join(done)})" if done else ""))
            self.result["files"][path]["written"] = True

    def run(self):
        self.validate()
        plan = self.compare(self.render())
        self.result["changed"] = bool(plan)
        if plan and not self.module.check_mode:
            self.write(plan)
        for entry in self.result["files"].values():
            entry.pop("written", None)
        return self.result


def main():
    module = AnsibleModule(
        argument_spec={
            "pod_cidr": {"type": "str", "required": True},
            "subnet_len": {"type": "int", "default": 24},
            "backend": {"type": "str", "choices": ["vxlan", "host-gw"], "default": "vxlan"},
            "vni": {"type": "int", "default": 1},
            "port": {"type": "int", "default": 8472},
            "direct_routing": {"type": "bool", "default": False},
            "mtu": {"type": "raw", "default": "auto"},
            "underlay_mtu": {"type": "int", "default": 1500},
            "iface": {"type": "list", "elements": "str", "default": []},
            "iface_regex": {"type": "list", "elements": "str", "default": []},
            "ip_masq": {"type": "bool", "default": True},
            "store": {"type": "str", "choices": ["kube", "etcd"], "default": "kube"},
            "etcd_endpoints": {"type": "list", "elements": "str", "default": ["http://127.0.0.1:2379"]},
            "etcd_prefix": {"type": "str", "default": ETCD_PREFIX},
            "etcd_cafile": {"type": "str", "default": ""},
            "etcd_certfile": {"type": "str", "default": ""},
            "etcd_keyfile": {"type": "str", "default": "", "no_log": False},  # a path, not a secret
            "namespace": {"type": "str", "default": NAMESPACE},
            "image": {"type": "str", "default": IMAGE},
            "image_tag": {"type": "str", "default": IMAGE_TAG},
            "cni_plugin_image": {"type": "str", "default": CNI_PLUGIN_IMAGE},
            "cni_plugin_image_tag": {"type": "str", "default": CNI_PLUGIN_IMAGE_TAG},
            "net_conf_path": {"type": "str", "default": NET_CONF_PATH},
            "cni_conf_path": {"type": "str", "default": CNI_CONF_PATH},
            "write_cni_conf": {"type": "bool", "default": True},
            "manifest_path": {"type": "str", "default": ""},
            "backup": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    module.exit_json(**Flannel(module).run())


if __name__ == "__main__":
    main()
