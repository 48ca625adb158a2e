"""`edgert fleet rollout` and `rollback`: one model to many boards through Ansible, in waves, each board checked
before the next wave starts, and the report of what every board runs afterwards."""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from edgert.errors import FleetError
from edgert.fleet import engine
from edgert.fleet.engine import Event, explain
from edgert.fleet import inventory as inventories
from edgert.fleet.inventory import Host, read_inventory, write_host_vars

PLAYBOOKS = "playbooks"
DEFAULT_WAVES = (10.0, 50.0, 100.0)
DEFAULT_MAX_SLOWDOWN = 1.5
# What counts as success for a board; "rolled back" is a rollout's failure (the board is back on its old version).
OK_RESULTS = ("updated", "unchanged", "would update", "switched back", "would switch back")


@dataclass(frozen=True)
class BoardResult:
    """One board after a rollout: its version before and after, what happened, and why when it failed.

    `result` is one of: updated, unchanged (it ran the version already), would update (--check), rolled back (it
    failed a check and switched back by itself, or --rollback-all put it back), failed (before anything switched),
    unreachable, not started (the rollout halted or was stopped before its wave)."""

    host: str
    wave: int | None
    result: str
    before: str | None
    after: str | None
    reason: str = ""
    arch: str = ""
    p50_ms: float | None = None
    baseline_p50_ms: float | None = None
    min_cosine: float | None = None

    @property
    def ok(self) -> bool:
        return self.result in OK_RESULTS

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


