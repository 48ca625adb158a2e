"""`edgert fleet status`: one row per board, from the collection's facts module run on every host by Ansible."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

from edgert.fleet import engine
from edgert.fleet.engine import explain
from edgert.fleet.inventory import Host, read_inventory, sources, write_host_vars


@dataclass(frozen=True)
class ModelState:
    """One model on one board."""

    name: str
    active: str | None
    previous: str | None
    last_p50_ms: float | None  # the last health check's p50 on this board (a rollout's), if any
    last_check_passed: bool | None


@dataclass(frozen=True)
class BoardStatus:
    """One board: reachable or why not, what it is, what it runs, and how warm it is."""

    host: str
    groups: tuple[str, ...]
    reachable: bool
    reason: str = ""
    arch: str = ""
    device: str = ""  # the inventory's edgert_device, else the profile its device tree matches
    python: str = ""
    runtime_ok: bool | None = None
    models: tuple[ModelState, ...] = ()
    serving: bool | None = None
    temperature_c: float | None = None
    throttled: bool | None = None
    free_mb: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FleetStatus:
    boards: tuple[BoardStatus, ...]
    seconds: float

    def to_dict(self) -> dict:
        return {"boards": [b.to_dict() for b in self.boards], "seconds": self.seconds,
                "reachable": sum(b.reachable for b in self.boards), "total": len(self.boards)}


def _profile_for(facts: dict) -> str:
    """The board profile whose device-tree rule matches the board's model string (as `edgert devices detect`)."""
    model = facts.get("device_tree_model") or ""
    if not model:
        return ""
    from edgert.devices import profiles

    found, _broken = profiles.all_profiles()
    for p in found.values():
        if any(m in model for m in p.detect.model) and (not p.arch or facts.get("machine") in p.arch):
            return p.name
    return ""


def status(inventory: str | os.PathLike | list, *, limit: str | None = None, names: tuple[str, ...] = (),
           forks: int | None = None) -> FleetStatus:
    """Ask every board what it runs (the module `edgert.fleet.facts`, changing nothing).

    Raises:
        FleetError: Ansible is missing, or the inventory is unreadable or empty.
    """
    started = time.monotonic()
    hosts = read_inventory(inventory, limit)
    args = f"names={','.join(names)}" if names else ""
    found = sources(inventory)
    interpreters = {h.name: {"ansible_python_interpreter": h.vars["edgert_python"]}
                    for h in hosts if h.vars.get("edgert_python")}
    work = engine.workdir()
    try:
        if interpreters:
            found.append(str(write_host_vars(work, interpreters)))
        outcome = engine.run(inventories=found, module="edgert.fleet.facts", module_args=args, limit=limit,
                             forks=forks or min(50, len(hosts)))
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    by_host = {e.host: e for e in outcome.events if e.host}
    return FleetStatus(tuple(_row(h, by_host.get(h.name)) for h in hosts), time.monotonic() - started)


def _row(h: Host, event) -> BoardStatus:
    if event is None:
        return BoardStatus(h.name, h.groups, False, "no answer (the run was stopped)")
    if event.result != "ok":
        return BoardStatus(h.name, h.groups, event.result != "unreachable", explain(event, h.interpreter))
    f = event.res.get("ansible_facts", {}).get("edgert", {})
    models = []
    for name, m in sorted(f.get("models", {}).items()):
        last = m.get("last_check") or {}
        if last.get("version") != m.get("active"):
            last = {}  # a check of a version the board no longer runs (one that failed it, say)
        models.append(ModelState(name, m.get("active"), m.get("previous"), last.get("p50_ms"), last.get("passed")))
    return BoardStatus(h.name, h.groups, True, "", f.get("machine", ""), h.device or _profile_for(f),
                       ".".join(map(str, f.get("python", []))), f.get("runtime_ok"), tuple(models),
                       (f.get("serving") or {}).get("running"), f.get("temperature_c"), f.get("throttled"),
                       round(f.get("free_bytes", 0) / 2**20, 1) if f.get("free_bytes") is not None else None)
