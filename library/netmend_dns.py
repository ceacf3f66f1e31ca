#!/usr/bin/python
"""netmend_dns: the kubelet's cluster DNS, cluster domain and a resolvConf that cannot make CoreDNS loop."""
# Ansible's module layout puts DOCUMENTATION, EXAMPLES and RETURN before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: netmend_dns
short_description: Point the kubelet at the cluster DNS and at a resolv.conf without loopback nameservers
description:
  - Chooses the kubelet's C(resolvConf), the file the kubelet copies into every pod with
    C(dnsPolicy=Default) (CoreDNS included) and whose search domains it appends for C(ClusterFirst)
    pods. CoreDNS's C(forward . /etc/resolv.conf) sends every non-cluster name to the nameservers in
    that copy; a loopback nameserver there (systemd-resolved's stub C(127.0.0.53)) is CoreDNS itself
    inside the pod, so the query loops and the C(loop) plugin halts CoreDNS.
  - With O(resolv_conf=auto), O(host_resolv_conf) is used when every nameserver in it is an upstream;
    when it lists loopback nameservers (or none, or is missing) O(resolved_resolv_conf) is used when it
    lists upstreams and no loopback (systemd-resolved's list of uplink servers); otherwise the task
    fails before anything changes. An explicit path must exist and list only upstreams.
  - Writes a KubeletConfiguration drop-in (O(path)) with C(clusterDNS), C(clusterDomain) and
    C(resolvConf), for a kubelet started with C(--config-dir) set to its directory (drop-ins are
    merged over the main config in file name order; lists replace lists). Optionally writes the same
    document as a kubeadm fragment (O(kubeadm_path)) for C(kubeadm init/join --config).
  - Never edits any resolv.conf. Warns when a running kubelet has no C(--config-dir) pointing at the
    drop-in's directory (it would not read the drop-in).
options:
  cluster_dns:
    description: The kube-dns Service IP(s), the kubelet's C(clusterDNS).
    type: list
    elements: str
    required: true
  cluster_domain:
    description: The cluster domain, the kubelet's C(clusterDomain), for example C(cluster.local).
    type: str
    required: true
  service_cidr:
    description: The Service CIDR (an IPv4 and an IPv6 one separated by a comma for dual stack); O(cluster_dns)
      must be inside it. Empty skips the check.
    type: str
    default: ""
  resolv_conf:
    description: C(auto), or the absolute path of the resolv.conf the kubelet gives pods.
    type: str
    default: auto
  path:
    description: The drop-in netmend owns; an absolute path ending in C(.conf), not a symlink.
    type: path
    default: /etc/kubernetes/kubelet.conf.d/50-netmend-dns.conf
  kubeadm_path:
    description: Also write the document here as a kubeadm KubeletConfiguration fragment (empty, the default, to skip).
    type: path
    default: ""
  host_resolv_conf:
    description: The node's resolv.conf (read only).
    type: path
    default: /etc/resolv.conf
  resolved_resolv_conf:
    description: systemd-resolved's file with the uplink servers (read only).
    type: path
    default: /run/systemd/resolve/resolv.conf
  ndots:
    description:
      - The ndots of the returned RV(pod_resolv_conf). The kubelet always writes 5; a pod changes it
        with C(spec.dnsConfig.options).
    type: int
    default: 5
  backup:
    description: Keep a copy of a file before rewriting it (its name does not end in C(.conf), so the kubelet skips it).
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
notes:
  - A kubelet reads its configuration when it starts; restart it after a change (the dns role does
    when the kubelet runs under systemd). Pods keep the resolv.conf they were created with.
author: netmend maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Dns | Point the kubelet at the cluster DNS
  netmend_dns:
    cluster_dns: [10.96.0.10]
    cluster_domain: cluster.local

- name: Dns | Use a resolv.conf the operator maintains
  netmend_dns:
    cluster_dns: [10.96.0.10]
    cluster_domain: cluster.local
    resolv_conf: /etc/kubernetes/resolv.conf
    kubeadm_path: /etc/kubernetes/netmend/kubeadm/kubelet-dns.yaml
"""

RETURN = r"""
resolv_conf:
  description: The kubelet's resolvConf.
  returned: success
  type: str
  sample: /run/systemd/resolve/resolv.conf
reason:
  description: Why that file.
  returned: success
  type: str
  sample: /etc/resolv.conf lists loopback nameservers 127.0.0.53 (systemd-resolved's stub); ...
nameservers:
  description: The nameservers in the chosen file.
  returned: success
  type: list
  elements: str
search:
  description: The host search domains pods get from the chosen file (without systemd-resolved's C(.)).
  returned: success
  type: list
  elements: str
kubelet_config:
  description: The KubeletConfiguration fields written (clusterDNS, clusterDomain, resolvConf).
  returned: success
  type: dict
path:
  description: The drop-in.
  returned: always
  type: str
kubeadm_path:
  description: The kubeadm fragment, empty when not written.
  returned: always
  type: str
pod_resolv_conf:
  description: The /etc/resolv.conf of a ClusterFirst (or ClusterFirstWithHostNet) pod in namespace default here.
  returned: success
  type: str
  sample: "nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
kubelets:
  description:
    - Running kubelets, each with pid, config_dir (its --config-dir, "" when none) and unit (the systemd
      service it runs in, "" when none; the dns role restarts it after a change).
  returned: success
  type: list
  elements: dict
backup_files:
  description: Copies made before rewriting files.
  returned: success
  type: list
  elements: str
diff:
  description: Before and after of each file written.
  returned: always
  type: list
  elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.errors import ProblemsError
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.files import file_change, read_text, replace_file
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.resolvconf import (
    ETC_RESOLV_CONF,
    KUBELET_DROPIN,
    MAX_NDOTS,
    RESOLVED_RESOLV_CONF,
    ResolvConfError,
    check_in_service_cidr,
    check_resolv_conf,
    choose_resolv_conf,
    kubelet_config_dir,
    kubelet_dns_settings,
    pod_resolv_conf,
    render_kubelet_config,
    systemd_unit,
)

FILE_MODE = 0o644
# The role variable behind each option, so that a failure names what the operator sets.
ROLE_VARS = {"cluster_dns": "dns_cluster_ip", "cluster_domain": "dns_cluster_domain",
             "resolv_conf": "dns_kubelet_resolv_conf", "path": "dns_kubelet_config_dir",
             "kubeadm_path": "dns_manifest_dir", "ndots": "dns_ndots", "service_cidr": "dns_service_cidr"}


def _named(fieldname):
    base = fieldname.split("[", 1)[0]
    return f"{fieldname} ({ROLE_VARS[base]})" if base in ROLE_VARS else fieldname




class KubeletDns:
    def __init__(self, module):
        self.module = module
        self.p = module.params
        self.result = {"changed": False, "path": self.p["path"], "kubeadm_path": self.p["kubeadm_path"] or "",
                       "diff": [], "backup_files": []}

    def fail(self, msg):
        self.module.fail_json(msg=msg, **self.result)

    def validate(self):
        p, problems = self.p, []
        try:
            kubelet_dns_settings(p["cluster_dns"], p["cluster_domain"], "/")
        except ProblemsError as exc:
            problems += exc.problems
        problems += check_in_service_cidr("cluster_dns", p["cluster_dns"], p["service_cidr"])
        if p["resolv_conf"] != "auto" and not os.path.isabs(p["resolv_conf"]):
            problems.append(("resolv_conf", f"{p['resolv_conf']!r} is not accepted; auto or an absolute path"))
        if isinstance(p["ndots"], bool) or not 0 <= p["ndots"] <= MAX_NDOTS:
            problems.append(("ndots", f"{p['ndots']!r} is not accepted; an integer 0-{MAX_NDOTS}"))
        problems += self.check_target("path", p["path"], ".conf")
        if p["kubeadm_path"]:
            problems += self.check_target("kubeadm_path", p["kubeadm_path"], (".yaml", ".yml"))
        if problems:
            self.fail("invalid arguments, nothing was changed: " + "; ".join(f"{_named(f)}: {m}" for f, m in problems))

    def check_target(self, name, path, suffix):
        readonly = {os.path.realpath(self.p[k]) for k in ("host_resolv_conf", "resolved_resolv_conf")}
        if self.p["resolv_conf"] != "auto":
            readonly.add(os.path.realpath(self.p["resolv_conf"]))
        if not os.path.isabs(path) or not path.endswith(suffix) or os.path.basename(path).startswith("."):
            return [(name, f"{path!r} is not accepted: an absolute path to a file whose name ends in "
                           f"{' or '.join((suffix,) if isinstance(suffix, str) else suffix)}")]
        if os.path.realpath(path) in readonly or os.path.basename(path) == "resolv.conf":
            return [(name, f"{path} is a resolv.conf; netmend never writes resolv.conf files")]
        if os.path.islink(path):
            return [(name, f"{path} is a symlink; netmend rewrites the file it owns, so give a regular file")]
        if os.path.exists(path) and not os.path.isfile(path):
            return [(name, f"{path} exists and is not a regular file")]
        return []

    def choose(self):
        p = self.p
        try:
            if p["resolv_conf"] == "auto":
                return choose_resolv_conf(read_text(p["host_resolv_conf"]), read_text(p["resolved_resolv_conf"]),
                                          p["host_resolv_conf"], p["resolved_resolv_conf"])
            return check_resolv_conf(p["resolv_conf"], read_text(p["resolv_conf"]))
        except ProblemsError as exc:
            self.fail("; ".join(f"{_named(f)}: {m}" for f, m in exc.problems) + "; nothing was changed")
        except ResolvConfError as exc:
            self.fail(f"{_named('resolv_conf')}: cannot read a resolv.conf: {exc}; fix the file or set "
                      "dns_kubelet_resolv_conf to a valid one; nothing was changed")
        except OSError as exc:
            self.fail(f"{_named('resolv_conf')}: cannot read {exc.filename}: {exc.strerror}; nothing was changed")
        return None

    def put(self, path, text):
        """Compare, record the diff, write (with a backup) unless in check mode; True when it changes."""
        try:
            changed, diff = file_change(path, text, FILE_MODE)
        except OSError as exc:
            self.fail(f"cannot read {path}: {exc.strerror}")
        self.result["diff"].append(diff)
        if not changed:
            return False
        if not self.module.check_mode:
            try:
                backup_file = replace_file(self.module, path, text, mode=FILE_MODE, backup=self.p["backup"])
                self.result["backup_files"] += [backup_file] if backup_file else []
            except Exception as exc:  # atomic_move raises a plain Exception
                self.fail(f"cannot write {path}: {exc}")
        return True

    def kubelets(self, config_dir):
        found = []
        for pid in sorted((d for d in os.listdir("/proc") if d.isdigit()), key=int):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    argv = handle.read().decode("utf-8", "replace").split("\0")
            except OSError:
                continue
            configured = kubelet_config_dir([a for a in argv if a] or [""])
            if configured is not None:
                try:
                    unit = systemd_unit(read_text(f"/proc/{pid}/cgroup") or "")
                except OSError:
                    unit = ""
                found.append({"pid": int(pid), "config_dir": configured, "unit": unit})
                if configured != config_dir:
                    self.module.warn(f"the kubelet (pid {pid}) runs without --config-dir={config_dir}"
                                     f"{f' (it has {configured})' if configured else ''}, so it does not read "
                                     f"{self.p['path']}; add the flag (kubeadm: nodeRegistration.kubeletExtraArgs "
                                     "config-dir) and restart it")
        return found

    def run(self):
        p = self.p
        self.validate()
        choice = self.choose()
        settings = kubelet_dns_settings(p["cluster_dns"], p["cluster_domain"], choice.path)
        text = render_kubelet_config(settings)
        changed = self.put(p["path"], text)
        if p["kubeadm_path"]:
            changed = self.put(p["kubeadm_path"], text) or changed
        self.result.update(
            changed=changed, resolv_conf=choice.path, reason=choice.reason, nameservers=choice.conf.addresses,
            search=choice.conf.search_domains, kubelet_config=settings,
            pod_resolv_conf=pod_resolv_conf(settings["clusterDNS"], "default", settings["clusterDomain"],
                                            choice.conf.search_domains, p["ndots"]),
            kubelets=self.kubelets(os.path.dirname(os.path.normpath(p["path"]))))
        return self.result


def main():
    module = AnsibleModule(
        argument_spec={
            "cluster_dns": {"type": "list", "elements": "str", "required": True},
            "cluster_domain": {"type": "str", "required": True},
            "service_cidr": {"type": "str", "default": ""},
            "resolv_conf": {"type": "str", "default": "auto"},
            "path": {"type": "path", "default": KUBELET_DROPIN},
            "kubeadm_path": {"type": "path", "default": ""},
            "host_resolv_conf": {"type": "path", "default": ETC_RESOLV_CONF},
            "resolved_resolv_conf": {"type": "path", "default": RESOLVED_RESOLV_CONF},
            "ndots": {"type": "int", "default": 5},
            "backup": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    module.exit_json(**KubeletDns(module).run())


if __name__ == "__main__":
    main()
