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
  - Judges with the audit's C(node-dns) check (the same judge as C(netmend_node)). The drop-in (and the
    fragment) is rewritten when it differs from what it should say (finding C(KUBELET-DNS-CONFIG-MISMATCH));
    every nameserver of C(/etc/resolv.conf) is sent a DNS query, and when some do not answer
    (C(RESOLV-NAMESERVER-DEAD)) they are removed from it (backed up; every other line kept), replaced by
    O(node_nameservers) when none answers. C(/etc/resolv.conf) is not written when it is a symlink or when no
    nameserver answers and O(node_nameservers) is empty; the module warns with the finding instead. No other
    resolv.conf is ever edited.
  - Warns when a running kubelet has no C(--config-dir) pointing at the drop-in's directory (it would not
    read the drop-in).
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
  node_nameservers:
    description:
      - Nameservers written into C(/etc/resolv.conf) in place of its own when none of them answers
        (the role's C(dns_node_nameservers)). Empty, the default, leaves such a file as it is.
    type: list
    elements: str
    default: []
  ndots:
    description:
      - The ndots of the returned RV(pod_resolv_conf). The kubelet always writes 5; a pod changes it
        with C(spec.dnsConfig.options).
    type: int
    default: 5
  backup:
    description: Keep a copy of a file before rewriting it (its name does not end in C(.conf), so the kubelet skips
      it). A rewritten file keeps its mode; a new one is C(0644).
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
findings:
  description: The IDs of the C(node-dns) check's findings before any change (the audit's IDs); empty when the
    node is as it should be.
  returned: success
  type: list
  elements: str
  sample: [KUBELET-DNS-CONFIG-MISMATCH]
backup_files:
  description: Copies made before rewriting files.
  returned: success
  type: list
  elements: str
diff:
  description: Before and after of each file netmend writes (the drop-in, the fragment, and C(/etc/resolv.conf)
    when its dead nameservers are removed).
  returned: always
  type: list
  elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmend.netmend.plugins.module_utils.netmend import facts as node_facts
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.checks import audit
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.errors import ProblemsError
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.files import read_text
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.modulehost import ModuleHost
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.plan import ExecutionError, execute
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.resolvconf import (
    ETC_RESOLV_CONF,
    KUBELET_DROPIN,
    MAX_NDOTS,
    RESOLVED_RESOLV_CONF,
    kubelet_choice,
    kubelet_config_dir,
    kubelet_dns_settings,
    pod_resolv_conf,
    systemd_unit,
)
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.want import check_dns

CHECK = "node-dns"
# The role variable behind each option, so that a failure names what the operator sets.
ROLE_VARS = {"cluster_dns": "dns_cluster_ip", "cluster_domain": "dns_cluster_domain",
             "resolv_conf": "dns_kubelet_resolv_conf", "path": "dns_kubelet_config_dir",
             "kubeadm_path": "dns_manifest_dir", "ndots": "dns_ndots", "service_cidr": "dns_service_cidr",
             "node_nameservers": "dns_node_nameservers"}


def _named(fieldname):
    """want.dns.kubelet.cluster_dns[0] -> cluster_dns[0] (dns_cluster_ip): the option and its role variable."""
    name = fieldname.rpartition(".")[2]
    base = name.split("[", 1)[0]
    return f"{name} ({ROLE_VARS[base]})" if base in ROLE_VARS else name


def build_want(p):
    """The audit's want, reduced to what the node-dns check reads: the same judge for both."""
    kubelet = {"path": p["path"], "kubeadm_path": p["kubeadm_path"] or "", "resolv_conf": p["resolv_conf"],
               "cluster_dns": p["cluster_dns"], "cluster_domain": p["cluster_domain"],
               "host_resolv_conf": p["host_resolv_conf"], "resolved_resolv_conf": p["resolved_resolv_conf"]}
    return {"node": "this node", "service_cidr": p["service_cidr"],
            "dns": {"kubelet": kubelet, "node_nameservers": p["node_nameservers"]}}


