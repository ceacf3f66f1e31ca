"""Jinja filters over netmend's pure core, so roles compute what the core knows instead of copying it."""

import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

_MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from netmend.errors import ProblemsError  # noqa: E402
from netmend.firewalld import FirewalldError, check_port, host_network_ports, node_ports  # noqa: E402
from netmend.kmod import modules_for  # noqa: E402
from netmend.proxyconfig import validate as validate_proxy_config  # noqa: E402

# kube-proxy settings Ansible converts before the module sees them ("32768" -> 32768, "yes" -> true).
PROXY_INTS = ("conntrack_max_per_core", "conntrack_min")
PROXY_BOOLS = ("ipvs_strict_arp",)


def kernel_modules(proxy_mode, ipvs_scheduler="rr", extras=()):
    """The kernel modules a node needs for kube-proxy's mode (see netmend.kmod.modules_for)."""
    try:
        return modules_for(proxy_mode, ipvs_scheduler, list(extras))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from None


def firewall_ports(hostname, *, control_plane=False, dns=False, vxlan_port=0, services=(), extra=()):  # noqa: PLR0913
    """The ports `hostname` opens in firewalld (see netmend.firewalld.node_ports)."""
    try:
        extra = [check_port(p, "firewall_ports_extra") for p in extra]
        return node_ports(control_plane, dns, vxlan_port or None, host_network_ports(services, hostname), extra)
    except FirewalldError as exc:
        raise AnsibleFilterError(str(exc)) from None


def kube_proxy_problems(settings, prefix="kube_proxy_"):
    """Every problem with the kube_proxy role's settings as "variable: message" (see netmend.proxyconfig),
    with the values as the module receives them; [] when kube-proxy accepts them."""
    settings = dict(settings)
    for key in PROXY_INTS:
        if isinstance(settings.get(key), str) and settings[key].strip().lstrip("-").isdigit():
            settings[key] = int(settings[key])
    for key in PROXY_BOOLS:
        try:
            settings[key] = boolean(settings[key], strict=True)
        except (TypeError, KeyError):
            pass
    try:
        validate_proxy_config(settings, prefix)
    except ProblemsError as exc:
        return [f"{name}: {message}" for name, message in exc.problems]
    return []


class FilterModule:
    def filters(self):
        return {"netmend_kernel_modules": kernel_modules, "netmend_firewall_ports": firewall_ports,
                "netmend_kube_proxy_problems": kube_proxy_problems}
