"""Action plugin: the want one node is audited against, built in Python on the controller.

netmend.want.build from the node's groups, the roles' public settings (their defaults and the inventory,
as Ansible templates them for this host) and the cluster truth (netmend_validate truth: true, once per
run). This replaces a want assembled in Jinja from other roles' private variables: the audit and the
pyinfra deploy build the same want with the same function. Nothing here touches a host.
"""

import sys
from pathlib import Path

from ansible.plugins.action import ActionBase

_MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from netmend.errors import ProblemsError  # noqa: E402
from netmend.want import SETTINGS, build  # noqa: E402


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        truth = self._task.args.get("truth")
        if not isinstance(truth, dict):
            result.update(failed=True, msg="truth: the cluster truth (netmend_validate truth: true) is required")
            return result
        settings = {name: self._templar.template(task_vars[name]) for name in SETTINGS if name in task_vars}
        node = task_vars.get("inventory_hostname")
        try:
            want = build(node, task_vars.get("groups", {}), settings, truth)
        except ProblemsError as exc:
            result.update(failed=True, problems=[{"variable": f, "problem": m} for f, m in exc.problems],
                          msg=f"The settings for {node} are not valid; nothing was checked or changed:\n"
                              + "\n".join(f"  {f}: {m}" for f, m in exc.problems))
            return result
        result.update(changed=False, want=want)
        return result
