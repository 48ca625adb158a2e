"""Fleets: roll models out to many boards through Ansible, in waves with health gates, and see what each runs.

Ansible does the fan-out (`serial` waves, `max_fail_percentage`, forks, inventories); edgert adds the model-level
checks and the report. The board side is the `edgert.fleet` Ansible collection shipped in `edgert.deploy`
(`collection_path()`), usable from a user's own playbooks. Needs `pip install 'edgert[fleet]'`.
"""

from __future__ import annotations

_LAZY = {
    "rollout": "edgert.fleet.rollouts", "rollback": "edgert.fleet.rollouts", "RolloutReport": "edgert.fleet.rollouts",
    "BoardResult": "edgert.fleet.rollouts", "wave_sizes": "edgert.fleet.rollouts",
    "status": "edgert.fleet.survey", "FleetStatus": "edgert.fleet.survey", "BoardStatus": "edgert.fleet.survey",
    "read_inventory": "edgert.fleet.inventory", "Host": "edgert.fleet.inventory",
    "collection_path": "edgert.fleet.inventory", "write_targets": "edgert.fleet.inventory",
    "prometheus_targets": "edgert.fleet.inventory", "make_reference": "edgert.measure.health",
    "check": "edgert.measure.health", "CheckResult": "edgert.measure.health",
}


def __getattr__(name: str):
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module 'edgert.fleet' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
