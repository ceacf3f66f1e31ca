"""Kernel: the modules a node needs, the sysctls Kubernetes needs live, both persisted in netmend's own files.

Field guide failure modes 1 and 2. This is the one judge: the kernel role's netmend_kmod and netmend_sysctl
apply this check's plan (each with its part of the want), and the audit reports it.

- Modules (the names of want.modules_text, facts["modules"] from netmend.kmod.status): each is loaded or
  built in. An absent br_netfilter is KMOD-BR-NETFILTER-MISSING, any other absent module
  KMOD-MODULE-MISSING; the fix is `modprobe <name>`.
- netmend's modules-load.d file (want.modules_file) is exactly want.modules_text, or KMOD-NOT-PERSISTED
  rewrites it (after every modprobe, so a module that cannot be loaded leaves the file as it was).
- Live sysctls (unless want.sysctl_live is false): /proc/sys holds each wanted value, or it is written;
  the executor puts back the values already written when the kernel rejects a later one.
- Sysctls at boot (want.sysctl_file; empty: not judged). One rule for netmend's own file: it is exactly
  sysctl.render(wanted); and a boot (the files of want.sysctl_scan, systemd-sysctl's order) must end with
  the wanted values. Either not so is SYSCTL-NOT-PERSISTED. The fix rewrites netmend's file when it differs,
  and nothing else: a host file applied after it with another value, or one that masks it, is named and left
  alone (netmend never edits the host's files), so the finding stays, with no action, until the host's file
  changes. File modes are not judged (a rewritten file keeps its mode, a new one is 0644).
"""

import posixpath

from .. import kmod, sysctl
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
BR_NETFILTER = "br_netfilter"


def run(a):
    _modules(a)
    _modules_file(a)
    wanted = sysctl.check_settings(a.want["sysctls"]) if a.want.get("sysctls") else {}
    if wanted and a.want.get("sysctl_live", True):
        _live(a, wanted)
    path = a.want.get("sysctl_file", sysctl.DEFAULT_PATH)
    if wanted and path and a.facts.get("sysctl_files") is not None:
        _persisted(a, wanted, path)


def _modules(a):
    listed = a.want.get("modules_file") or "modules-load.d"
    for name, state in (a.facts.get("modules") or {}).items():
        if state.state != "absent":
            continue
        br = kmod.canonical(name) == BR_NETFILTER
        fid = "KMOD-BR-NETFILTER-MISSING" if br else "KMOD-MODULE-MISSING"
        summary = ("br_netfilter is not loaded: bridged pod traffic skips iptables" if br
                   else f"kernel module {name} is not in the running kernel")
        a.find(fid, summary, f"{name} loaded or built in", f"{name} is not in the running kernel",
               f"modprobe {name}; {listed} lists it for boot", state.checked,
               [Action(fid, "command", name, [["modprobe", name]])])


def _modules_file(a):
    path, text, have = a.want.get("modules_file"), a.want.get("modules_text"), a.facts.get("modules_file")
    if not path or not text or have == text:
        return
    names = kmod.parse_modules_load(text, "want.modules_text")
    listed = {kmod.canonical(line.strip()) for line in (have or "").splitlines()
              if line.strip() and line.strip()[0] not in "#;"}
    lacking = [n for n in names if kmod.canonical(n) not in listed]
    if have is None:
        actual = f"{path} is absent"
    elif lacking:
        actual = f"{path} does not list " + ", ".join(lacking)
    else:
        actual = f"{path} lists them but is not the kernel role's text"
    summary = ("a reboot would not load " + ", ".join(lacking) if lacking
               else f"netmend's {path} is not as the kernel role writes it")
    a.find("KMOD-NOT-PERSISTED", summary, f"{path} listing " + ", ".join(names), actual,
           f"rewrite netmend's {path}", [f"{path}: {line}" for line in (have or "").splitlines() if line.strip()],
           [Action("KMOD-NOT-PERSISTED", "file", path, text, have or "", text)])


