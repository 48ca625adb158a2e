#!/usr/bin/python
"""edgert.fleet.model: install, verify, switch and roll back an edgert model on a board."""

from __future__ import annotations

DOCUMENTATION = r"""
module: model
short_description: Install, check, switch and roll back an edgert model on a board
description:
  - With I(state=active), makes I(version) of model I(name) the active one. The bundle (C(edgert bundle)) is sent
    by the action plugin only when the board lacks that version; every file is checked against its manifest before
    the C(current) link switches, in one rename. The version it replaces stays as C(previous).
  - With I(reference), the new version is checked on the board before the module reports success - its outputs on
    the reference inputs against the host's (a tolerance by the model's mode), its p50 latency against the version
    it replaces (I(max_slowdown)), and thermal throttling. With I(serve), C(edgert serve) is restarted and must
    answer a ready check and one inference with the new version. A version that fails any of these is switched
    back by the board itself, and the task fails with the reason.
  - An unchanged board reports C(ok). Supports check mode and diff mode.
  - With I(state=rolled_back), the previous version becomes active again (only while I(from_version) is active,
    when given, so a rerun changes nothing). With I(state=absent), the model is removed (likewise).
options:
  bundle:
    description: The bundle on the controller (C(edgert bundle MODEL)); sets I(name) and I(version) from its manifest.
      The action plugin reads it and sends it to a board that lacks that version.
    type: path
  name:
    description: The model's name on the board. Needed unless I(bundle) is given, which sets it.
    type: str
  version:
    description: The version to make active (a bundle's content id).
    type: str
  state:
    description: What to make true.
    type: str
    choices: [active, rolled_back, absent]
    default: active
  root:
    description: The remote directory models and the runtime live in. Default the host's C(edgert_remote_dir), else
      C(~/edgert) on the board.
    type: str
  reference:
    description: A reference file on the controller (C(edgert.measure.health.make_reference)) to check outputs with.
    type: path
  max_slowdown:
    description: The largest ratio of the new version's p50 to the replaced version's, both measured on the board.
    type: float
  runs:
    description: Timed runs of each version in the latency check.
    type: int
    default: 50
  thermal:
    description: Refuse to install on a thermally throttled board, and fail a check measured while throttled.
    type: bool
    default: true
  serve:
    description: Restart C(edgert serve) on the board (keys host, port, grace) and check it with the new version.
    type: dict
  setup:
    description: Where the runtime is missing, install it in I(root)/venv first (keys requirements, index_url), as
      C(edgert.fleet.runtime) does.
    type: dict
  from_version:
    description: With I(state=rolled_back) or I(state=absent), act only while this version is the active one.
    type: str
  src:
    description: Where the bundle is on the board (set by the action plugin).
    type: path
  sha256:
    description: The bundle's sha256 (set by the action plugin).
    type: str
  cleanup:
    description: A folder on the board to remove when the module ends (where the action plugin put what it sent).
    type: path
author: edgert developers (@edgert)
"""

EXAMPLES = r"""
- name: Roll out a model, checked against the host
  edgert.fleet.model:
    bundle: digits.edgert
    reference: digits.reference.npz
    max_slowdown: 1.5

- name: Back to the version before 6c1d2e3f4a5b6c7d
  edgert.fleet.model:
    name: digits
    state: rolled_back
    from_version: 6c1d2e3f4a5b6c7d
"""

RETURN = r"""
before:
  description: The version active before the task.
  returned: always
  type: str
after:
  description: The version active after it.
  returned: always
  type: str
check:
  description: The health check's measures (agreement by output, p50, baseline p50, slowdown, throttling).
  returned: when I(reference) was given and the check ran
  type: dict
rolled_back:
  description: The new version failed a check and the board switched back to I(before).
  returned: on failure after switching
  type: bool
"""

import os  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.edgert.fleet.plugins.module_utils.agent import (  # noqa: E402
    AgentError, activate, check_free, clear_incoming, cmd_rollback, cmd_serve, ensure_runtime, fail, open_models,
    paths, prune, ready_and_infer, record_check, restore, run_check, stage, thermal_state, version_of,
    version_present)


def _gate_failure(check):
    """Why a health check fails, or ''."""
    if not check.get("agrees", False):
        return check.get("disagreement") or "the outputs disagree with the host's"
    if check.get("latency_failure"):
        return check["latency_failure"]
    if check.get("throttled"):
        return "the board throttled while the check ran (%s)" % check.get("throttle_reason", "")
    return ""


def _serve(root, p, version):
    """(Re)start the board's `edgert serve` and check that it serves `version` of the model: how it runs."""
    s = p["serve"]
    port = str(s.get("port", 8000))
    serving = cmd_serve(root, p["name"], str(s.get("host", "127.0.0.1")), port, "%g" % float(s.get("grace", 10)))
    serving.update(ready_and_infer(port, p["name"], version))
    return serving


