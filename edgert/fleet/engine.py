"""Ansible runs the fleet: a playbook or one module through ansible-runner, its events turned into typed ones as
they arrive, and Ctrl-C turned into a stop at the next step (a second Ctrl-C stops at once)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgert.errors import FleetError
from edgert.fleet.inventory import INSTALL_HINT, ansible_bin, ansible_env

# The Ansible events a fleet command reads: a host's result for one task.
RESULTS = {"runner_on_ok": "ok", "runner_on_failed": "failed", "runner_on_unreachable": "unreachable",
           "runner_on_skipped": "skipped"}


@dataclass(frozen=True)
class Event:
    """One host's result for one step (an Ansible task), or the start of a wave (`step` "wave", `hosts` in it)."""

    step: str
    host: str = ""
    result: str = ""  # ok, changed, failed, unreachable, skipped
    res: dict = field(default_factory=dict)  # the module's return values
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """How an Ansible run ended: its status and return code, the events, and whether Ctrl-C stopped it."""

    status: str
    rc: int
    events: tuple[Event, ...]
    stopped: bool


class _Interrupts:
    """Ctrl-C during a run: the first one creates the stop file (the playbook ends at its next step, once the
    boards in flight finish theirs), a second one cancels the run."""

    def __init__(self, stop_file: Path, on_stop: Callable[[str], None]):
        self.stop_file, self.on_stop = stop_file, on_stop
        self.count = 0
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def handle(self, _signum, _frame):
        self.count += 1
        self.stop_file.touch()
        self.on_stop("stopping after the boards in flight finish their step (Ctrl-C again to stop now)"
                     if self.count == 1 else "stopping now")

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def run(*, inventories: list[str], playbook: Path | None = None, module: str | None = None, module_args: str = "",
        extravars: dict | None = None, limit: str | None = None, forks: int | None = None, check: bool = False,
        diff: bool = False, on_event: Callable[[Event], None] = lambda _e: None,
        on_stop: Callable[[str], None] = lambda _m: None) -> Outcome:
    """Run `playbook`, or `module` on every host, and stream its events.

    Raises:
        FleetError: ansible-runner or Ansible is not installed, or Ansible could not start (its last line).
    """
    try:
        import ansible_runner
    except ImportError:
        raise FleetError(f"ansible-runner is not installed here; {INSTALL_HINT}") from None
    events: list[Event] = []
    work = Path(tempfile.mkdtemp(prefix="edgert-fleet-"))
    stop_file = work / "stop"
    extravars = dict(extravars or {}, edgert_stop_file=str(stop_file))
    errors: list[str] = []

    def handler(raw: dict) -> bool:
        event = _event(raw)
        if event is not None:
            events.append(event)
            on_event(event)
        elif raw.get("event") == "error" or (raw.get("event") == "verbose" and "ERROR" in raw.get("stdout", "")[:12]):
            errors.append(raw.get("stdout", ""))
        return False  # nothing written to the artifacts folder: the events are kept here

    cmdline = " ".join(flag for flag, on in (("--check", check), ("--diff", diff)) if on)
    options = dict(private_data_dir=str(work), inventory=inventories, limit=limit, extravars=extravars,
                   envvars=ansible_env(), forks=forks, cmdline=cmdline or None, quiet=True,
                   event_handler=handler, suppress_env_files=True, rotate_artifacts=1)
    try:
        with _Interrupts(stop_file, on_stop) as interrupts:
            options["cancel_callback"] = lambda: interrupts.count > 1
            if playbook is not None:
                ansible_bin("ansible-playbook")  # one line when Ansible is missing; ansible_env()'s PATH finds it
                runner = ansible_runner.run(playbook=str(playbook), **options)
            else:
                ansible_bin("ansible")
                runner = ansible_runner.run(host_pattern="all", module=module, module_args=module_args, **options)
        if runner.status == "failed" and not events:
            stdout = runner.stdout.read() if runner.stdout else ""
            lines = [line.strip() for line in (stdout + "\n".join(errors)).splitlines()
                     if line.strip() and not line.startswith("[WARNING]")]
            why = next((line for line in lines if "ERROR" in line), lines[-1] if lines else f"exit {runner.rc}")
            raise FleetError(f"Ansible could not run: {why.replace('[ERROR]: ', '').replace('ERROR! ', '')}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Outcome(runner.status, runner.rc or 0, tuple(events), interrupts.count > 0)


def _event(raw: dict) -> Event | None:
    data = raw.get("event_data") or {}
    kind = raw.get("event", "")
    task = (data.get("task") or "").strip()
    if kind == "runner_on_ok" and task == "wave":
        msg = (data.get("res") or {}).get("msg")
        return Event("wave", hosts=tuple(msg) if isinstance(msg, list) else ())
    if kind not in RESULTS or not data.get("host"):
        return None
    res = data.get("res") or {}
    result = RESULTS[kind]
    if result == "ok" and res.get("changed"):
        result = "changed"
    return Event(task or data.get("task_action", ""), data["host"], result, res)


def workdir() -> Path:
    """A folder for a rollout's bundles, reference file and generated inventory (removed when done)."""
    return Path(tempfile.mkdtemp(prefix="edgert-rollout-", dir=os.environ.get("TMPDIR")))


def explain(event: Event, interpreter: str | None = None) -> str:
    """A failed step's reason as one line. `interpreter` is the Python the inventory gave the host, if any; a
    Python that Ansible's discovery found is named from the result itself."""
    from edgert.deploy.ssh import ssh_problem

    res = event.res
    msg = str(res.get("msg") or "").strip()
    if event.result == "unreachable":
        return ssh_problem(event.host, event.host, msg)
    stderr = str(res.get("module_stderr") or "") + str(res.get("module_stdout") or "")
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    discovered = (res.get("ansible_facts") or {}).get("discovered_interpreter_python")
    never_ran = res.get("rc") == 127 or "deserialization failed" in msg.lower() or any(
        ("not found" in line or "No such file or directory" in line) and "python" in line.lower() for line in lines)
    if never_ran and lines:
        if discovered:
            return (f"{event.host}: {discovered}, the Python Ansible's interpreter discovery found on the board, does "
                    f"not run ({lines[0]}); set edgert_python (or ansible_python_interpreter) for the host to a "
                    "working Python 3.10+, e.g. /usr/bin/python3")
        where = f"at {interpreter}" if interpreter else "at the interpreter Ansible was given"
        return (f"{event.host}: no working Python on the board {where} ({lines[0]}); install Python 3.10+ there or "
                "set edgert_python (or ansible_python_interpreter) for the host")
    if msg.startswith("MODULE FAILURE"):
        return f"the {event.step} step failed on the board: {lines[-1] if lines else msg.splitlines()[0]}"
    return " ".join(msg.split())
