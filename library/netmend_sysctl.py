#!/usr/bin/python
"""netmend_sysctl: set kernel parameters live and persist them in one sysctl.d file netmend owns."""
# Ansible's module layout puts DOCUMENTATION, EXAMPLES and RETURN before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: netmend_sysctl
short_description: Set kernel parameters live and persist them in one sysctl.d file
description:
  - Validates every key and value, then writes the live values to C(/proc/sys) and the whole of
    one file (by default C(/etc/sysctl.d/90-netmend.conf)) with the settings in key order.
  - Reads the other sysctl files a boot applies (O(scan_dirs)) and warns about every file applied
    after ours that sets one of our keys to another value, since the boot would end with that value.
    It never edits or deletes any file but its own.
  - Keys are dotted names; each dot maps to a C(/) under C(/proc/sys). Keys whose names contain a
    dot (interfaces such as C(eth0.100)) are not supported.
options:
  settings:
    description:
      - "Kernel parameters to set, key to value, for example C(net.ipv4.ip_forward: 1)."
      - Keys are dotted lower-case names. Values are strings or integers; whitespace is normalised,
        so C("4096 87380 6291456") compares equal to the kernel's tab-separated output.
    type: dict
    required: true
  path:
    description:
      - The file netmend owns. It is rewritten as a whole; it must be an absolute path ending in C(.conf)
        and not a symlink.
    type: path
    default: /etc/sysctl.d/90-netmend.conf
  apply:
    description: Write the live values to C(/proc/sys).
    type: bool
    default: true
  persist:
    description: Write O(path) so that the values survive a reboot.
    type: bool
    default: true
  backup:
    description: Before rewriting an existing O(path) whose content differs, keep a copy next to it
      (the copy's name does not end in C(.conf), so a boot does not read it).
    type: bool
    default: true
  scan_dirs:
    description:
      - Where to look for other sysctl files for the conflict check, highest precedence first.
      - Directories are read for C(*.conf) files in systemd-sysctl's order (a basename in an earlier
        directory masks later ones; the rest apply in lexical order); plain files listed here are
        applied after all directories, in the listed order (C(sysctl --system) reads C(/etc/sysctl.conf) last).
      - Only used when O(persist=true).
    type: list
    elements: path
    default: [/etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d, /usr/lib/sysctl.d, /lib/sysctl.d, /etc/sysctl.conf]
attributes:
  check_mode:
    description: Reports what would change; writes neither the file nor live values.
    support: full
  diff_mode:
    description: Shows the file before and after, and the live values as C(key = value) lines.
    support: full
notes:
  - A key whose C(/proc/sys) file does not exist fails the task before anything changes; C(net.bridge.*)
    keys exist only once C(br_netfilter) is loaded.
  - Live values are written before the file; if the kernel rejects one, the values already written
    are restored and the file is left alone.
  - Malformed lines in the scanned files are reported as warnings (they are skipped at boot too).
author:
  - netmend maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Kernel | Forward packets and pass bridged traffic to iptables
  netmend_sysctl:
    settings:
      net.ipv4.ip_forward: 1
      net.bridge.bridge-nf-call-iptables: 1
      net.bridge.bridge-nf-call-ip6tables: 1

- name: Kernel | Persist larger TCP buffers without touching the running kernel
  netmend_sysctl:
    settings:
      net.ipv4.tcp_rmem: "4096 87380 6291456"
    path: /etc/sysctl.d/91-netmend-tcp.conf
    apply: false

- name: Kernel | Set forwarding live only (gone after a reboot)
  netmend_sysctl:
    settings:
      net.ipv4.ip_forward: 1
    persist: false
"""

RETURN = r"""
changed:
  description: Whether the file or a live value changed (or would change, in check mode).
  returned: always
  type: bool
path:
  description: The file netmend owns.
  returned: always
  type: str
  sample: /etc/sysctl.d/90-netmend.conf
settings:
  description: The settings as written, values with normalised whitespace.
  returned: always
  type: dict
  sample: {"net.ipv4.ip_forward": "1"}
file_changed:
  description: Whether O(path) was (or would be) written or its mode set to 0644. False when O(persist=false).
  returned: always
  type: bool
backup_file:
  description: The copy of the previous O(path) made before rewriting it.
  returned: when a backup was made
  type: str
  sample: /etc/sysctl.d/90-netmend.conf.12345.2024-01-01@10:00:00~
live_before:
  description: The live value of every key before the task, whitespace normalised.
  returned: always
  type: dict
  sample: {"net.ipv4.ip_forward": "0"}
live_after:
  description:
    - The live value of every key after the task, read back from C(/proc/sys).
    - In check mode, and with O(apply=false), the values the task would leave (the wanted values
      for keys it would write).
  returned: always
  type: dict
  sample: {"net.ipv4.ip_forward": "1"}
