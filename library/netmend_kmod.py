#!/usr/bin/python
"""netmend_kmod: make sure the kernel has the modules a Kubernetes node needs and list them for boot."""
# Ansible's module layout puts DOCUMENTATION, EXAMPLES and RETURN before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: netmend_kmod
short_description: Load the kernel modules a Kubernetes node needs and list them in modules-load.d
description:
  - Checks each module in O(names) on the running kernel. A module that is loaded or built in needs
    nothing. A built-in module counts even on kernels that ship no C(/lib/modules) at all, where
    C(modprobe) fails for it; the proof is read from C(/proc/modules), C(modules.builtin),
    C(/sys/module), files the module's code creates (C(/proc/sys/net/bridge) for C(br_netfilter))
    and the kernel config (C(/proc/config.gz), C(/boot/config-<release>)).
  - A module that is absent is loaded with C(modprobe) and checked again. If it is still absent the
    task fails naming the module, everything that was checked and the C(modprobe) error, and
    O(path) is not written.
  - With O(persist=true) the whole of O(path) is written with the names, one a line, so that
    systemd-modules-load loads them at boot.
options:
  names:
    description:
      - Kernel module names, as C(modprobe) takes them (lower-case letters, digits, C(_) and C(-);
        C(-) and C(_) are the same to the kernel, and repeats are dropped).
      - Every name is checked before anything is done.
    type: list
    elements: str
    required: true
  persist:
    description: Write O(names) to O(path) so that they are loaded at boot.
    type: bool
    default: true
  path:
    description: The modules-load.d file netmend owns. It is rewritten as a whole, mode 0644.
    type: path
    default: /etc/modules-load.d/netmend.conf
  backup:
    description: Before rewriting an existing O(path) whose content differs, keep a copy next to it
      (its name does not end in C(.conf), so a boot does not read it).
    type: bool
    default: true
attributes:
  check_mode:
    description: Loads nothing and writes nothing. An absent module is looked up with
      C(modprobe --dry-run), so a module that cannot be loaded fails the check run as it would the real one.
    support: full
  diff_mode:
    description: Shows O(path) before and after.
    support: full
notes:
  - Requires C(modprobe) (the kmod package) only when a module is absent.
  - When a module cannot be loaded, the modules the task loaded before it stay loaded.
  - Built-in modules are listed in O(path) too, so a later kernel that has them as loadable modules
    loads them at boot. On a kernel without C(/lib/modules), systemd-modules-load logs
    C(Failed to find module) for each of them and reports a failure, although they are there.
author:
  - netmend maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Kernel | Load the modules of a node with kube-proxy in iptables mode
  netmend_kmod:
    names: [br_netfilter, overlay, nf_conntrack]

- name: Kernel | Load the IPVS modules for kube-proxy in ipvs mode with the wrr scheduler
  netmend_kmod:
    names: [br_netfilter, overlay, nf_conntrack, ip_vs, ip_vs_rr, ip_vs_wrr, ip_vs_sh]
    path: /etc/modules-load.d/netmend-ipvs.conf

- name: Kernel | Check the modules now, list nothing for boot
  netmend_kmod:
    names: [vxlan]
    persist: false
"""

RETURN = r"""
changed:
  description: Whether a module was loaded or O(path) written (or would be, in check mode).
  returned: always
  type: bool
modules:
  description:
    - Per name in O(names) (repeats dropped), its state and the proof.
    - C(loaded) and C(builtin) were there before the task; C(loaded_now) was loaded by it (in check
      mode, would be loaded; C(modprobe --dry-run) found it).
    - On failure, the modules checked or loaded before the task failed.
  returned: always
  type: dict
  sample:
    br_netfilter: {"state": "builtin", "evidence": "/proc/sys/net/bridge exists"}
    overlay: {"state": "loaded", "evidence": "/proc/modules lists overlay (Live)"}
  contains:
    state:
      description: C(loaded), C(builtin) or C(loaded_now).
      type: str
    evidence:
      description: What showed the module to be there.
      type: str
file_changed:
  description: Whether O(path) was (or would be) written or its mode set to 0644. False when O(persist=false).
  returned: always
  type: bool
path:
  description: The modules-load.d file netmend owns.
  returned: always
  type: str
  sample: /etc/modules-load.d/netmend.conf
backup_file:
  description: The copy of the previous O(path) made before rewriting it; null when none was made.
  returned: always
  type: str
  sample: /etc/modules-load.d/netmend.conf.12345.2024-01-01@10:00:00~
diff:
  description: O(path) before and after (empty strings for a file that does not exist); empty when O(persist=false).
  returned: always
  type: dict
  contains:
    before:
      description: The file's content before the task.
      type: str
    after:
      description: The file's content after the task.
      type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.files import write_atomic
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.kmod import (
    DEFAULT_LOAD_FILE,
    MODULE_NAME,
    FileProbe,
    dedupe,
    render,
    status,
)

