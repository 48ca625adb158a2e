"""What the collection's action plugins share on the controller: options taken from the host's inventory variables."""

from __future__ import annotations

from ansible.plugins.action import ActionBase


def inventory_defaults(action, args, task_vars):
    """`root` from the host's edgert_remote_dir when the task does not give it, as `edgert fleet` does (the module
    itself falls back to the agent's default root)."""
    if not args.get("root") and (task_vars or {}).get("edgert_remote_dir"):
        args["root"] = action._templar.template(task_vars["edgert_remote_dir"])
    return args


class RootFromInventory(ActionBase):
    """A module of the collection run as it is, with `root` from the host's edgert_remote_dir by default."""

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = inventory_defaults(self, dict(self._task.args), task_vars)
        module = "edgert.fleet." + self._task.action.rsplit(".", 1)[-1]
        result.update(self._execute_module(module_name=module, module_args=args, task_vars=task_vars))
        return result
