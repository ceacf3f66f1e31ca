"""The desired state handed to a node (`want`): validated once, before anything is read or changed.

Stdlib only; it runs on the node and on the controller. Every bad field is named with what is accepted.
"""

import ipaddress
import posixpath
import re

from . import coredns, firewalld, kmod, resolvconf, sysctl
from .errors import ProblemsError
from .kmod import PROXY_MODES

FIREWALL_MODES = ("configured", "disabled", "unmanaged")
FORWARD_MODES = ("accept_pod_cidr", "policy_accept")
BACKENDS = ("vxlan", "host-gw")
PROTOCOLS = ("TCP", "UDP", "SCTP")
MAX_CHAIN = 28  # iptables chain names are at most 28 characters
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class WantError(ProblemsError):
    """The desired state handed to the node is not usable; every bad field is named."""


def _net(problems, name, value, strict=True):
    try:
        if "/" not in str(value):
            raise ValueError(value)
        return ipaddress.ip_network(str(value), strict=strict)
    except ValueError:
        problems.append((name, f"{value!r} is not a network in CIDR form such as 10.244.0.0/16"))
        return None


def _ip(problems, name, value):
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError:
        problems.append((name, f"{value!r} is not an IP address such as 198.51.100.11"))
        return None


def _endpoint(problems, name, value):
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or _ip([], name, host) is None:  # noqa: PLR2004
        problems.append((name, f"{value!r} is not an endpoint ip:port such as 10.244.1.5:8080"))


def _choice(problems, name, value, choices):
    if value not in choices:
        problems.append((name, f"{value!r} is not one of {', '.join(choices)}"))


def check_want(want):
    """Validate the desired state (the module's `want` option); raises WantError naming every bad field."""
    p = []
    if not isinstance(want, dict):
        raise WantError([("want", "must be a mapping")])
    for key in ("node", "address", "pod_cidr", "service_cidr", "cluster_dns", "cluster_domain"):
        if not want.get(key):
            p.append((f"want.{key}", "is required"))
    if p:
        raise WantError(p)
    _ip(p, "want.address", want["address"])
    _net(p, "want.pod_cidr", want["pod_cidr"])
    _net(p, "want.service_cidr", want["service_cidr"])
    _ip(p, "want.cluster_dns", want["cluster_dns"])
    try:
        sysctl.check_settings(want.get("sysctls") or {"net.ipv4.ip_forward": 1})
    except ProblemsError as exc:
        p += [(f"want.sysctls.{k}", m) for k, m in exc.problems]
    _kernel_files(p, want)
    _check_want_parts(p, want)
    if p:
        raise WantError(p)
    return want


def _check_want_parts(p, want):
    _firewall(p, want)
    _forward(p, want)
    if (want.get("kube_proxy") or {}).get("mode") is not None:
        _choice(p, "want.kube_proxy.mode", want["kube_proxy"]["mode"], PROXY_MODES)
    fl = want.get("flannel") or {}
    if fl:
        _choice(p, "want.flannel.backend", fl.get("backend"), BACKENDS)
        for key, low, high in (("vni", 1, 16777215), ("port", 1, 65535), ("mtu", 576, 65535)):
            if not isinstance(fl.get(key), int) or isinstance(fl.get(key), bool) or not low <= fl[key] <= high:
                p.append((f"want.flannel.{key}", f"{fl.get(key)!r} is not an integer from {low} to {high}"))
    for i, lease in enumerate(want.get("leases") or []):
        where = f"want.leases[{i}]"
        if not isinstance(lease, dict) or not lease.get("node"):
            p.append((where, "is not a lease {node, subnet, public_ip, vtep_mac}"))
            continue
        _net(p, f"{where}.subnet", lease.get("subnet"))
        _ip(p, f"{where}.public_ip", lease.get("public_ip"))
        if lease.get("vtep_mac") and not _MAC.match(str(lease["vtep_mac"]).lower()):
            p.append((f"{where}.vtep_mac", f"{lease['vtep_mac']!r} is not a MAC address such as 0a:58:0a:f4:01:01"))
    _check_services(p, want.get("services") or [])
    dns = want.get("dns") or {}
    kubelet = []
    _dns(kubelet, want)
    p += [(f, m) for f, m in kubelet if f != "want.service_cidr"]  # named once, above
    for i, pod in enumerate(dns.get("pods") or []):
        if not isinstance(pod, dict) or not pod.get("name") or not str(pod.get("path", "")).startswith("/"):
            p.append((f"want.dns.pods[{i}]", "is not a pod {name, namespace, host_network, path (absolute)}"))