conflicts:
  description:
    - Files applied after O(path) at boot that set one of the keys to another value; one warning is
      issued per entry. Empty when O(persist=false).
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: The kernel parameter.
      type: str
      sample: net.ipv4.ip_forward
    wanted:
      description: The value in O(settings).
      type: str
      sample: "1"
    path:
      description: The later file.
      type: str
      sample: /etc/sysctl.d/99-zz.conf
    value:
      description: The value the later file sets (its last assignment of the key).
      type: str
      sample: "0"
diff:
  description:
    - A list of up to two before/after pairs, the file (when O(persist=true)) and the live values as
      C(key = value) lines (when O(apply=true)).
  returned: always
  type: list
  elements: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.files import write_atomic
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.sysctl import (
    CONF_SUFFIX,
    DEFAULT_PATH,
    ETC_SYSCTL_CONF,
    KEY,
    SYSCTL_DIRS,
    SettingsError,
    check_settings,
    conflicts,
    effective,
    file_errors,
    load_order,
    masked_by,
    normalise,
    proc_path,
    render,
    same_value,
)

FILE_MODE = 0o644
LIVE_HEADER = "live values (/proc/sys)"


def _read(path):
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return handle.read()


def _lines(values):
    return "".join(f"{key} = {values[key]}\n" for key in sorted(values))


