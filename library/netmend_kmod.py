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
    systemd-modules-load loads them at boot, when its text differs (after every C(modprobe)).
  - It judges with the audit's C(kernel) check (the same as C(netmend_node)) and runs that check's plan,
    so what it changes is what the audit reports (KMOD-BR-NETFILTER-MISSING, KMOD-MODULE-MISSING,
    KMOD-NOT-PERSISTED).
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
    description: The modules-load.d file netmend owns. It is rewritten as a whole when its text differs (an
      existing file keeps its mode, a new one is 0644).
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
  - When a module cannot be loaded, the modules the task loaded before it stay loaded and the modules
    after it are not tried.
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
  description: Whether O(path) was (or would be) written. False when O(persist=false).
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
findings:
  description: The IDs of the C(kernel) check's findings before the run, as the audit reports them.
  returned: always
  type: list
  elements: str
  sample: [KMOD-NOT-PERSISTED]
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
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.checks import audit
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.errors import ProblemsError
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.facts import gather
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.kmod import (
    DEFAULT_LOAD_FILE,
    MODULE_NAME,
    dedupe,
    render,
)
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.modulehost import ModuleHost
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.plan import ExecutionError, execute
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.want import check_kernel


class Kmod:
    """One run: validate, gather the kernel check's facts, audit; then a dry run of modprobe for every absent
    module (check mode) or the check's plan (modprobe of each, then the file), and every module checked again."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.path = os.path.normpath(self.params["path"])
        self.result = {"changed": False, "modules": {}, "file_changed": False, "path": self.path,
                       "backup_file": None, "diff": {}}
        self.host = ModuleHost(module, backup=self.params["backup"])

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
        names = dedupe(names)
        # The audit's want, reduced to what the kernel check reads: the same judge for both.
        self.want = {"node": "this node", "modules_text": render(names),
                     "modules_file": self.path if self.params["persist"] else ""}
        try:
            check_kernel(self.want)
        except ProblemsError as exc:
            self.fail("; ".join(f"path {m}" if f == "want.modules_file" else f"{f}: {m}" for f, m in exc.problems))
        if self.params["persist"]:
            path = self.path
            if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
                self.fail(f"path {path} is not a regular file; netmend rewrites the file it owns")
        return names

    def judge(self):
        facts = gather(self.host, self.want, ["kernel"])
        judged = audit(facts, self.want, ["kernel"])
        if judged.skipped:
            self.fail("; ".join(f"{check}: {why}" for check, why in judged.skipped))
        return facts, judged

    def not_written(self):
        return f"\n{self.path} was not written" if self.params["persist"] else ""

    def dry_run(self, absent, where):
        """Check mode: `modprobe --dry-run` of every absent module; the failures."""
        modprobe, failures = self.host.tool("modprobe"), []
        for name in absent:
            if not modprobe:
                failures.append(f"{where(name)}; modprobe was not found (install the kmod package)")
                continue
            rc, out, err = self.host.run([modprobe, "--dry-run", name])
            if rc != 0:
                failures.append(f"{where(name)}; modprobe --dry-run {name} failed: "
                                f"{err.strip() or out.strip() or f'exit status {rc}'}")
            else:
                self.result["modules"][name] = {"state": "loaded_now",
                                                "evidence": f"check mode: modprobe --dry-run {name} found it"}
        return failures

    def execute(self, actions, absent, where):
        """The kernel check's plan (modprobe of each absent module, then the file); every module checked again."""
        if absent and not self.host.tool("modprobe"):
            self.fail("\n".join(f"{where(name)}; modprobe was not found (install the kmod package)" for name in absent)
                      + self.not_written())
        try:
            backups = execute(actions, self.host)
        except ExecutionError as exc:
            step = exc.step
            if step is None or step.kind != "command":
                self.fail(str(exc))
            why = str(exc.__cause__ or exc).partition("): ")[2] or str(exc)
            self.fail(f"{where(step.target)}; modprobe {step.target} failed: {why}" + self.not_written())
        self.result["backup_file"] = backups[0] if backups else None
        after = (gather(self.host, self.want, ["kernel"]).get("modules") or {}) if absent else {}
        failures = []
        for name in absent:
            now = after.get(name)
            if now is None or now.state == "absent":
                failures.append(f"{where(name)}; modprobe {name} succeeded but the module is still missing "
                                f"({now.evidence if now else 'it could not be checked'})")
            else:
                self.result["modules"][name] = {"state": "loaded_now", "evidence": f"modprobe {name}; {now.evidence}"}
        if failures:
            self.fail("\n".join(failures))

    def run(self):
        self.validate()
        facts, judged = self.judge()
        states = facts["modules"]
        absent = [name for name, state in states.items() if state.state == "absent"]
        for name, state in states.items():
            if state.state != "absent":
                self.result["modules"][name] = {"state": state.state, "evidence": state.evidence}

        def where(name):
            return f"{name} is not in the running kernel (checked: {states[name].evidence})"

        if self.params["persist"]:
            current, text = facts["modules_file"], self.want["modules_text"]
            self.result["diff"] = {"before_header": self.path if current is not None else f"{self.path} (absent)",
                                   "after_header": self.path, "before": current or "", "after": text}
        self.result["file_changed"] = any(a.kind == "file" for a in judged.actions)
        if self.module.check_mode:
            failures = self.dry_run(absent, where)
            if failures:
                self.fail("\n".join(failures) + self.not_written())
        elif judged.actions:
            self.execute(judged.actions, absent, where)
        self.result["changed"] = bool(judged.actions)
        self.result["findings"] = [f.id for f in judged.findings]
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
