"""edgert.fleet.model's controller side: reads the bundle's manifest, and sends the bundle and the reference file
only to a board that lacks that version (a rerun sends nothing), with one shell command before the module."""

from __future__ import annotations

import json
import os
import shlex
import zipfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.edgert.fleet.plugins.module_utils.agent import DEFAULT_ROOT, file_sha256
from ansible_collections.edgert.fleet.plugins.plugin_utils.inventory import inventory_defaults


def _manifest(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("manifest.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise AnsibleActionFail("%s is not an edgert bundle (%s); make one with `edgert bundle MODEL`" % (path, exc))


class ActionModule(ActionBase):
    # No remote temporary folder of Ansible's (one command to make it, one to remove it): `_prepare` makes ours in
    # the probe it runs anyway, and the module removes it.
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = inventory_defaults(self, dict(self._task.args), task_vars)
        bundle, reference = args.pop("bundle", None), args.pop("reference", None)
        ran = False
        try:
            if bundle:
                bundle = os.path.expanduser(bundle)
                if not os.path.isfile(bundle):
                    raise AnsibleActionFail("the bundle %s does not exist on the controller" % bundle)
                manifest = _manifest(bundle)
                for key in ("name", "version"):
                    if args.get(key) and args[key] != manifest[key]:
                        raise AnsibleActionFail("%s: %s is %s in the bundle, not %s"
                                                % (bundle, key, manifest[key], args[key]))
                    args[key] = manifest[key]
                args["sha256"] = file_sha256(bundle)
            if reference:
                reference = os.path.expanduser(reference)
                if not os.path.isfile(reference):
                    raise AnsibleActionFail("the reference file %s does not exist on the controller" % reference)
            if not args.get("name"):
                raise AnsibleActionFail("edgert.fleet.model needs a bundle, or a name")
            state = args.get("state", "active")
            stop = (task_vars or {}).get("edgert_stop_file")
            if stop and os.path.exists(stop):  # `edgert fleet rollout` was asked to stop: start nothing new
                result.update(skipped=True, changed=False, stopped=True, msg="stopped before this board's step")
                return result
            sending = state == "active" and not self._task.check_mode and bool(bundle or reference)
            if sending:
                active, on_board, tmpdir = self._prepare(args)
                if active != args.get("version"):
                    if bundle and not on_board:
                        args["src"] = self._connection._shell.join_path(tmpdir, "bundle.edgert")
                        self._transfer_file(bundle, args["src"])
                    if reference:
                        args["reference"] = self._connection._shell.join_path(tmpdir, "reference.npz")
                        self._transfer_file(reference, args["reference"])
                args["cleanup"] = tmpdir  # the module removes it, whatever happens there
            answer = self._execute_module(module_name="edgert.fleet.model", module_args=args, task_vars=task_vars)
            if answer.get("kind") == "no_bundle" and bundle and "src" not in args:  # its copy there was damaged
                args["src"] = self._connection._shell.join_path(args["cleanup"], "bundle.edgert")
                self._transfer_file(bundle, args["src"])
                answer = self._execute_module(module_name="edgert.fleet.model", module_args=args,
                                              task_vars=task_vars)
            ran = "module_stderr" not in answer  # else Python never ran it (none there, say): clean up from here
            result.update(answer)
        except AnsibleActionFail as exc:
            result.update(failed=True, msg=str(exc))
        finally:
            if args.get("cleanup") and not ran:  # the module did not finish: remove what was sent
                try:
                    self._low_level_execute_command("rm -rf %s" % shlex.quote(args["cleanup"]), sudoable=False)
                except Exception:  # noqa: BLE001 - the board is gone; its TMPDIR keeps a folder
                    pass
        return result

    def _prepare(self, args):
        """One shell command on the board (no Python started): the active version, whether this version is there
        already (then its bundle is not sent), and a temporary folder for what is sent.

        Returns: (active version or None, present, temporary folder)."""
        models = self._connection._shell.join_path(args.get("root") or DEFAULT_ROOT, "models", args["name"])
        models = '"$HOME"/' + shlex.quote(models[2:]) if models.startswith("~/") else shlex.quote(models)
        command = ('cd %s 2>/dev/null && echo "current=$(readlink current)" && { test -f %s && echo present; }; '
                   'd=$(mktemp -d "${TMPDIR:-/tmp}/edgert-XXXXXX") && echo "tmp=$d"'
                   % (models, shlex.quote("v-%s/manifest.json" % args["version"])))
        done = self._low_level_execute_command(command, sudoable=False)
        lines = [line.strip() for line in done.get("stdout", "").splitlines()]
        current = next((line[len("current=v-"):] for line in lines if line.startswith("current=v-")), None)
        tmpdir = next((line[len("tmp="):] for line in lines if line.startswith("tmp=")), None)
        if not tmpdir:
            why = (done.get("stderr") or "").strip().splitlines()
            raise AnsibleActionFail("cannot make a temporary folder on the board (%s); free some space in its "
                                    "TMPDIR (/tmp) or set TMPDIR" % (why[-1] if why else "mktemp failed"))
        return current, "present" in lines, tmpdir