def target_problems(p, name):
    """A file netmend writes must be a regular file (or absent), and none of the resolv.conf files it reads."""
    path = p[name]
    readonly = {os.path.realpath(p[k]) for k in ("host_resolv_conf", "resolved_resolv_conf")}
    if p["resolv_conf"] != "auto":
        readonly.add(os.path.realpath(p["resolv_conf"]))
    if os.path.realpath(path) in readonly:
        return [(name, f"{path} is a resolv.conf; netmend never writes resolv.conf files")]
    if os.path.islink(path):
        return [(name, f"{path} is a symlink; netmend rewrites the file it owns, so give a regular file")]
    if os.path.exists(path) and not os.path.isfile(path):
        return [(name, f"{path} exists and is not a regular file")]
    return []


def kubelets(module, config_dir, path):
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
                module.warn(f"the kubelet (pid {pid}) runs without --config-dir={config_dir}"
                            f"{f' (it has {configured})' if configured else ''}, so it does not read "
                            f"{path}; add the flag (kubeadm: nodeRegistration.kubeletExtraArgs "
                            "config-dir) and restart it")
    return found


def file_diffs(want, facts, actions):
    """Before and after of each file netmend writes (the drop-in, the kubeadm fragment, a resolv.conf the
    plan rewrites), the after from the plan."""
    k, files = want["dns"]["kubelet"], facts.get("kubelet") or {}
    after = {a.target: a.after for a in actions}
    targets = [k["path"], *([k["kubeadm_path"]] if k["kubeadm_path"] else [])]
    before = {path: files.get(path) for path in targets}
    before.update({a.target: a.before for a in actions if a.target not in before})
    return [{"before_header": path if text is not None else f"{path} (absent)", "after_header": path,
             "before": text or "", "after": after.get(path, text or "")} for path, text in before.items()]


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
            "node_nameservers": {"type": "list", "elements": "str", "default": []},
            "ndots": {"type": "int", "default": 5},
            "backup": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    p = module.params
    result = {"changed": False, "path": p["path"], "kubeadm_path": p["kubeadm_path"] or "", "diff": [],
              "backup_files": []}
    want = build_want(p)
    try:
        check_dns(want)
        problems = []
    except ProblemsError as exc:
        problems = list(exc.problems)
    if isinstance(p["ndots"], bool) or not 0 <= p["ndots"] <= MAX_NDOTS:
        problems.append(("ndots", f"{p['ndots']!r} is not accepted; an integer 0-{MAX_NDOTS}"))
    for name in ("path", "kubeadm_path"):
        if p[name] and not any(f.rpartition(".")[2] == name for f, _ in problems):
            problems += target_problems(p, name)
    if problems:
        module.fail_json(msg="invalid arguments, nothing was changed: "
                         + "; ".join(f"{_named(f)}: {m}" for f, m in problems), **result)
    host = ModuleHost(module, backup=p["backup"])
    facts = node_facts.gather(host, want, [CHECK])
    audited = audit(facts, want, [CHECK])
    if audited.skipped:
        module.fail_json(msg="; ".join(why for _check, why in audited.skipped) + "; nothing was changed", **result)
    actions = audited.actions
    result["diff"] = file_diffs(want, facts, actions)
    if actions and not module.check_mode:
        try:
            result["backup_files"] = execute(actions, host)
        except ExecutionError as exc:
            module.fail_json(msg=str(exc), **result)
    for finding in audited.findings:
        if not any(a.finding == finding.id for a in actions):
            module.warn(f"{finding.id}: {finding.summary} ({finding.actual}); not fixed: {finding.fix}")
    kubelet = want["dns"]["kubelet"]
    choice = kubelet_choice(kubelet, facts["kubelet"])
    settings = kubelet_dns_settings(p["cluster_dns"], p["cluster_domain"], choice.path)
    result.update(
        changed=bool(actions), findings=[f.id for f in audited.findings], resolv_conf=choice.path,
        reason=choice.reason, nameservers=choice.conf.addresses, search=choice.conf.search_domains,
        kubelet_config=settings,
        pod_resolv_conf=pod_resolv_conf(settings["clusterDNS"], "default", settings["clusterDomain"],
                                        choice.conf.search_domains, p["ndots"]),
        kubelets=kubelets(module, os.path.dirname(os.path.normpath(p["path"])), p["path"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