def _firewall(p, want):
    fw = want.get("firewall") or {}
    _choice(p, "want.firewall.mode", fw.get("mode", "unmanaged"), FIREWALL_MODES)
    if fw.get("mode") == "configured":
        try:
            firewalld.check_want({**fw, "zone": fw.get("zone") or "public"})
        except ProblemsError as exc:
            p += [(f"want.firewall.{k}", m) for k, m in exc.problems]


def _validated(want, part):
    """want, or WantError naming every bad field `part(problems, want)` found."""
    p = []
    part(p, want)
    if p:
        raise WantError(p)
    return want


def check_firewall(want):
    """Validate what the firewall check reads (want.firewall), for netmend_firewalld."""
    return _validated(want, _firewall)


def _forward(p, want):
    fwd = want.get("forward") or {}
    _choice(p, "want.forward.mode", fwd.get("mode", "accept_pod_cidr"), FORWARD_MODES)
    chain = fwd.get("chain")
    if chain is not None and (not isinstance(chain, str) or not chain.startswith("NETMEND-")
                              or len(chain) > MAX_CHAIN):
        p.append(("want.forward.chain", f"{chain!r} must start with NETMEND- and be at most {MAX_CHAIN} characters"))


def _own_file(p, name, path, example):
    """netmend's own file of a .d directory: absolute, a name ending in .conf that does not start with a dot."""
    text = str(path)
    if not text.startswith("/") or not text.endswith(".conf") or text.rsplit("/", 1)[-1].startswith("."):
        p.append((name, f"{path!r} is not accepted: an absolute path to a file whose name ends in .conf "
                        f"(and does not start with a dot), such as {example}"))


def _kernel_files(p, want):
    if want.get("sysctl_file"):
        _own_file(p, "want.sysctl_file", want["sysctl_file"], sysctl.DEFAULT_PATH)
    if want.get("modules_file"):
        _own_file(p, "want.modules_file", want["modules_file"], kmod.DEFAULT_LOAD_FILE)
    if want.get("modules_text"):
        try:
            names = kmod.parse_modules_load(str(want["modules_text"]), "want.modules_text")
        except ValueError as exc:
            p.append(("want.modules_text", str(exc)))
            return
        p += [("want.modules_text", f"{n!r} is not a module name (a-z, 0-9, _ and -)")
              for n in names if not kmod.MODULE_NAME.match(n)]


def check_kernel(want):
    """Validate what the kernel check reads (want.sysctls, sysctl_file, modules_file, modules_text), for
    netmend_sysctl and netmend_kmod; a want without sysctls or modules judges none."""
    p = []
    if want.get("sysctls") is not None:
        try:
            sysctl.check_settings(want["sysctls"])
        except ProblemsError as exc:
            p += [(f"want.sysctls.{k}", m) for k, m in exc.problems]
    _kernel_files(p, want)
    if p:
        raise WantError(p)
    return want


def _dns(p, want):
    dns = want.get("dns") or {}
    for i, ns in enumerate(dns.get("node_nameservers") or []):
        _ip(p, f"want.dns.node_nameservers[{i}]", ns)
    k = dns.get("kubelet")
    if not k:
        return
    where = "want.dns.kubelet"
    try:
        resolvconf.kubelet_dns_settings(k.get("cluster_dns"), k.get("cluster_domain"), "/")
    except ProblemsError as exc:
        p += [(f"{where}.{f}", m) for f, m in exc.problems]
    outside = resolvconf.check_in_service_cidr("cluster_dns", k.get("cluster_dns") or [],
                                               want.get("service_cidr") or "")
    p += [(f"want.{f}" if f == "service_cidr" else f"{where}.{f}", m) for f, m in outside]
    resolv = k.get("resolv_conf", "auto")
    if resolv != "auto" and not posixpath.isabs(str(resolv)):
        p.append((f"{where}.resolv_conf", f"{resolv!r} is not accepted; auto or an absolute path"))
    for key, suffix in (("path", (".conf",)), ("kubeadm_path", (".yaml", ".yml"))):
        path = k.get(key) or ""
        if key == "kubeadm_path" and not path:
            continue
        name = posixpath.basename(path)
        if not posixpath.isabs(path) or not name.endswith(suffix) or name.startswith("."):
            p.append((f"{where}.{key}", f"{path!r} is not accepted: an absolute path to a file whose name ends in "
                                        + " or ".join(suffix)))
        elif name == "resolv.conf" or path in {k.get("host_resolv_conf"), k.get("resolved_resolv_conf"), resolv}:
            p.append((f"{where}.{key}", f"{path} is a resolv.conf; netmend never writes resolv.conf files"))


