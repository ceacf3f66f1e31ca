"""Kernel modules a Kubernetes node needs: which ones, whether the running kernel has them, the boot list.

Pure and stdlib-only: imported by the netmend_kmod module as `ansible.module_utils.netmend.kmod` and
by the tests as `netmend.kmod`. Everything reads the host through a `Probe` (file text and path
existence), so every decision can be tested on fixtures.

A module counts as present when the kernel runs its code, loaded or built in. Built-in modules
are not in /proc/modules, and a kernel installed without /lib/modules (a VM or container kernel
with everything built in) has no modules.builtin either; there `modprobe br_netfilter` fails
although bridge netfilter works. `status` therefore also reads /sys/module, the kernel config and
the files a module's code creates (`EVIDENCE`).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROXY_MODES = ("iptables", "ipvs", "nftables")
# kube-proxy's --ipvs-scheduler values that name a kernel scheduler module ip_vs_<name>.
IPVS_SCHEDULERS = ("rr", "lc", "dh", "sh", "sed", "nq", "wrr", "wlc")
DEFAULT_IPVS_SCHEDULER = "rr"  # kube-proxy's choice when the scheduler is left empty
# Every node: bridged pod traffic through iptables, the container runtime's overlayfs, conntrack for NAT.
BASE_MODULES = ("br_netfilter", "overlay", "nf_conntrack")
# kube-proxy in ipvs mode checks for these at start (the schedulers it may use besides the configured one).
IPVS_MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh")
NFTABLES_MODULES = ("nf_tables",)

STATES = ("loaded", "builtin", "absent")
# A name the netmend_kmod module and modules_for accept: what modprobe takes, lower case.
MODULE_NAME = re.compile(r"^[a-z0-9_-]+$")
# A line of a modules-load.d file: kernel module names may have capitals (xt_MASQUERADE).
_LOAD_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_PROC_STATES = ("Live", "Loading", "Unloading")

PROC_MODULES = "/proc/modules"
PROC_FILESYSTEMS = "/proc/filesystems"
OSRELEASE = "/proc/sys/kernel/osrelease"
SYS_MODULE = "/sys/module"
DEFAULT_LOAD_FILE = "/etc/modules-load.d/netmend.conf"
# Where kernels leave their build config; {release} is the running kernel's.
KERNEL_CONFIGS = ("/proc/config.gz", "/boot/config-{release}", "/lib/modules/{release}/config")


def modules_builtin_path(release):
    return f"/lib/modules/{release}/modules.builtin"


@dataclass(frozen=True)
class Evidence:
    """What the code of a built-in module leaves behind: a path that `exists`, or a `filesystem`
    listed in /proc/filesystems."""

    kind: str
    target: str

    def describe(self, present=True):
        if self.kind == "filesystem":
            return f"{PROC_FILESYSTEMS} {'lists' if present else 'does not list'} {self.target}"
        return f"{self.target} {'exists' if present else 'is missing'}"


# What proves a module's function is in the running kernel when it is built in and the kernel
# ships no modules.builtin. None: no file shows it; only /proc/modules, modules.builtin,
# /sys/module/<name> or the kernel config can.
EVIDENCE = {
    "br_netfilter": Evidence("exists", "/proc/sys/net/bridge"),
    "nf_conntrack": Evidence("exists", "/proc/sys/net/netfilter/nf_conntrack_max"),
    "overlay": Evidence("filesystem", "overlay"),
    "ip_vs": Evidence("exists", "/proc/net/ip_vs"),
    # nf_tables has no procfs or sysfs file and no parameters (so no /sys/module/nf_tables);
    # CONFIG_NF_TABLES in the kernel config is its proof.
    "nf_tables": None,
    # vxlan has parameters, so a built-in vxlan shows as /sys/module/vxlan, which status reads for
    # every module.
    "vxlan": None,
    **{f"ip_vs_{s}": None for s in IPVS_SCHEDULERS},
}

# The kernel config symbol that builds each module (=y built in, =m a loadable module).
KCONFIG = {
    "br_netfilter": "BRIDGE_NETFILTER",
    "bridge": "BRIDGE",
    "overlay": "OVERLAY_FS",
    "nf_conntrack": "NF_CONNTRACK",
    "nf_nat": "NF_NAT",
    "nf_tables": "NF_TABLES",
    "ip_vs": "IP_VS",
    **{f"ip_vs_{s}": f"IP_VS_{s.upper()}" for s in IPVS_SCHEDULERS},
    "vxlan": "VXLAN",
    "veth": "VETH",
    "ipip": "NET_IPIP",
    "wireguard": "WIREGUARD",
}


def canonical(name):
    """The kernel's spelling of a module name: modprobe treats - and _ alike, /proc/modules shows _."""
    return name.replace("-", "_")