def _live(a, wanted):
    live, by_id = a.facts.get("proc") or {}, {}
    for key, value in sorted(wanted.items()):
        have = live.get(key)
        if have is None and key.startswith("net.bridge.") and not a.facts.get("bridge_nf_present", True):
            continue  # the keys come with br_netfilter: its finding (or netmend_sysctl's validation) says so
        if have is None or not sysctl.same_value(have, value):
            by_id.setdefault(SYSCTL_IDS.get(key, "SYSCTL-VALUE-DRIFT"), []).append((key, value, have))
    for fid, keys in by_id.items():
        actions = [Action(fid, "proc", sysctl.proc_path(k), v, before=f"{k} = {h}\n", after=f"{k} = {v}\n")
                   for k, v, h in keys if h is not None]
        a.find(fid, "kernel parameter " + ", ".join(k for k, _, _ in keys) + " is not as Kubernetes needs it",
               ", ".join(f"{k} = {v}" for k, v, _ in keys),
               ", ".join(f"{k} = {h if h is not None else '(absent)'}" for k, _, h in keys),
               "set it live; the boot value comes from " + (a.want.get("sysctl_file") or sysctl.DEFAULT_PATH),
               [f"/proc/sys: {k} = {h}" for k, _, h in keys], actions)


def scan_split(files, scan):
    """(dirs, last) of the scanned entries: a scanned file is a key of `files`, every other entry a directory."""
    return [e for e in scan if e not in files], [e for e in scan if e in files]


def _persisted(a, wanted, path):
    files = dict(a.facts["sysctl_files"])
    dirs, last = scan_split(files, a.want.get("sysctl_scan") or (*sysctl.SYSCTL_DIRS, sysctl.ETC_SYSCTL_CONF))
    ours, have = sysctl.render(wanted), files.get(path)
    boot = sysctl.effective(files, dirs, last)
    wrong = {k: v for k, v in wanted.items() if k not in boot or not sysctl.same_value(boot[k][0], v)}
    if not wrong and have == ours:
        return
    after = {**files, path: ours}
    later = sysctl.conflicts(path, wanted, after, dirs, last)
    fixes = [] if have == ours else [f"rewrite netmend's {path}"]
    if later:
        fixes.append("the host's own file(s) " + ", ".join(sorted({c["path"] for c in later})) + " set another "
                     "value after netmend's file: change them (netmend never edits the host's sysctl files)")
    if path not in sysctl.load_order(after, dirs, last):
        masker = sysctl.masked_by(path, after, dirs)
        fixes.append(f"a boot does not read {path}: " + (f"{masker} has its name in a directory read first"
                                                          if masker else f"{posixpath.dirname(path)} is not scanned"))
    if wrong:
        summary = "a reboot would bring back the wrong kernel parameters"
        expected = ", ".join(f"{k} = {v} at boot" for k, v in sorted(wrong.items()))
        actual = ", ".join(f"{k} = {boot[k][0]} ({boot[k][1]})" if k in boot else f"{k} unset" for k in sorted(wrong))
    else:
        summary = f"netmend's {path} is not as the kernel role writes it (a boot still ends with the wanted values)"
        expected = f"{path} with exactly the kernel role's settings"
        actual = f"{path} is absent" if have is None else f"{path} differs"
    actions = [] if have == ours else [Action("SYSCTL-NOT-PERSISTED", "file", path, ours, have or "", ours)]
    a.find("SYSCTL-NOT-PERSISTED", summary, expected, actual, "; ".join(fixes),
           [f"{c['path']}: {c['key']} = {c['value']}" for c in later], actions)


CHECKS = (Check("kernel", ("proc", "sysctl_files", "modules_file", "modules"), (
    Spec("KMOD-BR-NETFILTER-MISSING", "critical", "kernel"),
    Spec("KMOD-MODULE-MISSING", "error", "kernel"),
    Spec("KMOD-NOT-PERSISTED", "warning", "kernel"),
    Spec("SYSCTL-BRIDGE-NF-CALL-IPTABLES-OFF", "error", "kernel"),
    Spec("SYSCTL-BRIDGE-NF-CALL-IP6TABLES-OFF", "warning", "kernel"),
    Spec("SYSCTL-IP-FORWARD-OFF", "critical", "kernel"),
    Spec("SYSCTL-IPV6-FORWARDING-OFF", "warning", "kernel"),
    Spec("SYSCTL-VALUE-DRIFT", "warning", "kernel"),
    Spec("SYSCTL-NOT-PERSISTED", "warning", "kernel")), run),)
