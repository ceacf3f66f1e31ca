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
  - It judges with the audit's C(kernel) check (the same as C(netmend_node)) and runs that check's plan,
    so what it changes is what the audit reports. A live value is written when it differs; the file is
    rewritten when its text is not exactly the settings rendered (whatever the values a boot would end
    with through other files), and left alone otherwise. Its mode is not changed (a new file is 0644).
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
      - The file netmend owns. It is rewritten as a whole when its text differs (an existing file keeps
        its mode, a new one is 0644); it must be an absolute path ending in C(.conf) and not a symlink.
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
  - Live values are written before the file, in key order; if the kernel rejects one, the values already
    written are restored and the file is left alone.
  - A sysctl file that cannot be read, among the scanned ones, fails the task before anything changes.
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
  description: Whether O(path) was (or would be) written. False when O(persist=false).
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
findings:
  description: The IDs of the C(kernel) check's findings before the run, as the audit reports them.
  returned: always
  type: list
  elements: str
  sample: [SYSCTL-IP-FORWARD-OFF]
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
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.checks import audit
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.checks.kernel import scan_split
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.errors import ProblemsError
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.facts import gather
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.modulehost import ModuleHost
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.plan import ExecutionError, execute
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.sysctl import (
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
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.want import check_kernel

LIVE_HEADER = "live values (/proc/sys)"


def _lines(values):
    return "".join(f"{key} = {values[key]}\n" for key in sorted(values))


class Sysctl:
    """One run: validate, gather the kernel check's facts, audit, then run the plan unless in check mode."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.path = os.path.normpath(self.params["path"])
        self.scan = [os.path.normpath(entry) for entry in self.params["scan_dirs"]]
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
        # The audit's want, reduced to what the kernel check reads: the same judge for both.
        self.want = {"node": "this node", "sysctls": self.wanted, "sysctl_file": self.path if self.params["persist"]
                     else "", "sysctl_live": self.params["apply"], "sysctl_scan": self.scan}
        try:
            check_kernel(self.want)
        except ProblemsError as exc:
            self.fail("; ".join(f"path {m}" if f == "want.sysctl_file" else f"{f}: {m}" for f, m in exc.problems))
        if self.params["persist"]:
            self.validate_path()

    def validate_path(self):
        path = self.path
        if os.path.islink(path):
            self.fail(f"path {path} is a symlink (to {os.path.realpath(path)}); netmend rewrites the file it "
                      "owns, so point path at a regular file such as " + DEFAULT_PATH)
        if os.path.exists(path) and not os.path.isfile(path):
            self.fail(f"path {path} exists and is not a regular file")
        if not os.path.isdir(os.path.dirname(path)):
            self.fail(f"path {path}: the directory {os.path.dirname(path)} does not exist")

    # The run.

    def run(self):
        p = self.params
        self.validate()
        self.host = host = ModuleHost(self.module, backup=p["backup"])
        facts = gather(host, self.want, ["kernel"])
        judged = audit(facts, self.want, ["kernel"])
        if judged.skipped:
            self.fail("; ".join(f"{check}: {why}" for check, why in judged.skipped))
        live_before = {k: normalise(v) for k, v in facts["proc"].items()}
        self.result["live_before"] = live_before
        actions = judged.actions
        live_changes = [a.after.split(" = ", 1)[0] for a in actions if a.kind == "proc"]
        text = render(self.wanted)
        self.result["file_changed"] = any(a.kind == "file" for a in actions)
        self.result["changed"] = bool(actions)
        self.result["findings"] = [f.id for f in judged.findings]
        if p["persist"]:
            current = facts["sysctl_files"].get(self.path)
            self.result["diff"].append({"before_header": self.path if current is not None else f"{self.path} (absent)",
                                        "after_header": self.path, "before": current or "", "after": text})
        if actions and not self.module.check_mode:
            self.execute(actions, live_changes)
        if p["apply"] and not self.module.check_mode:
            live_after = {k: normalise(host.read(proc_path(k)) or "") for k in sorted(self.wanted)}
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
            self.check_boot({**facts["sysctl_files"], self.path: text})
        return self.result

    def execute(self, actions, live_changes):
        """The kernel check's plan, through the one executor (it puts back the live values already written
        when the kernel rejects one, and then writes no file)."""
        try:
            backups = execute(actions, self.host)
        except ExecutionError as exc:
            cause = exc.__cause__
            why = getattr(cause, "strerror", None) or cause or exc
            step = exc.step
            if step is not None and step.kind == "proc":
                key = step.after.split(" = ", 1)[0]
                restored = ", ".join(exc.rolled_back) or "none"
                self.fail(f"{key}: the kernel rejected {self.wanted[key]!r} ({why}); nothing was persisted and the "
                          f"live values already written were restored ({restored})")
            done = f"; the live values were set ({', '.join(live_changes)})" if live_changes else ""
            self.fail(f"cannot write {self.path}: {why}{done}" if step is not None and step.kind == "file"
                      else str(exc))
        if backups:
            self.result["backup_file"] = backups[0]

    def check_boot(self, files):
        """Warn about files that undo ours at boot, bad lines in them, and about ours not being read at boot."""
        for entry in self.scan:
            if not os.path.exists(entry) and entry not in SYSCTL_DIRS and entry != ETC_SYSCTL_CONF:
                self.module.warn(f"scan_dirs: {entry} does not exist")
        dirs, last = scan_split(files, self.scan)
        for error in file_errors(files, dirs, last):
            effect = ("a boot applies it but the conflict check cannot" if error.applied_at_boot
                      else "a boot skips the line and so does the conflict check")
            self.module.warn(f"{error.source}, line {error.line}: {error.reason} ({effect})")
        if self.path not in load_order(files, dirs, last):
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
