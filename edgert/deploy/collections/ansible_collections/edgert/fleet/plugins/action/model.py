"""edgert.fleet.model's controller side: reads the bundle's manifest, and sends the bundle and the reference file
only to a board that lacks that version (a rerun sends nothing)."""

from __future__ import annotations

import hashlib
import json
import os
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

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
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
            # what the board has, from edgert.fleet.facts when it ran: then a board on this version gets nothing sent
            known = ((task_vars or {}).get("ansible_facts", {}).get("edgert", {}).get("models", {})
                     .get(args["name"]))
            active = known.get("active") if known else None
            on_board = bool(known) and args.get("version") in (known.get("versions") or [])
            sending = state == "active" and not self._task.check_mode and active != args.get("version")
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
