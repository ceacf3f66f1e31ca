"""DNS: the node's nameservers answer, the kubelet points pods at the cluster DNS and at a resolv.conf
without loopback nameservers, CoreDNS does not forward to itself, pods use the cluster DNS.

Field guide failure mode 6. The one judge of the dns role's netmend_dns (the `node-dns` check: the
kubelet's DNS drop-in and the node's dead nameservers); netmend_coredns writes the Corefile the
`coredns` check judges.
"""

from .. import resolvconf
from ..coredns import CorefileError, loopback_upstreams
from ..errors import ProblemsError
from ..findings import Spec
from ..plan import Action
from .base import Check

KUBELET_FINDING = "KUBELET-DNS-CONFIG-MISMATCH"
CHOICE_VAR = "dns_kubelet_resolv_conf"


def kubelet_dns(a):
    """The kubelet's drop-in (and kubeadm fragment) as the dns role renders it from want.dns.kubelet.
    None when the want has no kubelet part, True when the resolvConf cannot be chosen (skipped)."""
    k = (a.want.get("dns") or {}).get("kubelet")
    if not k:
        return None
    files = a.facts.get("kubelet") or {}
    try:
        choice = resolvconf.kubelet_choice(k, files)
    except ProblemsError as exc:
        a.skip("node-dns", "; ".join(f"{f} ({CHOICE_VAR}): {m}" for f, m in exc.problems))
        return True
    except resolvconf.ResolvConfError as exc:
        a.skip("node-dns", f"resolv_conf ({CHOICE_VAR}): cannot read a resolv.conf: {exc}; fix the file or set "
                           f"{CHOICE_VAR} to a valid one")
        return True
    settings = resolvconf.kubelet_dns_settings(k["cluster_dns"], k["cluster_domain"], choice.path)
    text = resolvconf.render_kubelet_config(settings)
    stale = [path for path in resolvconf.kubelet_paths(k)[:2 if k.get("kubeadm_path") else 1]
             if files.get(path) != text]
    if stale:
        a.find(KUBELET_FINDING, "the kubelet's DNS settings are not the ones the dns role provisions",
               f"clusterDNS {', '.join(settings['clusterDNS'])}, clusterDomain {settings['clusterDomain']}, "
               f"resolvConf {choice.path} ({choice.reason})",
               "; ".join(f"{path} " + ("is missing" if files.get(path) is None else "differs") for path in stale),
               f"rewrite {', '.join(stale)} (backed up), then restart the kubelet (the dns role does)",
               [f"{path}: " + (" | ".join(line.strip() for line in (files.get(path) or "").splitlines()
                                          if line.strip() and not line.startswith("#")) or "(absent)")
                for path in stale],
               [Action(KUBELET_FINDING, "file", path, text, files.get(path) or "", text) for path in stale])
    return False


def node_dns(a):
    kubelet = kubelet_dns(a)
    res = a.facts.get("resolv") or {}
    text = res.get("text")
    if text is None:
        if kubelet is None:
            a.skip("node-dns", "/etc/resolv.conf does not exist")
        return  # no nameserver to probe; the kubelet's resolvConf was chosen without it
    try:
        conf = resolvconf.parse(text, "/etc/resolv.conf")
    except resolvconf.ResolvConfError as exc:
        if not kubelet:
            a.skip("node-dns", str(exc))
        return
    alive = a.facts.get("alive") or {}
    dead = [ns.address for ns in conf.nameservers if alive.get(ns.address) is False]
    if not dead:
        return
    live = [ns.address for ns in conf.nameservers if ns.address not in dead]
    spare = [s for s in (a.want.get("dns") or {}).get("node_nameservers") or [] if s not in dead]
    new = _drop_nameservers(text, dead, [] if live else spare)
    actions, fix = [], f"remove the dead nameserver(s) {', '.join(dead)} from /etc/resolv.conf (backed up)"
    if res.get("link"):
        fix = (f"/etc/resolv.conf is a symlink to {res['link']}: fix the program that writes it "
               "(DHCP client, NetworkManager, systemd-resolved); netmend does not rewrite it")
    elif not live and not spare:
        fix = "no nameserver answers: set dns_node_nameservers so netmend can write working ones"
    else:
        actions = [Action("RESOLV-NAMESERVER-DEAD", "file", "/etc/resolv.conf", new, text, new)]
        if not live:
            fix += f", using dns_node_nameservers {', '.join(spare)}"
    a.find("RESOLV-NAMESERVER-DEAD", "the node's resolv.conf names nameservers that do not answer",
           "every nameserver answers DNS", "no answer from " + ", ".join(dead), fix,
           [f"no DNS answer from {d}:53 within the timeout" for d in dead], actions)