def check_dns(want):
    """Validate what the node-dns check reads (want.dns: node_nameservers and the kubelet's DNS drop-in,
    want.dns.kubelet), for netmend_dns."""
    return _validated(want, _dns)


def check_forward(want):
    """Validate what the forward check reads (want.pod_cidr and want.forward), for netmend_forward."""
    p = []
    _net(p, "want.pod_cidr", want.get("pod_cidr"))
    _forward(p, want)
    if p:
        raise WantError(p)
    return want


def _check_services(p, services):
    for i, svc in enumerate(services):
        where = f"want.services[{i}]"
        if not isinstance(svc, dict):
            p.append((where, "is not a service port {namespace, name, port_name, protocol, cluster_ip, port, "
                             "endpoints}"))
            continue
        for key in ("namespace", "name"):
            if not svc.get(key):
                p.append((f"{where}.{key}", "is required"))
        _choice(p, f"{where}.protocol", svc.get("protocol"), PROTOCOLS)
        _ip(p, f"{where}.cluster_ip", svc.get("cluster_ip"))
        if not isinstance(svc.get("port"), int) or not 0 < svc["port"] < 65536:  # noqa: PLR2004
            p.append((f"{where}.port", f"{svc.get('port')!r} is not a port number"))
        for j, ep in enumerate(svc.get("endpoints") or []):
            _endpoint(p, f"{where}.endpoints[{j}]", ep)


# --- building the want ------------------------------------------------------------------------------
# The want is built once, in Python, from the roles' public settings (their defaults and the inventory,
# templated by the front end), the node's groups and the cluster truth (netmend.cluster.truth): the same
# values site.yml provisions with. The health role's netmend_want action and the pyinfra deploy call it.

BASE_SYSCTLS = {"net.bridge.bridge-nf-call-iptables": 1, "net.bridge.bridge-nf-call-ip6tables": 1,
                "net.ipv4.ip_forward": 1, "net.ipv4.conf.all.forwarding": 1}
IPV6_FORWARDING = "net.ipv6.conf.all.forwarding"
COREFILE = "coredns/Corefile"  # under dns_manifest_dir, as the dns role writes it
KUBEADM_FRAGMENT = "kubeadm/kubelet-dns.yaml"  # under dns_manifest_dir, on control-plane nodes
KUBELET_DROPIN = "50-netmend-dns.conf"  # under dns_kubelet_config_dir
CONTROL_PLANE_GROUP = "control_plane"
# The settings build() reads: the roles' public variables (defaults/main.yml of each role).
SETTINGS = (
    "netmend_pod_cidr", "netmend_service_cidr", "netmend_cluster_dns", "dns_cluster_domain",
    "kernel_proxy_mode", "kernel_ipvs_scheduler", "kernel_modules_extra", "kernel_modules_file",
    "kernel_ipv6_forwarding", "kernel_sysctls_extra", "kernel_sysctl_file",
    "firewall_mode", "firewall_zone", "firewall_trusted_zone", "firewall_trusted_interfaces",
    "firewall_trusted_sources", "firewall_masquerade", "firewall_control_plane_group", "firewall_coredns_group",
    "firewall_vxlan_port", "firewall_host_network_services", "firewall_ports_extra", "firewall_state_file",
    "forward_mode", "flannel_ip_masq",
    "dns_upstreams", "dns_cache_ttl", "dns_forward_max_concurrent", "dns_node_nameservers", "dns_manifest_dir",
    "dns_kubelet_resolv_conf", "dns_kubelet_config_dir",
)
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _bool(p, name, value):
    if isinstance(value, bool):
        return value
    if str(value).lower() in _TRUE + _FALSE:
        return str(value).lower() in _TRUE
    p.append((name, f"{value!r} is not a boolean (true or false)"))
    return False


def _int(p, name, value):
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        return int(str(value).strip())
    except ValueError:
        p.append((name, f"{value!r} is not an integer"))
        return 0


