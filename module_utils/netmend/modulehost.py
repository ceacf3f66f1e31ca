"""The Ansible modules' host adapter: facts.gather and plan.execute through an AnsibleModule.

Stdlib only (the module object is handed in): commands run as argv lists with LC_ALL=C through
`run_command`, tools are found with `get_bin_path`, files are backed up with `backup_local` and written
through a temp file and `atomic_move`. `firewalld(payload)` is the plan's firewalld hook.
"""

import json
import os
import shutil

from . import firewalld
from .facts import LocalHost
from .files import read_text, replace_file, write_atomic

ENV = {"LC_ALL": "C"}


class ModuleHost(LocalHost):
    def __init__(self, module, backup=True):
        self.module, self.backup = module, backup

    def run(self, argv, data=None):
        if argv and not os.path.isabs(argv[0]):
            argv = [self.tool(argv[0]) or argv[0], *argv[1:]]
        return self.module.run_command(argv, data=data, binary_data=data is not None, environ_update=ENV)

    def tool(self, name):
        return self.module.get_bin_path(name)

    def write(self, path, text):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)

    def replace_file(self, path, text, mode):
        try:
            mode = os.stat(path).st_mode & 0o7777  # a file keeps its mode
        except OSError:
            pass
        return replace_file(self.module, path, text, mode=mode, backup=self.backup)

    def restore_file(self, path, backup):
        shutil.copy2(backup, path)

    def service(self, name, verb):
        if os.path.isdir("/run/systemd/system") and self.tool("systemctl"):
            return [self.tool("systemctl"), verb, name]
        return [self.tool("service") or "service", name, verb]

    def firewalld(self, payload):
        """The plan's firewalld step (netmend.plan.execute's hook): netmend.firewalld.reconcile over the zones
        as firewalld shows them now, one firewall-cmd per change, runtime and permanent, then netmend's record
        (the state file). Returns the firewall-cmd argument lists it ran."""
        fwcmd = self.tool("firewall-cmd")
        path = payload.get("state_file") or firewalld.STATE_FILE
        owned = firewalld.load_owned(read_text(path), path)

        def list_zone(zname, permanent):
            return _ok(self.run([fwcmd, *(["--permanent"] if permanent else []), f"--zone={zname}", "--list-all"]))

        argvs, new_owned, _before, _after = firewalld.reconcile(payload["want"], owned, list_zone)
        for argv in argvs:
            _ok(self.run([fwcmd, *argv]))
        if new_owned != owned:
            write_atomic(self.module, path, json.dumps(new_owned, indent=2, sort_keys=True) + "\n", 0o644)
        return argvs


def _ok(result):
    rc, out, err = result
    if rc != 0:
        raise RuntimeError(f"firewall-cmd (rc {rc}): {(err or out).strip()}")
    return out