class Sysctl:
    """One run: validate, read the current state, compute the changes, then act unless in check mode."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.path = os.path.normpath(self.params["path"])
        self.result = {"changed": False, "path": self.path, "file_changed": False, "conflicts": [], "diff": []}

    def fail(self, msg, **extra):
        self.module.fail_json(msg=msg, **{**self.result, **extra})

    # Validation: everything is checked before anything changes.

    def validate(self):
        settings = self.params["settings"]
        try:
            self.wanted = check_settings(settings)
            problems = []
        except SettingsError as exc:
            self.wanted, problems = {}, exc.problems
        for key in sorted(k for k in settings if isinstance(k, str) and KEY.match(k)):
            proc = proc_path(key)
            if os.path.isfile(proc):
                continue
            what = f"{proc} is a directory of keys, not a key" if os.path.isdir(proc) else f"{proc} does not exist"
            hint = "; load br_netfilter first (modprobe br_netfilter)" if key.startswith("net.bridge.") else ""
            problems.append((key, f"unknown kernel parameter: {what}{hint}"))
        if problems:
            self.fail("invalid settings, nothing was changed: " + "; ".join(f"{k}: {m}" for k, m in problems),
                      problems=[{"key": k, "message": m} for k, m in problems])
        self.result["settings"] = self.wanted
        if self.params["persist"]:
            self.validate_path()

    def validate_path(self):
        path = self.path
        if not os.path.isabs(path) or not path.endswith(CONF_SUFFIX) or os.path.basename(path).startswith("."):
            self.fail(f"path {path!r} is not accepted: an absolute path to a file whose name ends in .conf "
                      f"(and does not start with a dot), such as {DEFAULT_PATH}")
        if os.path.islink(path):
            self.fail(f"path {path} is a symlink (to {os.path.realpath(path)}); netmend rewrites the file it "
                      "owns, so point path at a regular file such as " + DEFAULT_PATH)
        if os.path.exists(path) and not os.path.isfile(path):
            self.fail(f"path {path} exists and is not a regular file")
        if not os.path.isdir(os.path.dirname(path)):
            self.fail(f"path {path}: the directory {os.path.dirname(path)} does not exist")

    # Reading the current state.

    def read_live(self):
        live = {}
        for key in sorted(self.wanted):
            try:
                live[key] = normalise(_read(proc_path(key)))
            except OSError as exc:
                self.fail(f"{key}: cannot read {proc_path(key)}: {exc.strerror or exc}")
        return live

    def read_file(self):
        if not os.path.exists(self.path):
            return None
        try:
            return _read(self.path)
        except OSError as exc:
            self.fail(f"cannot read {self.path}: {exc.strerror or exc}")
        return None

    def scan(self, our_text):
        """{path: text} of the scanned files plus ours (with its new text), the dirs and the last files."""
        files, dirs, last = {}, [], []
        for listed in self.params["scan_dirs"]:
            entry = os.path.normpath(listed)
            if os.path.isdir(entry):
                dirs.append(entry)
                names = sorted(n for n in os.listdir(entry) if n.endswith(CONF_SUFFIX) and not n.startswith("."))
                paths = [os.path.join(entry, n) for n in names]
            elif os.path.exists(entry):
                last.append(entry)
                paths = [entry]
            else:
                if entry not in SYSCTL_DIRS and entry != ETC_SYSCTL_CONF:
                    self.module.warn(f"scan_dirs: {entry} does not exist")
                continue
            for path in paths:
                if path == self.path or not os.path.isfile(path):
                    continue
                try:
                    files[path] = _read(path)
                except OSError as exc:
                    self.module.warn(f"cannot read {path} for the conflict check: {exc.strerror or exc}")
        files[self.path] = our_text
        return files, dirs, last

    # Acting.

    def write_live(self, changes, live_before):
        done = []
        for key in changes:
            try:
                with open(proc_path(key), "w", encoding="utf-8") as handle:
                    handle.write(self.wanted[key])
            except OSError as exc:
                restored = self.restore(done, live_before)
                self.fail(f"{key}: the kernel rejected {self.wanted[key]!r} ({exc.strerror or exc}); "
                          f"nothing was persisted and the live values already written were restored ({restored})")
            done.append(key)

    def restore(self, keys, live_before):
        outcome = []
        for key in keys:
            try:
                with open(proc_path(key), "w", encoding="utf-8") as handle:
                    handle.write(live_before[key])
                outcome.append(f"{key} = {live_before[key]}")
            except OSError as exc:
                outcome.append(f"{key}: restore failed: {exc.strerror or exc}")
        return ", ".join(outcome) or "none"

    def write_file(self, text):
        write_atomic(self.module, self.path, text, FILE_MODE)

    def replace_file(self, text, current, live_changes):
        if self.params["backup"] and current is not None:
            self.result["backup_file"] = self.module.backup_local(self.path)
        try:
            self.write_file(text)
        except Exception as exc:  # atomic_move raises a plain Exception
            done = f"; the live values were set ({', '.join(live_changes)})" if live_changes else ""
            self.fail(f"cannot write {self.path}: {exc}{done}")

    # The run.

    def run(self):
        p = self.params
        self.validate()
        live_before = self.read_live()
        self.result["live_before"] = live_before
        live_changes = [k for k in sorted(self.wanted) if not same_value(live_before[k], self.wanted[k])]
        if not p["apply"]:
            live_changes = []

        text = render(self.wanted)
        current = self.read_file() if p["persist"] else None
        text_changed = p["persist"] and current != text
        mode_changed = (p["persist"] and current is not None
                        and os.stat(self.path).st_mode & 0o7777 != FILE_MODE)
        self.result["file_changed"] = bool(text_changed or mode_changed)
        self.result["changed"] = bool(live_changes or self.result["file_changed"])
        if p["persist"]:
            self.result["diff"].append({"before_header": self.path if current is not None else f"{self.path} (absent)",
                                        "after_header": self.path, "before": current or "", "after": text})

        if not self.module.check_mode:
            self.write_live(live_changes, live_before)
            if text_changed:
                self.replace_file(text, current, live_changes)
            elif mode_changed:
                os.chmod(self.path, FILE_MODE)

        if p["apply"] and not self.module.check_mode:
            live_after = self.read_live()
            for key in live_changes:
                if not same_value(live_after[key], self.wanted[key]):
                    self.module.warn(f"{key}: wrote {self.wanted[key]!r} but the kernel reports {live_after[key]!r}")
        else:
            live_after = {k: (self.wanted[k] if k in live_changes else v) for k, v in live_before.items()}
        self.result["live_after"] = live_after
        if p["apply"]:
            self.result["diff"].append({"before_header": LIVE_HEADER, "after_header": LIVE_HEADER,
                                        "before": _lines(live_before), "after": _lines(live_after)})
        if p["persist"]:
            self.check_boot(text)
        return self.result

    def check_boot(self, text):
        """Warn about files that undo ours at boot, bad lines in them, and about ours not being read at boot."""
        files, dirs, last = self.scan(text)
        for error in file_errors(files, dirs, last):
            effect = ("a boot applies it but the conflict check cannot" if error.applied_at_boot
                      else "a boot skips the line and so does the conflict check")
            self.module.warn(f"{error.source}, line {error.line}: {error.reason} ({effect})")
        order = load_order(files, dirs, last)
        if self.path not in order:
            masker = masked_by(self.path, files, dirs)
            why = (f"{masker} has the same name in a directory read first" if masker
                   else f"{os.path.dirname(self.path)} is not among the scanned directories ({', '.join(dirs)})")
            self.module.warn(f"{self.path} is not read at boot: {why}")
        found = conflicts(self.path, self.wanted, files, dirs, last)
        boot = effective(files, dirs, last)
        for item in found:
            final = normalise(boot[item["key"]][0])
            outcome = (f"a file after it sets {final} again, so a boot ends with {final}"
                       if same_value(final, item["wanted"]) else f"at boot the value will revert to {final}")
            self.module.warn(f"{item['path']} sets {item['key']} = {item['value']} after {self.path}; {outcome}")
        self.result["conflicts"] = found


def main():
    module = AnsibleModule(
        argument_spec={
            "settings": {"type": "dict", "required": True},
            "path": {"type": "path", "default": DEFAULT_PATH},
            "apply": {"type": "bool", "default": True},
            "persist": {"type": "bool", "default": True},
            "backup": {"type": "bool", "default": True},
            "scan_dirs": {"type": "list", "elements": "path", "default": [*SYSCTL_DIRS, ETC_SYSCTL_CONF]},
        },
        supports_check_mode=True,
    )
    if not module.params["apply"] and not module.params["persist"]:
        module.fail_json(msg="apply and persist are both false: there is nothing to do; set at least one")
    module.exit_json(**Sysctl(module).run())


if __name__ == "__main__":
    main()