def build(node, groups, settings, truth):
    """The want of `node`. groups: {group: [host names]}; settings: the roles' public variables (SETTINGS),
    templated; truth: netmend.cluster.truth for the cluster. Raises WantError naming every bad variable;
    the result passes check_want."""
    p = [(name, "is not set") for name in SETTINGS if name not in settings]
    if p:
        raise WantError(p)
    s = settings
    control_plane = node in (groups.get(CONTROL_PLANE_GROUP) or [])
    sysctls = dict(BASE_SYSCTLS)
    if _bool(p, "kernel_ipv6_forwarding", s["kernel_ipv6_forwarding"]):
        sysctls[IPV6_FORWARDING] = 1
    if not isinstance(s["kernel_sysctls_extra"], dict):
        p.append(("kernel_sysctls_extra", "is not a mapping of sysctl keys to values"))
    else:
        sysctls.update(s["kernel_sysctls_extra"])
    try:
        modules_text = kmod.render(kmod.modules_for(s["kernel_proxy_mode"], s["kernel_ipvs_scheduler"],
                                                    list(s["kernel_modules_extra"] or [])))
    except ValueError as exc:
        p.append(("kernel_proxy_mode", str(exc)))
        modules_text = ""
    try:
        ports = firewalld.node_ports(
            node in (groups.get(s["firewall_control_plane_group"]) or []),
            node in (groups.get(s["firewall_coredns_group"]) or []),
            _int(p, "firewall_vxlan_port", s["firewall_vxlan_port"]) or None,
            firewalld.host_network_ports(s["firewall_host_network_services"] or [], node),
            [firewalld.check_port(port, "firewall_ports_extra") for port in s["firewall_ports_extra"] or []])
    except ProblemsError as exc:
        p += exc.problems
        ports = []
    corefile = ""
    if control_plane:
        try:
            corefile = coredns.render_corefile(
                s["dns_cluster_domain"], list(s["dns_upstreams"] or []),
                cache_ttl=_int(p, "dns_cache_ttl", s["dns_cache_ttl"]),
                max_concurrent=_int(p, "dns_forward_max_concurrent", s["dns_forward_max_concurrent"]))
        except ProblemsError as exc:
            p += [(f"dns: {f}", m) for f, m in exc.problems]
    if node not in truth.get("addresses", {}):
        p.append(("node", f"{node!r} is not a node of the cluster (the inventory's control_plane and workers)"))
    if p:
        raise WantError(p)
    want = {
        "node": node, "address": truth["addresses"][node], "pod_cidr": s["netmend_pod_cidr"],
        "service_cidr": s["netmend_service_cidr"], "cluster_dns": s["netmend_cluster_dns"],
        "cluster_domain": s["dns_cluster_domain"], "sysctls": sysctls, "sysctl_file": s["kernel_sysctl_file"],
        "modules_file": s["kernel_modules_file"], "modules_text": modules_text,
        "firewall": {"mode": s["firewall_mode"], "zone": s["firewall_zone"], "trusted_zone": s["firewall_trusted_zone"],
                     "ports": ports, "trusted_interfaces": list(s["firewall_trusted_interfaces"]),
                     "trusted_sources": list(s["firewall_trusted_sources"]),
                     "masquerade": _bool(p, "firewall_masquerade", s["firewall_masquerade"]),
                     "state_file": s["firewall_state_file"]},
        "forward": {"mode": s["forward_mode"]},
        "kube_proxy": {"mode": s["kernel_proxy_mode"]},
        "flannel": {**truth["flannel"], "ip_masq": _bool(p, "flannel_ip_masq", s["flannel_ip_masq"])},
        "leases": truth["leases"], "services": truth["services"],
        "dns": {"corefile_path": f"{s['dns_manifest_dir']}/{COREFILE}" if control_plane else "",
                "corefile": corefile, "node_nameservers": list(s["dns_node_nameservers"] or []),
                "pods": truth["pods"].get(node, []),
                "kubelet": {"path": f"{s['dns_kubelet_config_dir']}/{KUBELET_DROPIN}",
                            "kubeadm_path": f"{s['dns_manifest_dir']}/{KUBEADM_FRAGMENT}" if control_plane else "",
                            "resolv_conf": s["dns_kubelet_resolv_conf"], "cluster_dns": [s["netmend_cluster_dns"]],
                            "cluster_domain": s["dns_cluster_domain"]}},
    }
    if p:
        raise WantError(p)
    return check_want(want)
