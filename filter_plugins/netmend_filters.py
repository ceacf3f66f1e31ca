"""Jinja filters over netmend's pure core, so roles compute what the core knows instead of copying it."""

import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

_MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from netmend.firewalld import FirewalldError, check_port, host_network_ports, node_ports  # noqa: E402
from netmend.kmod import modules_for  # noqa: E402


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


class FilterModule:
    def filters(self):
        return {"netmend_kernel_modules": kernel_modules, "netmend_firewall_ports": firewall_ports}