# --- parsers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcModule:
    """One line of /proc/modules."""

    name: str
    size: int
    refcount: int | None  # None on kernels built without module unloading ("-")
    used_by: tuple
    state: str
    address: str
    taints: str = ""


def parse_proc_modules(text, source=PROC_MODULES):
    """{name: ProcModule} from /proc/modules: `name size refcount deps state offset [(taints)]`,
    deps being `-` or `a,b,`. Raises ValueError naming the source and line of a malformed line."""
    modules = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) not in (6, 7):
            raise ValueError(f"{source}:{lineno}: {line!r} is not 'name size refcount deps state offset'")
        name, size, refcount, deps, state, address = fields[:6]
        taints = "".join(fields[6:])
        if (not size.isdigit() or not (refcount.isdigit() or refcount == "-") or state not in _PROC_STATES
                or not address.startswith("0x") or (taints and not re.fullmatch(r"\([A-Z]+\)", taints))):
            raise ValueError(f"{source}:{lineno}: {line!r} is not 'name size refcount deps state offset'")
        used_by = () if deps == "-" else tuple(d for d in deps.split(",") if d)
        modules[name] = ProcModule(name=name, size=int(size), refcount=None if refcount == "-" else int(refcount),
                                   used_by=used_by, state=state, address=address, taints=taints.strip("()"))
    return modules


def parse_modules_builtin(text, source="modules.builtin"):
    """{canonical name: path} from /lib/modules/<release>/modules.builtin (`kernel/net/bridge/br_netfilter.ko`).
    Raises ValueError naming the source and line of a line that is not a module path."""
    modules = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        path = line.strip()
        if not path:
            continue
        base = path.rsplit("/", 1)[-1]
        match = re.fullmatch(r"([A-Za-z0-9_-]+)\.ko(\.(?:xz|gz|zst))?", base)
        if not match or " " in path:
            raise ValueError(f"{source}:{lineno}: {line!r} is not a module path such as "
                             "kernel/net/bridge/br_netfilter.ko")
        modules.setdefault(canonical(match.group(1)), path)
    return modules


def parse_modules_load(text, source):
    """The module names of a modules-load.d(5) file, in order: one name a line; blank lines and
    lines starting with # or ; are ignored. Raises ValueError naming the file and line of anything
    else (a name with spaces, parameters, an inline comment)."""
    names = []
    for lineno, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry or entry[0] in "#;":
            continue
        if not _LOAD_NAME.match(entry):
            raise ValueError(f"{source}:{lineno}: {entry!r} is not a module name; a modules-load.d line holds "
                             "one name (letters, digits, _ and -) and comments start the line with # or ;")
        names.append(entry)
    return names


def parse_filesystems(text):
    """The filesystem names of /proc/filesystems (`nodev\toverlay`, `\text4`)."""
    return [line.split()[-1] for line in text.splitlines() if line.strip()]


def parse_kernel_config(text):
    """{symbol without CONFIG_: value} of a kernel .config; `# CONFIG_X is not set` gives None."""
    config = {}
    for raw in text.splitlines():
        line = raw.strip()
        unset = re.fullmatch(r"# CONFIG_(\w+) is not set", line)
        if unset:
            config[unset.group(1)] = None
        elif line.startswith("CONFIG_") and "=" in line:
            key, value = line[len("CONFIG_"):].split("=", 1)
            config[key] = value.strip('"')
    return config


# --- probes -----------------------------------------------------------------------------------------


class Probe:
    """What `status` asks of a host: a file's text (None when it cannot be read) and whether a path exists."""

    def read(self, path):
        raise NotImplementedError

    def exists(self, path):
        raise NotImplementedError


