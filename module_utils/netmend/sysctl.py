"""Kernel parameters: sysctl.d files, the order a boot applies them in, and conflicts with our file.

Pure and stdlib-only: imported by the netmend_sysctl module (as ansible.module_utils.netmend.sysctl),
by other front ends and by the unit tests (as netmend.sysctl). Everything here works on text and
data; reading files and /proc/sys is the caller's business.

The file format is the one systemd-sysctl and procps read: blank lines, comments starting with
`#` or `;`, `key = value` (spaces optional), a leading `-` on the key (ignore errors when
applying), keys written with `/` instead of `.`.

Keys are kept in dotted form and `proc_path` turns every dot into a slash. A dot that is part of
an interface name (net.ipv4.conf.eth0/100.rp_filter, net/ipv4/conf/eth0.100/rp_filter) cannot be
told apart that way; such keys are out of scope and reported as unsupported, like glob keys.
"""

import posixpath
import re
from dataclasses import dataclass

from .errors import ProblemsError

# systemd-sysctl's search path, highest precedence first (sysctl.d(5)); /lib/sysctl.d is the
# split-/usr location that procps still reads.
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
ETC_SYSCTL_CONF = "/etc/sysctl.conf"
CONF_SUFFIX = ".conf"
PROC_SYS = "/proc/sys"
DEFAULT_PATH = "/etc/sysctl.d/90-netmend.conf"
HEADER = ("Managed by netmend (netmend_sysctl). Local edits are overwritten;",
          "set the values in the inventory instead.")

COMMENT_CHARS = "#;"
GLOB_CHARS = "*?["
ACCEPTED = ("accepted: blank lines, comments starting with # or ;, and `key = value` where the key is a "
            "dotted or slash-separated name without spaces or globs, optionally prefixed with -")
# What netmend itself writes: dotted lower-case names with at least two components.
KEY = re.compile(r"^[a-z0-9_-]+(\.[a-z0-9_-]+)+$")
KEY_ACCEPTED = "a dotted lower-case name such as net.ipv4.ip_forward"
VALUE_ACCEPTED = "a string or an integer such as 1 or '4096 87380 6291456'"


class SysctlFileError(ValueError):
    """A bad line of a sysctl file: `source`, `line` (1-based) and `reason`.

    `applied_at_boot` is False for lines systemd-sysctl skips (no `=`, no key, spaces in the key)
    and True for valid systemd syntax that netmend does not model (globs, dots inside names).
    """

    def __init__(self, source, line, reason, applied_at_boot=False):
        self.source, self.line, self.reason, self.applied_at_boot = source, line, reason, applied_at_boot
        super().__init__(f"{source}, line {line}: {reason}; {ACCEPTED}")


class SettingsError(ProblemsError):
    """Bad settings to write. `problems` is a list of (key, message)."""


@dataclass(frozen=True)
class Entry:
    """One assignment: the key in dotted form, the value as written (stripped)."""

    key: str
    value: str
    line: int
    source: str
    ignore_errors: bool = False


def _parse_line(raw, number, source):
    """The Entry of one line, None for blank lines and comments; raises SysctlFileError."""
    text = raw.strip()
    if not text or text[0] in COMMENT_CHARS:
        return None
    if "=" not in text:
        raise SysctlFileError(source, number, f"{text!r} is not an assignment (no '=')")
    key, value = (part.strip() for part in text.split("=", 1))
    ignore_errors = key.startswith("-")
    if ignore_errors:
        key = key[1:].lstrip()
    if not key:
        raise SysctlFileError(source, number, "the key is empty")
    if any(ch.isspace() for ch in key):
        raise SysctlFileError(source, number, f"the key {key!r} contains spaces")
    if any(ch in GLOB_CHARS for ch in key):
        raise SysctlFileError(source, number, f"the key {key!r} is a glob; globs are not supported", True)
    if "/" in key and "." in key:
        raise SysctlFileError(source, number, f"the key {key!r} mixes '/' and '.' (a dot inside a name such as "
                                              "an interface eth0.100); such keys are not supported", True)
    key = key.strip("/").replace("/", ".")
    if not key or "" in key.split("."):
        raise SysctlFileError(source, number, f"the key {key!r} has an empty component", True)
    return Entry(key=key, value=value, line=number, source=source, ignore_errors=ignore_errors)


def parse(text, source):
    """The entries of a sysctl file, in file order. Raises SysctlFileError on the first bad line."""
    entries = []
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = _parse_line(raw, number, source)
        if entry is not None:
            entries.append(entry)
    return entries


def parse_lenient(text, source):
    """(entries, errors): the good lines, and a SysctlFileError per line a boot skips or we cannot model."""
    entries, errors = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        try:
            entry = _parse_line(raw, number, source)
        except SysctlFileError as exc:
            errors.append(exc)
            continue
        if entry is not None:
            entries.append(entry)
    return entries, errors


def _norm_dir(path):
    return posixpath.normpath(path)


