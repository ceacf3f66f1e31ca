"""Kernel: br_netfilter loaded, the sysctls Kubernetes needs live, and persisted in netmend's own file.

Field guide failure modes 1 and 2. The kernel role provisions the same settings.
"""

from .. import sysctl
from ..findings import Spec
from ..plan import Action
from .base import Check

SYSCTL_IDS = {
    "net.bridge.bridge-nf-call-iptables": "SYSCTL-BRIDGE-NF-CALL-IPTABLES-OFF",
    "net.bridge.bridge-nf-call-ip6tables": "SYSCTL-BRIDGE-NF-CALL-IP6TABLES-OFF",
    "net.ipv4.ip_forward": "SYSCTL-IP-FORWARD-OFF",
    "net.ipv4.conf.all.forwarding": "SYSCTL-IP-FORWARD-OFF",
    "net.ipv6.conf.all.forwarding": "SYSCTL-IPV6-FORWARDING-OFF",
}


def run(a):
    want, state = a.want, a.facts
    wanted = sysctl.check_settings(want["sysctls"]) if want.get("sysctls") else {}
    if not state.get("bridge_nf_present", True):
        a.find("KMOD-BR-NETFILTER-MISSING", "br_netfilter is not loaded: bridged pod traffic skips iptables",
               "/proc/sys/net/bridge present (br_netfilter loaded)", "/proc/sys/net/bridge is missing",
               "modprobe br_netfilter and persist it in " + want.get("modules_file", "modules-load.d"),
               actions=[Action("KMOD-BR-NETFILTER-MISSING", "command", "br_netfilter", [["modprobe", "br_netfilter"]]),
                        *_modules_file_action(a)])
    live, by_id = state.get("proc", {}), {}
    for key, value in sorted(wanted.items()):
        have = live.get(key)
        if have is None and key.startswith("net.bridge.") and not state.get("bridge_nf_present", True):
            continue  # the keys come with br_netfilter: KMOD-BR-NETFILTER-MISSING is the one finding
        if have is None or not sysctl.same_value(have, value):
            by_id.setdefault(SYSCTL_IDS.get(key, "SYSCTL-VALUE-DRIFT"), []).append((key, value, have))
    for fid, keys in by_id.items():
        actions = [Action(fid, "proc", sysctl.proc_path(k), v, before=f"{k} = {h}\n", after=f"{k} = {v}\n")
                   for k, v, h in keys if h is not None]
        a.find(fid, "kernel parameter " + ", ".join(k for k, _, _ in keys) + " is not as Kubernetes needs it",
               ", ".join(f"{k} = {v}" for k, v, _ in keys),
               ", ".join(f"{k} = {h if h is not None else '(absent)'}" for k, _, h in keys),
               "set it live; the boot value comes from " + want.get("sysctl_file", sysctl.DEFAULT_PATH),
               [f"/proc/sys: {k} = {h}" for k, _, h in keys], actions)
    files = dict(state.get("sysctl_files") or {})
    path = want.get("sysctl_file") or sysctl.DEFAULT_PATH
    boot = sysctl.effective(files)
    wrong = {k: v for k, v in wanted.items() if k not in boot or not sysctl.same_value(boot[k][0], v)}
    if wrong and state.get("sysctl_files") is not None:
        ours = sysctl.render(wanted)
        after_files = {**files, path: ours}
        later = sysctl.conflicts(path, wanted, after_files)
        actions = [] if later else [Action("SYSCTL-NOT-PERSISTED", "file", path, ours, files.get(path, ""), ours)]
        fix = (f"rewrite netmend's {path}" if not later else
               "the host's own file(s) " + ", ".join(sorted({c['path'] for c in later})) + " set another value "
               "after netmend's file: change them (netmend never edits the host's sysctl files)")
        a.find("SYSCTL-NOT-PERSISTED", "a reboot would bring back the wrong kernel parameters",
               ", ".join(f"{k} = {v} at boot" for k, v in sorted(wrong.items())),
               ", ".join(f"{k} = {boot[k][0]} ({boot[k][1]})" if k in boot else f"{k} unset" for k in sorted(wrong)),
               fix, [f"{c['path']}: {c['key']} = {c['value']}" for c in later], actions)


def _modules_file_action(a):
    path, text = a.want.get("modules_file"), a.want.get("modules_text")
    if not path or not text or a.facts.get("modules_file") == text:
        return []
    return [Action("KMOD-BR-NETFILTER-MISSING", "file", path, text, a.facts.get("modules_file") or "", text)]


CHECKS = (Check("kernel", ("proc", "sysctl_files", "modules_file"), (
    Spec("KMOD-BR-NETFILTER-MISSING", "critical", "kernel"),
    Spec("SYSCTL-BRIDGE-NF-CALL-IPTABLES-OFF", "error", "kernel"),
    Spec("SYSCTL-BRIDGE-NF-CALL-IP6TABLES-OFF", "warning", "kernel"),
    Spec("SYSCTL-IP-FORWARD-OFF", "critical", "kernel"),
    Spec("SYSCTL-IPV6-FORWARDING-OFF", "warning", "kernel"),
    Spec("SYSCTL-VALUE-DRIFT", "warning", "kernel"),
    Spec("SYSCTL-NOT-PERSISTED", "warning", "kernel")), run),)
