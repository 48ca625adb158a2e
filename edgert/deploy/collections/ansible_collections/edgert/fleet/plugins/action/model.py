"""edgert.fleet.model's controller side: reads the bundle's manifest, and sends the bundle and the reference file
only to a board that lacks that version (a rerun sends nothing)."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import zipfile

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase


def _manifest(path):
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("manifest.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise AnsibleActionFail("%s is not an edgert bundle (%s); make one with `edgert bundle MODEL`" % (path, exc))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inventory_defaults(action, args, task_vars):
    """`root` from the host's edgert_remote_dir when the task does not give it, as `edgert fleet` does."""
    if not args.get("root") and (task_vars or {}).get("edgert_remote_dir"):
        args["root"] = action._templar.template(task_vars["edgert_remote_dir"])
    return args


class ActionModule(ActionBase):
    TRANSFERS_FILES = True

    _task_vars_cache = None

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        self._task_vars_cache = task_vars
        args = inventory_defaults(self, dict(self._task.args), task_vars)
        bundle, reference = args.pop("bundle", None), args.pop("reference", None)
        try:
            if bundle:
                bundle = os.path.expanduser(bundle)
                if not os.path.isfile(bundle):
                    raise AnsibleActionFail("the bundle %s does not exist on the controller" % bundle)
                manifest = _manifest(bundle)
                for key in ("name", "version"):
                    if args.get(key) and args[key] != manifest[key]:
                        raise AnsibleActionFail("%s: %s is %s in the bundle, not %s" % (bundle, key, manifest[key],
                                                                                       args[key]))
                    args[key] = manifest[key]
                args["sha256"] = _sha256(bundle)
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
            sending = state == "active" and not self._task.check_mode
            active, on_board = self._board_has(args) if sending and bundle else (None, False)
            sending = sending and active != args.get("version")
            if sending and (bundle and not on_board or reference):
                tmpdir = self._make_tmp_path()
                if bundle and not on_board:
                    args["src"] = self._connection._shell.join_path(tmpdir, "bundle.edgert")
                    self._transfer_file(bundle, args["src"])
                if reference:
                    args["reference"] = self._connection._shell.join_path(tmpdir, "reference.npz")
                    self._transfer_file(reference, args["reference"])
                self._fixup_perms2([tmpdir] + [args[k] for k in ("src", "reference") if k in args])
            result.update(self._execute_module(module_name="edgert.fleet.model", module_args=args,
                                               task_vars=task_vars))
        except AnsibleActionFail as exc:
            result.update(failed=True, msg=str(exc))
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _board_has(self, args):
        """(the active version, whether this version is on the board), from edgert.fleet.facts when it ran, else
        read with one shell command (no Python started), so that a board which has the bundle is not sent it."""
        known = (self._task_vars_cache or {}).get("ansible_facts", {}).get("edgert", {}).get("models", {}).get(
            args["name"])
        if known is not None:
            return known.get("active"), args["version"] in (known.get("versions") or [])
        models = self._connection._shell.join_path(args.get("root") or "~/edgert", "models", args["name"])
        models = '"$HOME"/' + shlex.quote(models[2:]) if models.startswith("~/") else shlex.quote(models)
        command = ("cd %s 2>/dev/null && { readlink current; echo; test -f %s && echo present; }"
                   % (models, shlex.quote("v-%s/manifest.json" % args["version"])))
        done = self._low_level_execute_command(command, sudoable=False)
        lines = done.get("stdout", "").splitlines()
        current = lines[0].strip()[2:] if lines and lines[0].strip().startswith("v-") else None
        return current, "present" in lines