def load_order(files, dirs=SYSCTL_DIRS, last=(ETC_SYSCTL_CONF,)):
    """The paths of `files` ({absolute path: text}) in the order a boot applies them.

    systemd-sysctl's rules: only non-hidden `*.conf` files directly in `dirs` count; a basename in
    an earlier directory masks the same basename in later ones (a symlink to /dev/null reads as an
    empty file, so it masks too); the survivors are applied in lexical (byte) order of basename.
    Then the paths of `last` that are in `files`, in that order. The default puts /etc/sysctl.conf
    last, as `sysctl --system` (procps) does. Debian 12 boots with systemd-sysctl (procps.service
    is an alias of it), which reads /etc/sysctl.conf only through the /etc/sysctl.d/99-sysctl.conf
    symlink, in that basename's place; pass last=() to model exactly that.
    Paths in no listed directory and not in `last` are not read at boot and are left out.
    """
    rank = {_norm_dir(d): i for i, d in reversed(list(enumerate(dirs)))}
    last = [posixpath.normpath(p) for p in last]
    chosen = {}  # basename -> (dir rank, path)
    for path in files:
        path_n = posixpath.normpath(path)
        directory, base = posixpath.split(path_n)
        if path_n in last or directory not in rank:
            continue
        if not base.endswith(CONF_SUFFIX) or base.startswith("."):
            continue
        if base not in chosen or rank[directory] < chosen[base][0]:
            chosen[base] = (rank[directory], path)
    order = [chosen[base][1] for base in sorted(chosen)]
    normalised = {posixpath.normpath(p): p for p in files}
    order.extend(normalised[p] for p in dict.fromkeys(last) if p in normalised)
    return order


def masked_by(path, files, dirs=SYSCTL_DIRS):
    """The path of `files` that masks `path` (same basename in an earlier directory), or None."""
    directory, base = posixpath.split(posixpath.normpath(path))
    dirs = [_norm_dir(d) for d in dirs]
    if directory not in dirs:
        return None
    for earlier in dirs[:dirs.index(directory)]:
        candidate = posixpath.join(earlier, base)
        for other in files:
            if posixpath.normpath(other) == candidate:
                return other
    return None


def file_errors(files, dirs=SYSCTL_DIRS, last=(ETC_SYSCTL_CONF,)):
    """A SysctlFileError per bad line of the files a boot reads, in load order."""
    errors = []
    for path in load_order(files, dirs, last):
        errors.extend(parse_lenient(files[path], path)[1])
    return errors


def _assignments(files, dirs, last):
    """(path, entries) in load order; bad lines are skipped, as systemd-sysctl skips them."""
    return [(path, parse_lenient(files[path], path)[0]) for path in load_order(files, dirs, last)]


def effective(files, dirs=SYSCTL_DIRS, last=(ETC_SYSCTL_CONF,)):
    """{key: (value, path)}: the value each key ends with after a boot, and the file that set it."""
    result = {}
    for path, entries in _assignments(files, dirs, last):
        for entry in entries:
            result[entry.key] = (entry.value, path)
    return result


def normalise(value):
    """A value with its whitespace collapsed: ints as decimal text, fields separated by one space."""
    return " ".join(str(value).split())


def _field_equal(a, b):
    try:
        return int(a, 10) == int(b, 10)
    except ValueError:
        return a == b


def same_value(a, b):
    """Whether two values are equal field by field (" 1 " == "1", "4096\\t87380" == "4096 87380", "01" == "1")."""
    fa, fb = str(a).split(), str(b).split()
    return len(fa) == len(fb) and all(_field_equal(x, y) for x, y in zip(fa, fb))


def conflicts(our_path, wanted, files, dirs=SYSCTL_DIRS, last=(ETC_SYSCTL_CONF,)):
    """The files applied after ours that set a wanted key to another value.

    wanted: {key: value as string}. files: {path: text}, ours included. Returns a list of
    {key, wanted, path, value} in load order, one per file and key (the file's last assignment).
    If our file is not applied at boot at all (masked, or not in a sysctl.d directory), every file
    that sets another value is reported: each of them decides the boot value instead of ours.
    """
    assignments = _assignments(files, dirs, last)
    paths = [path for path, _ in assignments]
    if our_path in paths:
        assignments = assignments[paths.index(our_path) + 1:]
    found = []
    for path, entries in assignments:
        last_value = {}
        for entry in entries:
            if entry.key in wanted:
                last_value[entry.key] = entry.value
        found.extend({"key": key, "wanted": normalise(wanted[key]), "path": path, "value": normalise(value)}
                     for key, value in last_value.items() if not same_value(value, wanted[key]))
    return found


def check_settings(settings):
    """{key: normalised value} for settings netmend may write; raises SettingsError naming every bad one."""
    if not isinstance(settings, dict):
        raise SettingsError([("settings", f"must be a mapping of key to value, not {type(settings).__name__}")])
    problems, result = [], {}
    if not settings:
        problems.append(("settings", "is empty; give at least one key such as net.ipv4.ip_forward: 1"))
    for key, value in settings.items():
        if not isinstance(key, str) or not KEY.match(key):
            problems.append((str(key), f"is not a key netmend writes; accepted: {KEY_ACCEPTED}"))
            continue
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            problems.append((key, f"{value!r} is a {type(value).__name__}; accepted: {VALUE_ACCEPTED}"))
            continue
        text = normalise(value)
        if not text:
            problems.append((key, f"the value is empty; accepted: {VALUE_ACCEPTED}"))
        elif any(ch in str(value).strip() for ch in "\r\n") or not text.isprintable():
            problems.append((key, f"{value!r} has line breaks or control characters; accepted: {VALUE_ACCEPTED}"))
        else:
            result[key] = text
    if problems:
        raise SettingsError(problems)
    return result


def render(settings, header=HEADER):
    """Our file's text: the header as comments, then `key = value` lines in key order."""
    if isinstance(header, str):
        header = header.splitlines()
    lines = [f"# {line}".rstrip() for line in header]
    lines.extend(f"{key} = {normalise(settings[key])}" for key in sorted(settings))
    return "\n".join(lines) + "\n"


def proc_path(key):
    """The /proc/sys file of a dotted key: every dot becomes a slash.

    A key whose name contains a dot (an interface such as eth0.100) is out of scope: it would map
    to the wrong path. parse() reports such keys, and check_settings() accepts no slashes.
    """
    return posixpath.join(PROC_SYS, *key.split("."))
