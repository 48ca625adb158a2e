"""Sampling power, temperature and CPU frequency in a background thread, and the energy of time windows.

A `Monitor` reads one `PowerSource` at a fixed rate (capped by the meter's own update interval) with
`time.perf_counter_ns` timestamps, the same clock the benchmark loop uses, so windows line up exactly. Energy over a
window is the trapezoid integral of the power samples (or the counter difference for energy counters), with the
window's ends interpolated; a window the samples do not cover (the sensor vanished) has no energy, never a guess.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgert.devices.machine import cpu_freqs_mhz, cpufreq_files, read_temps_c, thermal_zones
from edgert.devices.sensors import PowerSource
from edgert.errors import SensorError


@dataclass(frozen=True, eq=False)
class PowerTrace:
    """Power over time from one source: `power_mw[i]` at `t_ns[i]`, `energy_mj[i]` accumulated since the first sample.

    Per-rail series are in `rail_power_mw` and `rail_energy_mj` (cumulative, like `energy_mj`). `errors` holds
    `(t_ns, message)` for a sensor that failed mid-run: sampling stopped there.
    """

    source: str
    kind: str
    requested_hz: float
    t_ns: np.ndarray
    power_mw: np.ndarray
    energy_mj: np.ndarray
    rail_energy_mj: dict[str, np.ndarray] = field(default_factory=dict)
    rail_power_mw: dict[str, np.ndarray] = field(default_factory=dict)
    errors: tuple[tuple[int, str], ...] = ()

    @property
    def samples(self) -> int:
        return int(self.t_ns.size)

    @property
    def sample_hz(self) -> float:
        if self.t_ns.size < 2:
            return 0.0
        return (self.t_ns.size - 1) / ((self.t_ns[-1] - self.t_ns[0]) / 1e9)

    def covers(self, start_ns: int, end_ns: int) -> bool:
        return self.t_ns.size >= 2 and self.t_ns[0] <= start_ns and self.t_ns[-1] >= end_ns

    def energy_between(self, start_ns: int, end_ns: int, rail: str | None = None) -> float | None:
        """Energy in mJ over [start, end] (interpolated at the ends), or None when the samples do not cover it."""
        if not self.covers(start_ns, end_ns):
            return None
        if rail is None:
            power, energy = self.power_mw, self.energy_mj
        else:
            power, energy = self.rail_power_mw[rail], self.rail_energy_mj[rail]
        return self._energy_at(end_ns, power, energy) - self._energy_at(start_ns, power, energy)

    def _energy_at(self, t_ns: int, power: np.ndarray, energy: np.ndarray) -> float:
        """Cumulative energy at `t_ns`: within a sample interval, the integral of the straight line between the two
        power samples (what the trapezoid rule assumes), or a straight line for counters."""
        i = int(np.clip(np.searchsorted(self.t_ns, t_ns, "right") - 1, 0, self.t_ns.size - 2))
        span = float(self.t_ns[i + 1] - self.t_ns[i])
        dt = float(t_ns - self.t_ns[i])
        if self.kind == "energy" or span <= 0:
            return float(energy[i] + (energy[i + 1] - energy[i]) * (dt / span if span > 0 else 0.0))
        slope = (power[i + 1] - power[i]) / span
        return float(energy[i] + (power[i] * dt + slope * dt * dt / 2.0) / 1e9)

    def mean_power_between(self, start_ns: int, end_ns: int, rail: str | None = None) -> float | None:
        energy = self.energy_between(start_ns, end_ns, rail)
        return None if energy is None or end_ns <= start_ns else energy / ((end_ns - start_ns) / 1e9)

    def peak_power_between(self, start_ns: int, end_ns: int) -> float | None:
        inside = (self.t_ns >= start_ns) & (self.t_ns <= end_ns)
        return float(self.power_mw[inside].max()) if inside.any() else None

    def to_dict(self) -> dict:
        return {"source": self.source, "kind": self.kind, "requested_hz": self.requested_hz,
                "sample_hz": round(self.sample_hz, 2), "samples": self.samples, "rails": list(self.rail_energy_mj),
                "errors": [m for _, m in self.errors]}


def _cumulative_trapezoid(t_ns: np.ndarray, power_mw: np.ndarray) -> np.ndarray:
    if t_ns.size == 0:
        return np.zeros(0)
    steps = np.diff(t_ns) / 1e9 * (power_mw[1:] + power_mw[:-1]) / 2.0  # mW x s = mJ
    return np.concatenate([[0.0], np.cumsum(steps)])


def build_trace(source: str, kind: str, requested_hz: float, t_ns: list[int], values: list[float],
                rails: list[dict[str, float]], errors: list[tuple[int, str]]) -> PowerTrace:
    """A `PowerTrace` from raw readings: mW for `power` sources, cumulative uJ for `energy` counters."""
    t = np.asarray(t_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    rail_names = list(rails[0]) if rails and all(r.keys() == rails[0].keys() for r in rails) else []
    rail_values = {name: np.asarray([r[name] for r in rails], dtype=np.float64) for name in rail_names}
    if kind == "energy":
        energy = (v - v[0]) / 1000.0 if v.size else v  # uJ -> mJ
        rail_energy = {n: (s - s[0]) / 1000.0 for n, s in rail_values.items()}
        power = _counter_power(t, energy)
        rail_power = {n: _counter_power(t, e) for n, e in rail_energy.items()}
    else:
        power, rail_power = v, rail_values
        energy = _cumulative_trapezoid(t, v)
        rail_energy = {n: _cumulative_trapezoid(t, s) for n, s in rail_values.items()}
    return PowerTrace(source, kind, requested_hz, t, power, energy, rail_energy, rail_power, tuple(errors))


def _counter_power(t_ns: np.ndarray, energy_mj: np.ndarray) -> np.ndarray:
    """mW from a cumulative counter: the mean over the interval that ends at each sample."""
    power = np.zeros_like(energy_mj)
    if energy_mj.size >= 2:
        power[1:] = np.diff(energy_mj) / np.maximum(np.diff(t_ns) / 1e9, 1e-9)
        power[0] = power[1]
    return power


@dataclass(frozen=True, eq=False)
class ThermalTrace:
    """Temperatures (degrees C, per zone) and mean CPU frequency (MHz) over time, sampled a few times a second."""

    t_ns: np.ndarray
    temps_c: dict[str, np.ndarray]
    freq_mhz: np.ndarray  # NaN where cpufreq is absent


FINAL_WAIT_S = 3.0  # how long the last tick waits for a meter that reports on its own schedule


class Monitor:
    """A daemon thread sampling a power source at `power_hz` and thermal zones and CPU frequency at `thermal_hz`.

    `start()` returns once the first sample is in, so every window opened after it is covered; `stop()` takes one
    last sample, so every window closed before it is too. A source that fails is recorded and sampling goes on
    without it (temperatures and frequency continue).
    """

    def __init__(self, source: PowerSource | None, power_hz: float = 100.0, thermal_hz: float = 4.0,
                 thermal: bool = True, clock: Callable[[], int] = time.perf_counter_ns):
        self.source = source
        self._clock = clock  # the runs' clock; sources time their own readings (PowerSource.clock)
        self.power_hz = power_hz
        self._label = source.label if source is not None else ""
        self._kind = source.kind if source is not None else "power"
        hz = power_hz if source is not None else thermal_hz
        self.interval_s = max(1.0 / hz, source.min_interval_s if source is not None else 0.0)
        self.thermal_every = max(1, round((1.0 / thermal_hz) / self.interval_s))
        self.zones = thermal_zones() if thermal else {}
        self.freq_files = cpufreq_files() if thermal else {}
        self._t: list[int] = []
        self._v: list[float] = []
        self._rails: list[dict[str, float]] = []
        self._errors: list[tuple[int, str]] = []
        self._th_t: list[int] = []
        self._temps: list[dict[str, float]] = []
        self._freq: list[float] = []
        self._ticks = 0
        self._stop_ns: int | None = None
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgert-monitor", daemon=True)

    def start(self) -> Monitor:
        self._thread.start()
        self._first.wait(timeout=5.0)
        return self

    def _sample_power(self, wait_s: float = 0.0, until_ns: int | None = None) -> None:
        """Take the source's new readings; with `until_ns`, keep waiting (up to `wait_s`) for one timed at or after
        it, so that a meter polled on its own schedule (a --power-cmd run again and again, slow under load) still
        covers a window that closed at `until_ns`."""
        source = self.source
        if source is None:
            return
        deadline = time.monotonic() + wait_s
        try:
            while True:
                got = source.readings(max(0.0, deadline - time.monotonic()) if wait_s else 0.0)
                for r in got:
                    if self._t and r.t_ns <= self._t[-1]:
                        continue
                    self._t.append(r.t_ns)
                    self._v.append(r.value)
                    self._rails.append(dict(r.rails))
                if until_ns is None or (self._t and self._t[-1] >= until_ns) or time.monotonic() >= deadline:
                    break
                if not got:
                    time.sleep(0.005)  # a source that does not block for its next reading
        except SensorError as exc:
            self._errors.append((self._clock(), f"{source.label} stopped: {exc}"))
            self.source = None
        except Exception as exc:  # a third-party sensor bug must not kill the benchmark
            self._errors.append((self._clock(), f"{source.label} failed: {type(exc).__name__}: {exc}"))
            self.source = None

    def _sample_thermal(self) -> None:
        if not (self.zones or self.freq_files):
            return
        self._th_t.append(self._clock())
        self._temps.append(read_temps_c(self.zones))
        freqs = cpu_freqs_mhz(self.freq_files)
        self._freq.append(sum(freqs.values()) / len(freqs) if freqs else float("nan"))

    def tick(self, final: bool = False) -> None:
        """Take one round of samples: power every tick, temperatures and frequency every `thermal_every`-th tick
        and on the final one (which waits for a meter that reports on its own schedule). The sampling thread
        calls this; tests drive it directly on an injected clock."""
        self._sample_power(FINAL_WAIT_S if final else 0.0, self._stop_ns if final else None)
        if final or self._ticks % self.thermal_every == 0:
            self._sample_thermal()
        self._ticks += 1

    def _loop(self) -> None:
        next_s = time.perf_counter()
        while True:
            last = self._stop.is_set()
            self.tick(final=last)
            self._first.set()
            if last:
                return
            next_s += self.interval_s
            now = time.perf_counter()
            if next_s < now:  # fell behind (a slow meter): carry on from now rather than bursting
                next_s = now
            self._stop.wait(next_s - now)

    def stop(self) -> tuple[PowerTrace | None, ThermalTrace | None]:
        """Stop sampling (idempotent) and return what was recorded (a monitor driven by `tick` has no thread)."""
        if self._stop_ns is None:
            self._stop_ns = self._clock()  # the last sample must come from at or after this moment
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        return self.traces()

    def traces(self) -> tuple[PowerTrace | None, ThermalTrace | None]:
        """What was recorded so far, as traces."""
        power = None
        if self._t or self._errors:
            power = build_trace(self._label, self._kind, self.power_hz, self._t, self._v, self._rails, self._errors)
        thermal = None
        if self._th_t:
            zones = sorted({z for sample in self._temps for z in sample})
            temps = {z: np.asarray([s.get(z, np.nan) for s in self._temps], dtype=np.float64) for z in zones}
            thermal = ThermalTrace(np.asarray(self._th_t, dtype=np.int64), temps,
                                   np.asarray(self._freq, dtype=np.float64))
        return power, thermal
