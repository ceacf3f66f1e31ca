"""The Ansible modules' host adapter: facts.gather and plan.execute through an AnsibleModule.

Stdlib only (the module object is handed in): commands run as argv lists with LC_ALL=C through
`run_command`, tools are found with `get_bin_path`, files are backed up with `backup_local` and written
through a temp file and `atomic_move`.
"""

import os
import shutil

from .facts import LocalHost
from .files import replace_file

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
