"""Power sensor plugins and their registry: what a sensor declares, and choosing one for a benchmark.

A `PowerSensor` plugin (entry point group `edgert.power_sensors`, filtered by `EDGERT_POWER_SENSORS`) finds the
meters of its kind on this machine and opens each as a `PowerSource`. A source is read by the sampling thread: a
`power` source returns instantaneous milliwatts, an `energy` source a cumulative microjoule counter (already
unwrapped). Every sysfs path goes through `EDGERT_SYSFS_ROOT`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping

from edgert.errors import SensorError
from edgert.runtime.plugins import Probe, Registry

ENTRY_POINT_GROUP = "edgert.power_sensors"


@dataclass(frozen=True)
class Reading:
    """One reading: total and per-rail values, in mW (`power` sources) or cumulative uJ (`energy` sources)."""

    t_ns: int  # time.perf_counter_ns() when the value was taken (or arrived, for a streaming command)
    value: float
    rails: Mapping[str, float] = field(default_factory=dict)


class PowerSource:
    """One live meter found by a sensor plugin. Subclasses implement `_read` (and `close` if they hold resources)."""

    kind: ClassVar[str] = "power"  # "power": instantaneous mW; "energy": cumulative uJ counter
    label: str = ""
    min_interval_s: float = 0.0  # the meter's own update interval: sampling faster only repeats values
    clock: Callable[[], int] = staticmethod(time.perf_counter_ns)  # when a reading is taken; tests inject one

    def read(self) -> Reading:
        """Raises SensorError when the meter is gone or gives garbage."""
        t_ns = self.clock()
        value, rails = self._read()
        return Reading(t_ns, value, rails)

    def readings(self, wait_s: float = 0.0) -> list[Reading]:
        """The readings the sampler records at one tick: one fresh read. A meter that reports on its own schedule
        returns every reading since the last call, waiting up to `wait_s` for one (the sampler's last tick waits,
        so the trace reaches past the end of the run)."""
        return [self.read()]

    def _read(self) -> tuple[float, dict[str, float]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{self.kind} source {self.label}>"


class PowerSensor:
    """Base class of power sensor plugins: a name, a summary, `auto` order, and `find` for the meters it knows."""

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""
    priority: ClassVar[int] = 50  # lower is tried first by --power auto
    auto: ClassVar[bool] = True  # tried by --power auto (a command meter is only used when asked for)

    def find(self, options: Mapping[str, str]) -> list[PowerSource]:
        """Open every meter of this kind found here, best first.

        Raises:
            SensorError: none is here (or none is readable); the message says why and what to do.
        """
        raise NotImplementedError

    def probe(self) -> Probe:
        try:
            sources = self.find({})
        except SensorError as exc:
            return Probe(False, str(exc))
        except Exception as exc:  # a third-party sensor's bug is shown, not raised
            return Probe(False, f"the plugin failed: {type(exc).__name__}: {exc}")
        try:
            return Probe(True, "", ", ".join(s.label for s in sources))
        finally:
            for s in sources:
                s.close()

    def __repr__(self) -> str:
        return f"<power sensor plugin {self.name}>"


class BrokenSensor(PowerSensor):
    """Stands in for an entry point that failed to load, so `edgert sensors` can say why."""

    auto = False  # type: ignore[misc]

    def __init__(self, name: str, error: str):
        self.name = name  # type: ignore[misc]
        self.summary = "plugin failed to load"  # type: ignore[misc]
        self._error = error

    def find(self, options: Mapping[str, str]) -> list[PowerSource]:
        raise SensorError(f"the plugin failed to load: {self._error}")


_registry: Registry[PowerSensor] = Registry(
    ENTRY_POINT_GROUP, "EDGERT_POWER_SENSORS", PowerSensor, "power sensor", BrokenSensor, SensorError,
    "edgert sensors", extra_names=("auto", "none"))

plugins = _registry.plugins
register = _registry.register
unregister = _registry.unregister
reset = _registry.reset
get = _registry.get


@dataclass(frozen=True)
class Selection:
    """The outcome of choosing a power source: the opened source (or None) and why each candidate was passed over."""

    source: PowerSource | None
    skipped: tuple[tuple[str, str], ...] = ()
    requested: bool = False  # the user named a sensor (or a command), so finding none is an error to report

    @property
    def reason(self) -> str:
        """Why there is no source, in one line (empty when there is one)."""
        if self.source is not None:
            return ""
        if not self.skipped:
            return "no power sensor (power measurement off)"
        if not self.requested:
            return (f"no power sensor found (tried {', '.join(name for name, _ in self.skipped)}; "
                    "`edgert sensors` says why)")
        return "; ".join(f"{name}: {why}" for name, why in self.skipped)


def board_sensor_order() -> tuple[str, ...]:
    """The power sensors the board's profile lists, in its order: the profile named by `EDGERT_DEVICE`, or the
    board recognised from its device tree or Android properties (not a guess from the machine type alone)."""
    import os

    from edgert.devices import detect, profiles
    from edgert.errors import DeviceProfileError

    try:
        if os.environ.get("EDGERT_DEVICE", "").strip():
            return profiles.get(os.environ["EDGERT_DEVICE"]).power_sensors
        found = detect.detect()
    except DeviceProfileError:
        return ()
    return found.profile.power_sensors if found.profile and found.found_by in ("device-tree", "android") else ()


def select(spec: str | None = "auto", command: str | None = None,
           options: Mapping[str, str] | None = None) -> Selection:
    """Open the first usable power source.

    Args:
        spec: `auto` (every plugin marked for it, in priority order), `none`, or names in priority order
            (comma-separated or a list's worth in one string).
        command: an external meter command (`--power-cmd`); it takes precedence and implies the `command` sensor.
        options: passed to the sensors' `find` (e.g. `rail=VDD_IN`).

    Raises:
        SensorError: an unknown sensor name (with the closest one).
    """
    options = dict(options or {})
    if command:
        options["command"] = command
        names, requested = ["command"], True
    else:
        spec = (spec or "auto").strip().lower()
        if spec == "none":
            return Selection(None)
        if spec == "auto":
            board = board_sensor_order()
            candidates = sorted((p for p in plugins().values() if p.auto),
                                key=lambda p: (board.index(p.name) if p.name in board else len(board), p.priority,
                                               p.name))
            names, requested = [p.name for p in candidates], False
        else:
            names, requested = [n.strip() for n in spec.split(",") if n.strip()], True
    skipped = []
    for name in names:
        plugin = get(name)
        try:
            sources = plugin.find(options)
        except SensorError as exc:
            skipped.append((plugin.name, str(exc)))
            continue
        except Exception as exc:  # a third-party sensor's bug must not stop the benchmark
            skipped.append((plugin.name, f"the plugin failed: {type(exc).__name__}: {exc}"))
            continue
        for extra in sources[1:]:
            extra.close()
        return Selection(sources[0], tuple(skipped), requested)
    return Selection(None, tuple(skipped), requested)