@dataclass(frozen=True)
class RolloutReport:
    """A finished (or halted, or stopped) rollout."""

    model: str
    name: str
    versions: dict  # device profile (or "any") -> the bundle version it got
    waves: tuple[int, ...]  # boards per wave, canary first
    boards: tuple[BoardResult, ...]
    halted: str = ""  # why the rollout stopped before its last wave ("" when it did not)
    stopped: bool = False  # Ctrl-C
    rolled_back_all: bool = False
    check: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.halted and not self.stopped and all(b.ok for b in self.boards)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for b in self.boards:
            out[b.result] = out.get(b.result, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {"model": self.model, "name": self.name, "versions": self.versions, "waves": list(self.waves),
                "ok": self.ok, "halted": self.halted or None, "stopped": self.stopped,
                "rolled_back_all": self.rolled_back_all, "check": self.check, "seconds": self.seconds,
                "counts": self.counts(), "boards": [b.to_dict() for b in self.boards]}


def wave_sizes(count: int, canary: int, waves: Sequence[float]) -> tuple[int, ...]:
    """Boards per wave: `canary` first, then up to each cumulative percentage of `count` (Greengrass's and
    Mender's phases), as Ansible's `serial` list takes them.

    Raises:
        FleetError: a percentage outside (0, 100], not increasing, or a last wave short of 100%.
    """
    if canary < 0:
        raise FleetError(f"--canary {canary}: give a number of boards, 0 or more")
    previous = 0.0
    for pct in waves:
        if not 0 < pct <= 100 or pct <= previous:
            raise FleetError(f"--waves {','.join(f'{w:g}%' for w in waves)}: each wave is a share of the fleet "
                             "above the one before, up to 100% (e.g. 10%,50%,100%)")
        previous = pct
    if waves and waves[-1] != 100:
        raise FleetError(f"--waves ends at {waves[-1]:g}%: the last wave must be 100% (every board)")
    sizes, done = [], 0
    if canary:
        sizes.append(min(canary, count))
        done = sizes[0]
    for pct in waves or (100.0,):
        size = max(0, math.ceil(count * pct / 100.0 - 1e-9) - done)
        if size:
            sizes.append(size)
            done += size
    return tuple(sizes) or (count,)


def parse_waves(text: str) -> tuple[float, ...]:
    """`10%,50%,100%` (the `%` is optional).

    Raises:
        FleetError: not a list of percentages.
    """
    try:
        return tuple(float(part.strip().rstrip("%")) for part in text.split(",") if part.strip())
    except ValueError:
        raise FleetError(f"--waves {text!r}: give percentages of the fleet, e.g. 10%,50%,100%") from None


def playbook(name: str) -> Path:
    from edgert.fleet.inventory import collection_path

    return collection_path() / "ansible_collections" / "edgert" / "fleet" / PLAYBOOKS / f"{name}.yml"


def rollout(model: str | os.PathLike, inventory: str | os.PathLike | list, *, limit: str | None = None,
            canary: int = 1, waves: Sequence[float] = DEFAULT_WAVES, max_fail: float = 0.0, setup: bool = False,
            serve: bool = False, max_slowdown: float | None = DEFAULT_MAX_SLOWDOWN, runs: int = 50,
            reference_inputs: str | os.PathLike | None = None, device: str | None = None, name: str | None = None,
            forks: int | None = None, check: bool = False, rollback_all: bool = False,
            on_event: Callable[[Event], None] = lambda _e: None,
            on_note: Callable[[str], None] = lambda _m: None) -> RolloutReport:
    """Roll `model` out to the inventory's boards with Ansible (the playbook `edgert.fleet.rollout`).

    Each board gets the bundle for its `edgert_device` (else `device`), and before its wave is done the new version
    is checked there (edgert.fleet.model): outputs against this host's on the same inputs, p50 against the version
    it replaces (`max_slowdown`), thermal throttling, and with `serve` a ready check and one inference. A board
    that fails switches back by itself. A wave whose failures pass `max_fail` percent halts the rollout; with
    `rollback_all`, every board this rollout switched is then put back. A rerun resumes: boards already on the
    version are `unchanged`.

    Args:
        canary: boards in the first wave. waves: cumulative percentages of the fleet after it.
        forks: boards Ansible works on at once [default: the largest wave, at most 50].
        reference_inputs: `.npy`/`.npz` inputs for the output check [default: 4 seeded random samples].
        check: Ansible's check mode: report what would change, change nothing.

    Raises:
        FleetError: Ansible is missing, the inventory is unreadable or empty, or the waves are malformed.
        ModelFormatError, BundleError, DeviceProfileError: the model or a profile is unusable (nothing is sent).
    """
    from edgert.deploy import serve_requirements
    from edgert.deploy.bundle import build, bundle_name
    from edgert.measure.health import make_reference

    started = time.monotonic()
    hosts = read_inventory(inventory, limit)
    sizes = wave_sizes(len(hosts), canary, waves)
    name = name or bundle_name(model)
    work = engine.workdir()
    try:
        bundles: dict[tuple, tuple[Path, object]] = {}  # one per (profile, delegate order) in the fleet
        for h in hosts:
            key = _bundle_key(h, device)
            if key not in bundles:
                data, manifest = build(model, key[0], name=name, delegates=key[1])
                path = work / f"{name}-{len(bundles)}.edgert"
                path.write_bytes(data)
                bundles[key] = (path, manifest)
        reference = work / "reference.npz"
        make_reference(model, reference, inputs=reference_inputs)
        extra = serve_requirements() if serve else ()
        host_vars = {}
        for h in hosts:
            path, manifest = bundles[_bundle_key(h, device)]
            hv = {"edgert_bundle": str(path), "edgert_requirements": list(manifest.requirements) + list(extra),
                  "edgert_index_url": manifest.index_url}
            if h.vars.get("edgert_python"):
                hv["ansible_python_interpreter"] = h.vars["edgert_python"]
            host_vars[h.name] = hv
        generated = write_host_vars(work, host_vars)
        extravars = {"edgert_model": name, "edgert_reference": str(reference), "edgert_waves": list(sizes),
                     "edgert_max_fail": max_fail, "edgert_check_runs": runs, "edgert_setup": setup,
                     "edgert_serve": serve}
        if max_slowdown:
            extravars["edgert_max_slowdown"] = max_slowdown
        sources = inventories.sources(inventory) + [str(generated)]
        outcome = engine.run(inventories=sources, playbook=playbook("rollout"), extravars=extravars, limit=limit,
                             forks=forks or min(50, max(sizes)), check=check, diff=check, on_event=on_event,
                             on_stop=on_note)
        boards, halted = _results(hosts, outcome, sizes, max_fail, check)
        boards = _fill_unstarted(boards, name, sources)
        rolled_back_all = False
        if halted and rollback_all and not check:
            boards = _rollback_all(boards, name, sources, work, on_event, on_note)
            rolled_back_all = True
        versions = {_key_label(key): m.version for key, (_p, m) in bundles.items()}
        return RolloutReport(str(model), name, versions, sizes, tuple(boards), halted, outcome.stopped,
                             rolled_back_all, check, time.monotonic() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bundle_key(host: Host, device: str | None) -> tuple[str | None, tuple[str, ...] | None]:
    """Which bundle a board gets: its profile (`edgert_device`, else --device) and its own delegate order
    (`edgert_delegate`, e.g. `edgetpu,xnnpack`), which the bundle's manifest then carries."""
    delegate = host.vars.get("edgert_delegate")
    order = tuple(d.strip() for d in str(delegate).split(",") if d.strip()) if delegate else None
    return host.device or device, order


def _key_label(key: tuple) -> str:
    device, order = key
    return (device or "any") + (f" ({','.join(order)})" if order else "")


def _results(hosts: list[Host], outcome, sizes: tuple[int, ...], max_fail: float,
             check: bool) -> tuple[list[BoardResult], str]:
    planned = [i + 1 for i, size in enumerate(sizes) for _ in range(size)]  # Ansible batches in inventory order
    wave_of: dict[str, int] = {h.name: w for h, w in zip(hosts, planned)}
    wave = 0
    final: dict[str, Event] = {}
    for event in outcome.events:
        if event.step == "wave":
            wave += 1
            for h in event.hosts:
                wave_of[h] = wave
        elif event.result in ("failed", "unreachable") or event.step == "model":
            final.setdefault(event.host, event)
    boards = []
    for h in hosts:
        event = final.get(h.name)
        if event is None or event.res.get("stopped"):
            why = ("stopped by Ctrl-C before this board's step" if outcome.stopped
                   else "the rollout halted before this board's wave")
            boards.append(BoardResult(h.name, wave_of.get(h.name), "not started", None, None, why))
            continue
        res = event.res
        before = res.get("before")
        check_res = res.get("check") or {}
        common = dict(host=h.name, wave=wave_of.get(h.name), before=before, arch=res.get("machine", ""),
                      p50_ms=check_res.get("p50_ms"), baseline_p50_ms=check_res.get("baseline_p50_ms"),
                      min_cosine=min((o["min_cosine"] for o in check_res.get("outputs", [])), default=None))
        if event.result == "unreachable":
            boards.append(BoardResult(result="unreachable", after=before, reason=explain(event), **common))
        elif event.result == "failed":
            result = "rolled back" if res.get("rolled_back") else "failed"
            boards.append(BoardResult(result=result, after=res.get("after", before),
                                      reason=explain(event, h.interpreter), **common))
        elif event.result == "changed":
            boards.append(BoardResult(result="would update" if check else "updated", after=res.get("after"),
                                      **common))
        else:
            boards.append(BoardResult(result="unchanged", after=res.get("after", before), **common))
    return boards, _haltexplain(boards, outcome, sizes, max_fail)


def _haltexplain(boards: list[BoardResult], outcome, sizes: tuple[int, ...], max_fail: float) -> str:
    if outcome.stopped:
        return "stopped by Ctrl-C"
    if not any(b.result == "not started" for b in boards):
        return ""
    for wave in range(1, len(sizes) + 1):
        members = [b for b in boards if b.wave == wave and b.result != "not started"]
        failed = [b for b in members if not b.ok]
        if failed and len(failed) * 100.0 > max_fail * len(members):
            return (f"wave {wave}: {len(failed)} of {len(members)} boards failed "
                    f"({100.0 * len(failed) / len(members):.0f}% > --max-fail {max_fail:g}%)")
        if members and len(failed) == len(members):
            return (f"wave {wave}: all {len(members)} boards failed, and Ansible ends a play when a whole wave fails, "
                    f"whatever --max-fail allows")
    return f"Ansible ended the rollout early (status {outcome.status}, exit {outcome.rc})"


def _fill_unstarted(boards: list[BoardResult], name: str, sources: list[str]) -> list[BoardResult]:
    """Ask the boards a halted or stopped rollout never reached (and those that failed before saying) which version
    they run, so the report says."""
    waiting = [b.host for b in boards if b.result == "not started" or b.result == "failed" and b.before is None]
    if not waiting:
        return boards
    outcome = engine.run(inventories=sources, module="edgert.fleet.facts", limit=",".join(waiting),
                         module_args="names=" + name,
                         forks=min(50, len(waiting)))
    found = {e.host: e.res.get("ansible_facts", {}).get("edgert", {}) for e in outcome.events if e.result == "ok"}
    out = []
    for b in boards:
        facts = found.get(b.host)
        if facts is None:
            out.append(b)
            continue
        version = facts.get("models", {}).get(name, {}).get("active")
        out.append(BoardResult(b.host, b.wave, b.result, version, version, b.reason, facts.get("machine", ""),
                               b.p50_ms, b.baseline_p50_ms, b.min_cosine))
    return out


def _rollback_all(boards: list[BoardResult], name: str, sources: list[str], work: Path,
                  on_event: Callable[[Event], None], on_note: Callable[[str], None]) -> list[BoardResult]:
    """Put back every board this rollout switched: to the version it ran, or with no model where it had none."""
    switched = [b for b in boards if b.result == "updated"]
    if not switched:
        return boards
    on_note(f"--rollback-all: putting {len(switched)} boards back")
    host_vars = {b.host: {"edgert_from_version": b.after,
                          "edgert_rollback_state": "rolled_back" if b.before else "absent"} for b in switched}
    generated = write_host_vars(work, host_vars, "edgert-rollback")
    outcome = engine.run(inventories=sources + [str(generated)], playbook=playbook("rollback"),
                         extravars={"edgert_model": name}, limit=",".join(b.host for b in switched),
                         forks=min(50, len(switched)), on_event=on_event)
    done = {e.host: e for e in outcome.events if e.step == "rollback"}
    out = []
    for b in boards:
        event = done.get(b.host)
        if b.result != "updated" or event is None:
            out.append(b)
        elif event.result in ("ok", "changed"):
            out.append(BoardResult(b.host, b.wave, "rolled back", b.before, event.res.get("after"),
                                   "--rollback-all after the halt", b.arch, b.p50_ms, b.baseline_p50_ms,
                                   b.min_cosine))
        else:
            out.append(BoardResult(b.host, b.wave, "updated", b.before, b.after,
                                   f"--rollback-all could not put it back: {explain(event)}", b.arch, b.p50_ms,
                                   b.baseline_p50_ms, b.min_cosine))
    return out


def rollback(model: str | os.PathLike, inventory: str | os.PathLike | list, *, limit: str | None = None,
             device: str | None = None, name: str | None = None, forks: int | None = None, check: bool = False,
             on_event: Callable[[Event], None] = lambda _e: None) -> RolloutReport:
    """Make the previous version of a model active on every board (the playbook `edgert.fleet.rollback`).

    `model` is the model's name on the boards, or the `.tflite` that was rolled out: then only boards running that
    version switch back, so a rerun changes nothing (`name`: the name it was rolled out under, if not its stem).

    Raises:
        FleetError: Ansible is missing, or the inventory is unreadable or empty.
    """
    from edgert.deploy.bundle import build, bundle_name

    started = time.monotonic()
    hosts = read_inventory(inventory, limit)
    is_file = Path(model).suffix == ".tflite" or Path(model).is_file()
    name = name or (bundle_name(model) if is_file else str(model))
    work = engine.workdir()
    try:
        host_vars: dict[str, dict] = {}
        versions: dict[str, str] = {}
        if is_file:
            for h in hosts:
                key = _bundle_key(h, device)
                if _key_label(key) not in versions:
                    versions[_key_label(key)] = build(model, key[0], name=name, delegates=key[1])[1].version
                host_vars[h.name] = {"edgert_from_version": versions[_key_label(key)]}
        for h in hosts:
            if h.vars.get("edgert_python"):
                host_vars.setdefault(h.name, {})["ansible_python_interpreter"] = h.vars["edgert_python"]
        sources = inventories.sources(inventory) + [str(write_host_vars(work, host_vars))]
        outcome = engine.run(inventories=sources, playbook=playbook("rollback"), extravars={"edgert_model": name},
                             limit=limit, forks=forks or min(50, len(hosts)), check=check, diff=check,
                             on_event=on_event)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    done = {e.host: e for e in outcome.events if e.step == "rollback" or e.result == "unreachable"}
    boards = []
    for h in hosts:
        e = done.get(h.name)
        if e is None:
            boards.append(BoardResult(h.name, None, "not started", None, None, "stopped by Ctrl-C"))
        elif e.result in ("failed", "unreachable"):
            boards.append(BoardResult(h.name, None, e.result, e.res.get("before"), e.res.get("before"),
                                      explain(e, h.interpreter)))
        else:
            result = ("would switch back" if check else "switched back") if e.result == "changed" else "unchanged"
            boards.append(BoardResult(h.name, None, result, e.res.get("before"), e.res.get("after")))
    return RolloutReport(str(model), name, versions, (len(hosts),), tuple(boards), "", outcome.stopped, False, check,
                         time.monotonic() - started)