FILE_MODE = 0o644


def _read(path):
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        return handle.read()


class Kmod:
    """One run: validate, check every module, load the absent ones, then write the file unless a module failed."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.path = os.path.normpath(self.params["path"])
        self.result = {"changed": False, "modules": {}, "file_changed": False, "path": self.path,
                       "backup_file": None, "diff": {}}
        self.modprobe = None

    def fail(self, msg):
        self.module.fail_json(msg=msg, **self.result)

    def validate(self):
        names = self.params["names"]
        bad = [name for name in names if not MODULE_NAME.match(name)]
        if bad:
            listed = ", ".join(repr(n) for n in bad) + (" is not a module name" if len(bad) == 1
                                                        else " are not module names")
            self.fail(f"names: {listed}; a name has lower-case letters, digits, _ and - only, as modprobe "
                      "takes it (br_netfilter, ip_vs_rr); nothing was done")
        if not names:
            self.fail("names: list at least one module")
        if self.params["persist"]:
            path = self.path
            if not os.path.isabs(path) or not path.endswith(".conf") or os.path.basename(path).startswith("."):
                self.fail(f"path {path!r} is not accepted: an absolute path to a file whose name ends in .conf "
                          f"(and does not start with a dot), such as {DEFAULT_LOAD_FILE}")
            if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
                self.fail(f"path {path} is not a regular file; netmend rewrites the file it owns")
        return dedupe(names)

    def check(self, name):
        try:
            return status(name, FileProbe("/"))
        except ValueError as exc:  # a malformed /proc/modules or modules.builtin
            self.fail(f"{name}: {exc}")
        return None

    def run_modprobe(self, name):
        """(rc, error text) of modprobe for one module; a dry run in check mode."""
        if self.modprobe is None:
            self.modprobe = self.module.get_bin_path("modprobe") or ""
        if not self.modprobe:
            return None, "modprobe was not found (install the kmod package)"
        argv = [self.modprobe, *(["--dry-run"] if self.module.check_mode else []), name]
        rc, out, err = self.module.run_command(argv, environ_update={"LC_ALL": "C"})
        return rc, (err.strip() or out.strip() or f"exit status {rc}")

    def load(self, name, before):
        """The state of an absent module after modprobe, or a failure message."""
        rc, error = self.run_modprobe(name)
        where = f"{name} is not in the running kernel (checked: {before.evidence})"
        if rc is None:
            return None, f"{where}; {error}"
        if rc != 0:
            return None, f"{where}; modprobe{' --dry-run' if self.module.check_mode else ''} {name} failed: {error}"
        if self.module.check_mode:
            return {"state": "loaded_now", "evidence": f"check mode: modprobe --dry-run {name} found it"}, None
        after = self.check(name)
        if after.state == "absent":
            return None, f"{where}; modprobe {name} succeeded but the module is still missing ({after.evidence})"
        return {"state": "loaded_now", "evidence": f"modprobe {name}; {after.evidence}"}, None

    def persist(self, names):
        text = render(names)
        current = _read(self.path) if os.path.exists(self.path) else None
        text_changed = current != text
        mode_changed = current is not None and os.stat(self.path).st_mode & 0o7777 != FILE_MODE
        self.result["file_changed"] = bool(text_changed or mode_changed)
        self.result["diff"] = {"before_header": self.path if current is not None else f"{self.path} (absent)",
                               "after_header": self.path, "before": current or "", "after": text}
        if self.module.check_mode:
            return
        if text_changed:
            if self.params["backup"] and current is not None:
                self.result["backup_file"] = self.module.backup_local(self.path)
            self.write(text)
        elif mode_changed:
            os.chmod(self.path, FILE_MODE)

    def write(self, text):
        write_atomic(self.module, self.path, text, FILE_MODE)

    def run(self):
        names = self.validate()
        failures = []
        for name in names:
            before = self.check(name)
            if before.state != "absent":
                self.result["modules"][name] = {"state": before.state, "evidence": before.evidence}
                continue
            loaded, failure = self.load(name, before)
            if failure:
                failures.append(failure)
            else:
                self.result["modules"][name] = loaded
                self.result["changed"] = True
        if failures:
            self.fail("\n".join(failures) + (f"\n{self.path} was not written" if self.params["persist"] else ""))
        if self.params["persist"]:
            self.persist(names)
            self.result["changed"] = self.result["changed"] or self.result["file_changed"]
        return self.result


def main():
    module = AnsibleModule(
        argument_spec={
            "names": {"type": "list", "elements": "str", "required": True},
            "persist": {"type": "bool", "default": True},
            "path": {"type": "path", "default": DEFAULT_LOAD_FILE},
            "backup": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    module.exit_json(**Kmod(module).run())


if __name__ == "__main__":
    main()
