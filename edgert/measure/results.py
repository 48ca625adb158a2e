"""What `edgert.bench` returns: typed, frozen results (latency, rate, memory, energy, thermal) and the analyses
that make energy and thermal figures from the sampled traces."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgert.runtime.delegation import DelegationReport
from edgert.devices.machine import MachineInfo
from edgert.errors import BenchError
from edgert.measure.power_sampling import PowerTrace, ThermalTrace, build_trace

THROTTLE_DROP = 0.10  # a sustained fall of the CPU frequency by more than this during the run is flagged


@dataclass(frozen=True, eq=False)
class LatencyStats:
    """Latency of the timed runs in milliseconds; `samples_ms` keeps every run in order."""

    samples_ms: np.ndarray
    count: int
    min_ms: float
    mean_ms: float
    std_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_ns(cls, samples_ns: Sequence[int] | np.ndarray) -> LatencyStats:
        ms = np.array(samples_ns, dtype=np.float64)
        ms /= 1e6  # in place: a 200,000-run soak makes one array here, not two
        if ms.size == 0:
            raise BenchError("no timed run finished; nothing to report")
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(ms, int(ms.size), float(ms.min()), float(ms.mean()), float(ms.std()), float(p50), float(p90),
                   float(p99), float(ms.max()))

    def to_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items() if k != "samples_ms"}


@dataclass(frozen=True)
class RateStats:
    """Fixed-rate mode: frames start on a `1/target_fps` grid; a frame that ends after its slot misses its deadline,
    and grid slots that pass while an earlier frame still runs are dropped (never run late in a burst)."""

    target_fps: float
    frames: int
    missed_deadlines: int
    dropped_frames: int
    achieved_fps: float

    @property
    def missed_fraction(self) -> float:
        return self.missed_deadlines / self.frames if self.frames else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "missed_fraction": round(self.missed_fraction, 4)}


@dataclass(frozen=True)
class MemoryStats:
    """Resident memory in MiB. `peak_rss_mb` is the process's peak since the model load when the kernel allowed
    resetting the high-water mark (`peak_since_load`), else since the process started; it is read as the timed
    runs end, before edgert computes anything from them.

    The model's own footprint is `model_mb` (what loading it added) and `model_peak_mb` (the peak above the
    baseline before the load, less `buffers_mb`, edgert's own per-run timing buffers). `isolated`: the row ran in a
    fresh process of its own, so no earlier row's memory is in its baseline.
    """

    rss_before_load_mb: float
    rss_after_load_mb: float
    rss_after_runs_mb: float
    peak_rss_mb: float
    peak_since_load: bool
    buffers_mb: float = 0.0
    isolated: bool = False

    @property
    def model_mb(self) -> float:
        return max(0.0, self.rss_after_load_mb - self.rss_before_load_mb)

    @property
    def model_peak_mb(self) -> float:
        return max(self.model_mb, self.peak_rss_mb - self.rss_before_load_mb - self.buffers_mb)

    def to_dict(self) -> dict:
        d = {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items()}
        return {**d, "model_mb": round(self.model_mb, 2), "model_peak_mb": round(self.model_peak_mb, 2)}


@dataclass(frozen=True)
class EnergyStats:
    """Power and energy over the timed runs, from a real sensor.

    `energy_per_inference_mj` has the idle baseline taken off (what the inferences cost on top of the idle
    machine); `gross_energy_per_inference_mj` is everything the sensor saw divided by the runs. Without an idle
    measurement the two are the same and `idle_power_mw` is None.
    """

    sensor: str
    kind: str
    sample_hz: float
    samples: int
    idle_power_mw: float | None
    avg_power_mw: float
    peak_power_mw: float
    energy_mj: float
    net_energy_mj: float
    inferences: int
    rail_avg_power_mw: dict[str, float] = field(default_factory=dict)
    estimate: bool = False  # always False here: edgert reports measured energy only

    @property
    def energy_per_inference_mj(self) -> float:
        return self.net_energy_mj / self.inferences

    @property
    def gross_energy_per_inference_mj(self) -> float:
        return self.energy_mj / self.inferences

    @property
    def inferences_per_joule(self) -> float | None:
        return self.inferences / (self.net_energy_mj / 1000.0) if self.net_energy_mj > 0 else None

    def to_dict(self) -> dict:
        out = {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}
        out["rail_avg_power_mw"] = {k: round(v, 3) for k, v in self.rail_avg_power_mw.items()}
        out["energy_per_inference_mj"] = round(self.energy_per_inference_mj, 6)
        out["gross_energy_per_inference_mj"] = round(self.gross_energy_per_inference_mj, 6)
        ipj = self.inferences_per_joule
        out["inferences_per_joule"] = None if ipj is None else round(ipj, 2)
        return out


@dataclass(frozen=True)
class ThermalStats:
    """Temperatures (start, max, end of the timed runs, degrees C) and CPU frequency, with throttling flagged.

    Always present: without thermal zones or cpufreq, `measured` is False and `note` says why (`reason` is why a run
    counts as throttled)."""

    temps_c: dict[str, tuple[float, float, float]]
    freq_start_mhz: float | None
    freq_min_mhz: float | None
    freq_end_mhz: float | None
    throttled: bool
    reason: str = ""
    measured: bool = True
    note: str = ""

    @classmethod
    def not_measured(cls, why: str) -> ThermalStats:
        return cls({}, None, None, None, False, "", measured=False, note=f"not measured: {why}")

    def to_dict(self) -> dict:
        return {"temps_c": {k: list(v) for k, v in self.temps_c.items()}, "freq_start_mhz": self.freq_start_mhz,
                "freq_min_mhz": self.freq_min_mhz, "freq_end_mhz": self.freq_end_mhz, "throttled": self.throttled,
                "reason": self.reason, "measured": self.measured, "note": self.note}


@dataclass(frozen=True, eq=False)
class BenchResult:
    """Everything one `bench` call measured. `power`/`thermal` keep the raw traces (empty when nothing was sampled,
    with the reason in `power_note` and `thermal_stats.note`); `energy` is None with the reason in `power_note` when
    no sensor measured the run (no number is ever made up)."""

    model: str
    delegation: DelegationReport
    machine: MachineInfo
    inputs: str
    init_ms: float | None
    first_inference_ms: float
    warmup_runs: int
    latency: LatencyStats
    wall_s: float
    memory: MemoryStats
    run_starts_ns: np.ndarray
    run_window_ns: tuple[int, int]
    idle_window_ns: tuple[int, int] | None = None
    rate: RateStats | None = None
    power: PowerTrace = field(default_factory=lambda: empty_power_trace())
    energy: EnergyStats | None = None
    power_note: str = ""
    power_error: str | None = None  # the sensor the user asked for failed (the latency figures still stand)
    thermal: ThermalTrace = field(default_factory=lambda: empty_thermal_trace())
    thermal_stats: ThermalStats = field(default_factory=lambda: ThermalStats.not_measured("no thermal sampling"))
    interrupted: bool = False

    @property
    def throughput_ips(self) -> float:
        """Inferences per second over the timed window (in fixed-rate mode, the achieved frame rate)."""
        return self.latency.count / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def delegate(self) -> str:
        """The delegate that ran it; `gpu->xnnpack` when what was asked for fell back."""
        d = self.delegation
        return f"{','.join(d.requested)}->{d.used}" if d.fallback else d.used

    @property
    def label(self) -> str:
        return f"{Path(self.model).name} [{self.delegate}]"

    def ratio_to(self, anchor: BenchResult) -> float:
        """p50 latency relative to `anchor` (1.0 = as fast; below 1 = faster)."""
        return self.latency.p50_ms / anchor.latency.p50_ms

    def to_dict(self) -> dict:
        return {
            "model": self.model, "delegation": self.delegation.to_dict(), "machine": self.machine.to_dict(),
            "inputs": self.inputs, "init_ms": None if self.init_ms is None else round(self.init_ms, 3),
            "first_inference_ms": round(self.first_inference_ms, 3), "warmup_runs": self.warmup_runs,
            "latency": self.latency.to_dict(), "throughput_ips": round(self.throughput_ips, 3),
            "wall_s": round(self.wall_s, 4), "memory": self.memory.to_dict(),
            "rate": None if self.rate is None else self.rate.to_dict(),
            "power": self.power.to_dict() if self.power.samples else None,
            "energy": None if self.energy is None else self.energy.to_dict(),
            "power_note": self.power_note, "power_error": self.power_error,
            "thermal": self.thermal_stats.to_dict(),
            "interrupted": self.interrupted,
        }


# -- analysis -------------------------------------------------------------------------------------------------


def energy_stats(trace: PowerTrace, run: tuple[int, int], inferences: int,
                 idle: tuple[int, int] | None) -> tuple[EnergyStats | None, str]:
    """Energy over the run window, with the idle baseline subtracted when measured; or None and why not."""
    if trace.samples < 2:
        why = trace.errors[0][1] if trace.errors else "fewer than two power samples"
        return None, f"no energy: {why}"
    energy = trace.energy_between(*run)
    if energy is None:
        why = trace.errors[0][1] if trace.errors else "the samples do not cover the timed runs"
        return None, f"no energy for the timed runs: {why}"
    run_s = (run[1] - run[0]) / 1e9
    idle_mw = trace.mean_power_between(*idle) if idle is not None else None
    note = "" if idle_mw is not None else "no idle baseline: energy per inference includes the idle draw"
    if idle is not None and idle_mw is None:
        note = "the idle baseline was not covered by the samples: energy per inference includes the idle draw"
    net = energy - (idle_mw or 0.0) * run_s
    peak = trace.peak_power_between(*run)
    rails = {name: trace.mean_power_between(*run, rail=name) for name in trace.rail_energy_mj}
    return EnergyStats(
        sensor=trace.source, kind=trace.kind, sample_hz=round(trace.sample_hz, 2), samples=trace.samples,
        idle_power_mw=idle_mw, avg_power_mw=energy / run_s if run_s > 0 else 0.0,
        peak_power_mw=peak if peak is not None else energy / run_s, energy_mj=energy, net_energy_mj=net,
        inferences=inferences, rail_avg_power_mw={k: v for k, v in rails.items() if v is not None}), note


def empty_power_trace() -> PowerTrace:
    """No power measured: a trace without samples (`power_note` says why)."""
    return build_trace("", "power", 0.0, [], [], [], [])


def empty_thermal_trace() -> ThermalTrace:
    return ThermalTrace(np.zeros(0, np.int64), {}, np.zeros(0))


def thermal_stats(trace: ThermalTrace, run: tuple[int, int]) -> ThermalStats:
    if trace.t_ns.size == 0:
        return ThermalStats.not_measured("no thermal zone or cpufreq found (/sys/class/thermal, "
                                         "/sys/devices/system/cpu/cpu*/cpufreq)")
    # From the last sample at or before the start to the first at or after the end (stop() takes one last sample).
    first = max(0, int(np.searchsorted(trace.t_ns, run[0], "right")) - 1)
    last = min(trace.t_ns.size - 1, int(np.searchsorted(trace.t_ns, run[1], "left")))
    inside = np.zeros(trace.t_ns.size, dtype=bool)
    inside[first:last + 1] = True
    temps = {}
    for zone, values in trace.temps_c.items():
        v = values[inside]
        v = v[~np.isnan(v)]
        if v.size:
            temps[zone] = (float(v[0]), float(v.max()), float(v[-1]))
    freq = trace.freq_mhz[inside]
    freq = freq[~np.isnan(freq)]
    if freq.size == 0:
        return ThermalStats(temps, None, None, None, False, "no CPU frequency (cpufreq) to watch")
    quarter = max(1, freq.size // 4)
    early, late = float(freq[:quarter].max()), float(freq[-quarter:].mean())
    throttled = freq.size >= 4 and late < (1.0 - THROTTLE_DROP) * early
    reason = (f"CPU frequency fell from {early:.0f} to {late:.0f} MHz ({(1 - late / early):.0%}) during the run"
              if throttled else "")
    return ThermalStats(temps, float(freq[0]), float(freq.min()), float(freq[-1]), throttled, reason)