def activate_version(module, p, diff):
    root, models = paths(p["root"], p["name"])
    version = p["version"]
    current = version_of(os.path.join(models, "current"))
    previous = version_of(os.path.join(models, "previous"))
    same = dict(before=current, after=current, previous=previous, version=version)
    present = version_present(models, version)
    if current == version and present:
        module.exit_json(changed=False, **same)
    if module.check_mode:
        module.exit_json(changed=True, before=current, after=version, previous=current, version=version, diff=diff)
    if not present and not p["src"]:
        fail("no_bundle", "version %s of %s is not on the board; give the task its bundle" % (version, p["name"]))
    setup = p["setup"]
    ensure_runtime(root, setup["requirements"] if setup else None, (setup or {}).get("index_url") or "-")
    if p["thermal"]:
        _hottest, _zones, throttled, reason = thermal_state()
        if throttled:
            fail("throttled", "the board is thermally throttled (%s); nothing was installed, let it cool and run "
                 "again" % reason)
    root, models, handle = open_models(root, p["name"])
    if not present:
        clear_incoming(models)
        check_free(models, os.path.getsize(p["src"]))
        stage(models, version, p["src"], p["sha256"])
    before, previous_before = activate(models, version)
    check = serving = None
    serving_step = False
    try:
        if p["reference"]:
            check = run_check(root, models, version, p["reference"], before, p["runs"], p["max_slowdown"])
            why = _gate_failure(check)
            if why:
                fail("gate", why)
        if p["serve"] is not None:
            serving_step = True
            serving = _serve(root, p, version)
    except Exception as exc:  # noqa: BLE001 - whatever stopped the checks, the board goes back to what it ran
        message, kind = (exc.message, exc.kind) if isinstance(exc, AgentError) else (
            "the checks failed on the board: %s: %s" % (type(exc).__name__, exc), "check")
        restore(models, before, previous_before)
        note = ""
        if serving_step and before:  # the server went down with the new version: bring it back with the old one
            try:
                _serve(root, p, before)
                note = ", which edgert serve runs again"
            except Exception as again:  # noqa: BLE001 - said in the one line, the board stays on the old version
                note = ", though edgert serve did not start again with it either (%s)" % (
                    again.message if isinstance(again, AgentError) else again)
        handle.close()
        record_check(models, dict(check or {}, version=version, passed=False, reason=message, time=time.time()))
        module.fail_json(msg="%s; switched back to %s%s" % (message, before or "no version (none was active)", note),
                         kind=kind, rolled_back=True, before=before, after=before, version=version, check=check)
    prune(models, set(v for v in (version, before) if v))
    if check is not None:
        record_check(models, dict(check, version=version, passed=True, time=time.time()))
    handle.close()
    module.exit_json(changed=True, before=before, after=version, previous=before, version=version, check=check,
                     serving=serving, diff=diff)


def leave_version(module, p, diff):
    root, models = paths(p["root"], p["name"])
    current = version_of(os.path.join(models, "current"))
    previous = version_of(os.path.join(models, "previous"))
    if (p["from_version"] and current != p["from_version"]) or (p["state"] == "absent" and not os.path.isdir(models)):
        module.exit_json(changed=False, before=current, after=current, previous=previous)
    if p["state"] == "absent":
        if not module.check_mode:
            import shutil

            shutil.rmtree(models)
        module.exit_json(changed=True, before=current, after=None, previous=None, diff=diff)
    if module.check_mode:
        module.exit_json(changed=True, before=current, after=previous, previous=current, diff=diff)
    result = cmd_rollback(p["root"], p["name"])
    module.exit_json(changed=True, before=current, after=result["version"], previous=result["replaced"], diff=diff)


def main():
    import platform

    module = AnsibleModule(
        argument_spec=dict(
            bundle=dict(type="path"), name=dict(type="str"), version=dict(type="str"), root=dict(type="str"),
            state=dict(type="str", default="active", choices=["active", "rolled_back", "absent"]),
            src=dict(type="path"), sha256=dict(type="str"), reference=dict(type="path"),
            max_slowdown=dict(type="float"), runs=dict(type="int", default=50), thermal=dict(type="bool", default=True),
            serve=dict(type="dict"), setup=dict(type="dict"), from_version=dict(type="str"),
            cleanup=dict(type="path")),
        required_if=[("state", "active", ("version",))],
        supports_check_mode=True)
    p = module.params
    if not p["name"]:
        module.fail_json(msg="edgert.fleet.model needs a bundle, or a name")
    machine = os.environ.get("EDGERT_MACHINE") or platform.machine()
    for method in ("exit_json", "fail_json"):  # every answer says which architecture the board is
        original = getattr(module, method)
        setattr(module, method, lambda _original=original, **kw: _original(machine=machine, **kw))
    _root, models = paths(p["root"], p["name"])
    current = version_of(os.path.join(models, "current"))
    after = p["version"] if p["state"] == "active" else (
        None if p["state"] == "absent" else version_of(os.path.join(models, "previous")))
    diff = dict(before="%s: %s\n" % (p["name"], current or "(none)"), after="%s: %s\n" % (p["name"], after or "(none)"))
    keep = False  # the folder the action plugin sent files into goes when the module ends (exit_json exits)
    try:
        if p["state"] == "active":
            activate_version(module, p, diff)
        else:
            leave_version(module, p, diff)
    except AgentError as exc:
        keep = exc.kind == "no_bundle"  # the action plugin sends the bundle there and calls again
        module.fail_json(msg=exc.message, kind=exc.kind, before=current, after=current)
    finally:
        if p["cleanup"] and os.path.basename(p["cleanup"]).startswith("edgert-") and not keep:
            import shutil

            shutil.rmtree(p["cleanup"], ignore_errors=True)


if __name__ == "__main__":
    main()