def _drop_nameservers(text, dead, replacement):
    out, placed = [], False
    for line in text.splitlines(keepends=True):
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver" and words[1] in dead:  # noqa: PLR2004
            if replacement and not placed:
                out += [f"nameserver {s}\n" for s in replacement]
                placed = True
            continue
        out.append(line)
    return "".join(out)


def coredns(a):
    dns = a.want.get("dns") or {}
    path, wanted = dns.get("corefile_path"), dns.get("corefile")
    text = a.facts.get("corefile")
    if not path or text is None:
        return
    try:
        loops = loopback_upstreams(text, a.facts.get("corefile_resolv") or {}, path)
    except CorefileError as exc:
        a.skip("coredns", str(exc))
        return
    if not loops:
        return
    actions = [Action("COREDNS-LOOPBACK-UPSTREAM", "file", path, wanted, text, wanted)] if wanted else []
    a.find("COREDNS-LOOPBACK-UPSTREAM", "the cluster DNS forwards to a loopback address: CoreDNS queries itself",
           "upstreams outside the pod (explicit servers or a resolv.conf without loopback nameservers)",
           ", ".join(f"{lp['address']}:{lp['port']}" + (f" via {lp['via']}" if lp["via"] else "") for lp in loops),
           f"rewrite {path} as the dns role renders it" if wanted else "set dns_upstreams or the kubelet's resolvConf",
           [f"{path} line {lp['line']}: forward {lp['from']} {lp['target']} reaches {lp['reaches']}" for lp in loops],
           actions)


def pod_dns(a):
    want, dns = a.want, a.want.get("dns") or {}
    search = []
    try:
        if (a.facts.get("resolv") or {}).get("text"):
            search = list(resolvconf.parse(a.facts["resolv"]["text"]).search)
    except resolvconf.ResolvConfError:
        search = []
    for pod in dns.get("pods") or []:
        text = (a.facts.get("pod_resolv") or {}).get(pod["path"])
        if text is None:
            continue  # the pod does not run here
        try:
            servers = [ns.address for ns in resolvconf.parse(text, pod["path"]).nameservers]
        except resolvconf.ResolvConfError as exc:
            servers = [f"unreadable: {exc}"]
        if servers == [want["cluster_dns"]]:
            continue
        expected = resolvconf.pod_resolv_conf(want["cluster_dns"], pod.get("namespace", "default"),
                                              want["cluster_domain"], search)
        fid = "HOSTNET-POD-DNS-POLICY" if pod.get("host_network") else "POD-RESOLV-NO-CLUSTER-DNS"
        why = ("hostNetwork pod without dnsPolicy ClusterFirstWithHostNet: it gets the host's resolv.conf"
               if pod.get("host_network") else "the pod's resolv.conf does not name the cluster DNS")
        a.find(fid, f"pod {pod['name']}: {why}", f"nameserver {want['cluster_dns']} (kube-dns)",
               "nameserver " + ", ".join(servers or ["(none)"]),
               f"rewrite {pod['path']} as the kubelet writes it for ClusterFirst"
               + ("; set dnsPolicy: ClusterFirstWithHostNet in the pod spec" if pod.get("host_network") else ""),
               [f"{pod['path']}: " + " | ".join(text.splitlines()[:4])],
               [Action(fid, "file", pod["path"], expected, text, expected)])


CHECKS = (
    Check("node-dns", ("resolv",), (Spec("RESOLV-NAMESERVER-DEAD", "error", "dns"),
                                    Spec(KUBELET_FINDING, "error", "dns")), node_dns),
    Check("coredns", ("corefile", "corefile_resolv"), (Spec("COREDNS-LOOPBACK-UPSTREAM", "critical", "dns"),), coredns),
    Check("pod-dns", ("pod_resolv",), (Spec("POD-RESOLV-NO-CLUSTER-DNS", "error", "dns"),
                                        Spec("HOSTNET-POD-DNS-POLICY", "error", "dns")), pod_dns),
)
