"""edgert.fleet.runtime's controller side: `root` defaults to the host's edgert_remote_dir."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.edgert.fleet.plugins.action.model import inventory_defaults


class ActionModule(ActionBase):
    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = inventory_defaults(self, dict(self._task.args), task_vars)
        result.update(self._execute_module(module_name="edgert.fleet.runtime", module_args=args, task_vars=task_vars))
        return result