class FileProbe(Probe):
    """The files of a host, or of a fixture tree laid out like one under `root`. Gzipped files
    (/proc/config.gz) are read uncompressed."""

    def __init__(self, root="/"):
        self.root = Path(root)

    def _path(self, path):
        return self.root / path.lstrip("/")

    def read(self, path):
        try:
            data = self._path(path).read_bytes()
        except OSError:
            return None
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                return None
        return data.decode("utf-8", errors="replace")

    def exists(self, path):
        return self._path(path).exists()


class DictProbe(Probe):
    """Answers from a dict {path: text}; a value of True marks a path that exists without text
    (a directory). A path exists when it or anything under it is a key."""

    def __init__(self, files):
        self.files = dict(files)

    def read(self, path):
        value = self.files.get(path)
        return value if isinstance(value, str) else None

    def exists(self, path):
        prefix = path.rstrip("/") + "/"
        return path in self.files or any(key.startswith(prefix) for key in self.files)


class HostProbe(Probe):
    """The files of a node through a front end's host adapter (netmend.facts): `read(path)` (text, None when
    it does not exist), `isdir` and `isfile`. Gzipped text (/proc/config.gz, read with surrogateescape) is
    read uncompressed; a file that cannot be read is None, as for FileProbe."""

    def __init__(self, host):
        self.host = host

    def read(self, path):
        try:
            text = self.host.read(path)
        except (OSError, RuntimeError):
            return None
        if text is not None and text[:2] == "\x1f\x8b":
            try:
                return gzip.decompress(text.encode("utf-8", "surrogateescape")).decode("utf-8", errors="replace")
            except (OSError, EOFError, UnicodeError):
                return None
        return text

    def exists(self, path):
        return self.host.isdir(path) or self.host.isfile(path)


def as_probe(probe):
    return DictProbe(probe) if isinstance(probe, Mapping) else probe


# --- status -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    """Whether the running kernel has a module. `evidence` is the proof (for absent: everything
    that was checked, joined); `checked` lists each finding in the order it was made."""

    name: str
    state: str
    evidence: str
    checked: tuple


def kernel_release(probe):
    text = as_probe(probe).read(OSRELEASE)
    return text.strip() if text and text.strip() else None


def _kernel_config(probe, release):
    """(path, config dict) of the first kernel config found, or (None, None)."""
    for pattern in KERNEL_CONFIGS:
        if "{release}" in pattern and not release:
            continue
        path = pattern.format(release=release)
        text = probe.read(path)
        if text is not None:
            return path, parse_kernel_config(text)
    return None, None


def status(name, probe):
    """Status of module `name` ("loaded", "builtin" or "absent") on the host `probe` answers for
    (a Probe or a dict for DictProbe). The first proof wins, in this order: /proc/modules,
    modules.builtin, /sys/module/<name>, EVIDENCE (only when there is no modules.builtin),
    then the kernel config. Raises ValueError when /proc/modules or modules.builtin is malformed."""
    probe = as_probe(probe)
    key = canonical(name)
    release = kernel_release(probe)
    checked = []
    for source in (_proc_modules, _modules_builtin, _sys_module, _evidence, _kernel_config_says):
        state, finding = source(key, probe, release)
        if finding:
            checked.append(finding)
        if state:
            return Status(name=name, state=state, evidence=finding, checked=tuple(checked))
    return Status(name=name, state="absent", evidence="; ".join(checked), checked=tuple(checked))


# Each source answers (state or None, what it found or None).


def _proc_modules(key, probe, _release):
    text = probe.read(PROC_MODULES)
    if text is None:
        return None, f"{PROC_MODULES} is missing (a kernel without loadable modules)"
    entry = parse_proc_modules(text).get(key)
    if entry and entry.state != "Unloading":
        return "loaded", f"{PROC_MODULES} lists {key} ({entry.state})"
    return None, f"{PROC_MODULES} does not list {key}" + (" (it is unloading)" if entry else "")


def _modules_builtin(key, probe, release):
    path = modules_builtin_path(release or "$(uname -r)")
    text = probe.read(path) if release else None
    if text is None:
        return None, f"{path} is missing"
    builtin = parse_modules_builtin(text, path)
    if key in builtin:
        return "builtin", f"{path} lists {builtin[key]}"
    return None, f"{path} does not list {key}"


def _sys_module(key, probe, _release):
    path = f"{SYS_MODULE}/{key}"
    if not probe.exists(path):
        return None, f"{path} is missing"
    # Loadable modules have initstate; built-in ones appear only through parameters or a version.
    if probe.exists(f"{path}/initstate"):
        return "loaded", f"{path}/initstate exists (a loaded module)"
    return "builtin", f"{path} exists without initstate (built in)"


def _evidence(key, probe, release):
    proof = EVIDENCE.get(key)
    if proof is None or (release and probe.exists(modules_builtin_path(release))):
        return None, None
    if proof.kind == "filesystem":
        text = probe.read(PROC_FILESYSTEMS)
        present = text is not None and proof.target in parse_filesystems(text)
    else:
        present = probe.exists(proof.target)
    return ("builtin" if present else None), proof.describe(present)


def _kernel_config_says(key, probe, release):
    symbol = KCONFIG.get(key)
    if not symbol:
        return None, None
    path, config = _kernel_config(probe, release)
    if config is None:
        paths = ", ".join(p.format(release=release or "$(uname -r)") for p in KERNEL_CONFIGS)
        return None, f"no kernel config ({paths})"
    value = config.get(symbol)
    if value == "y":
        return "builtin", f"{path} has CONFIG_{symbol}=y"
    if value == "m":
        return None, f"{path} has CONFIG_{symbol}=m (a loadable module)"
    if symbol in config:
        return None, f"{path} has '# CONFIG_{symbol} is not set' (the kernel was built without it)"
    return None, f"{path} has no CONFIG_{symbol}"


# --- what a node needs ------------------------------------------------------------------------------


def _bad_names(values, where):
    problems = []
    for i, value in enumerate(values):
        if not isinstance(value, str) or not MODULE_NAME.match(value):
            problems.append(f"{where}[{i}] {value!r} is not a module name (a-z, 0-9, _ and -)")
    return problems


def dedupe(names):
    """names without repeats, - and _ being the same, first spelling and order kept."""
    seen, kept = set(), []
    for name in names:
        if canonical(name) not in seen:
            seen.add(canonical(name))
            kept.append(name)
    return kept


def modules_for(proxy_mode, ipvs_scheduler=DEFAULT_IPVS_SCHEDULER, extras=()):
    """The modules a node needs for kube-proxy's `proxy_mode`, in load order: BASE_MODULES, then
    the ipvs modules and ip_vs_<ipvs_scheduler> (ipvs) or nf_tables (nftables), then `extras`.
    An empty scheduler is kube-proxy's default, rr. Raises ValueError naming each bad value and
    what is accepted."""
    problems = []
    if proxy_mode not in PROXY_MODES:
        problems.append(f"proxy_mode {proxy_mode!r} is not accepted; choose one of: {', '.join(PROXY_MODES)}")
    scheduler = ipvs_scheduler or DEFAULT_IPVS_SCHEDULER
    if scheduler not in IPVS_SCHEDULERS:
        problems.append(f"ipvs_scheduler {ipvs_scheduler!r} is not accepted; choose one of: "
                        f"{', '.join(IPVS_SCHEDULERS)}")
    if isinstance(extras, str) or not isinstance(extras, (list, tuple)):
        problems.append(f"extras {extras!r} must be a list of module names")
        extras = ()
    problems += _bad_names(extras, "extras")
    if problems:
        raise ValueError("; ".join(problems))
    names = list(BASE_MODULES)
    if proxy_mode == "ipvs":
        names += [*IPVS_MODULES, f"ip_vs_{scheduler}"]
    elif proxy_mode == "nftables":
        names += NFTABLES_MODULES
    return dedupe([*names, *extras])


def render(names):
    """The text of netmend's modules-load.d file for `names` (deduplicated, order kept).
    Raises ValueError for a name modprobe would not take."""
    names = list(names)
    problems = _bad_names(names, "names")
    if problems:
        raise ValueError("; ".join(problems))
    header = [
        "# Managed by netmend (netmend_kmod): local changes are overwritten.",
        "# Kernel modules this Kubernetes node needs; systemd-modules-load loads them at boot.",
    ]
    return "\n".join([*header, *dedupe(names)]) + "\n"
