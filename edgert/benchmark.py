"""`edgert.bench`: latency percentiles, memory, temperature and energy per inference for one model and delegate.

The order of a run: load (timed: `init_ms`), measure the idle power baseline, warm up (the first run is timed on its
own: `first_inference_ms`), then the timed runs, back to back or at a fixed rate. A sampling thread records power,
temperatures and CPU frequency throughout on the same clock as the runs (`time.perf_counter_ns`).
"""

from __future__ import annotations

import math
import os
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from edgert.arrays import load_arrays, match_inputs, random_inputs
from edgert.delegation import DelegationReport
from edgert.devices.machine import MachineInfo, machine_info
from edgert.devices.power import select
from edgert.errors import BenchError
from edgert.model import Inputs, Model
from edgert.power import Monitor, PowerTrace, ThermalTrace

DEFAULT_RUNS = 50
DEFAULT_MIN_DURATION_S = 1.0
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
    """Resident memory of this process in MiB; `peak_rss_mb` is since the model load when the kernel allowed
    resetting the high-water mark (`peak_since_load`), else since the process started."""

    rss_before_load_mb: float
    rss_after_load_mb: float
    rss_after_runs_mb: float
    peak_rss_mb: float
    peak_since_load: bool

    def to_dict(self) -> dict:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items()}


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
    """Temperatures (start, max, end of the timed runs, degrees C) and CPU frequency, with throttling flagged."""

    temps_c: dict[str, tuple[float, float, float]]
    freq_start_mhz: float | None
    freq_min_mhz: float | None
    freq_end_mhz: float | None
    throttled: bool
    reason: str = ""

    def to_dict(self) -> dict:
        return {"temps_c": {k: list(v) for k, v in self.temps_c.items()}, "freq_start_mhz": self.freq_start_mhz,
                "freq_min_mhz": self.freq_min_mhz, "freq_end_mhz": self.freq_end_mhz, "throttled": self.throttled,
                "reason": self.reason}


@dataclass(frozen=True, eq=False)
class BenchResult:
    """Everything one `bench` call measured. `power`/`thermal` keep the raw traces; `energy` is None with the reason
    in `power_note` when no sensor measured the run (no number is ever made up)."""

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
    power: PowerTrace | None = None
    energy: EnergyStats | None = None
    power_note: str = ""
    power_error: str | None = None  # the sensor the user asked for failed (the latency figures still stand)
    thermal: ThermalTrace | None = None
    thermal_stats: ThermalStats | None = None
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
            "power": None if self.power is None else self.power.to_dict(),
            "energy": None if self.energy is None else self.energy.to_dict(),
            "power_note": self.power_note, "power_error": self.power_error,
            "thermal": None if self.thermal_stats is None else self.thermal_stats.to_dict(),
            "interrupted": self.interrupted,
        }


# -- the timed loop -------------------------------------------------------------------------------------------


@dataclass
class LoopResult:
    samples_ns: array  # of int64: 8 bytes a run, so a 200,000-run soak holds 3 MB, not a list of Python ints
    starts_ns: array
    window_ns: tuple[int, int]
    missed: int = 0
    dropped: int = 0
    interrupted: bool = False


def timed_loop(run: Callable[[], object], *, runs: int | None, duration_s: float | None,
               rate_fps: float | None = None, clock: Callable[[], int] = time.perf_counter_ns,
               sleep: Callable[[float], None] = time.sleep) -> LoopResult:
    """Call `run` until at least `runs` calls and `duration_s` seconds are done (either may be None).

    With `rate_fps`, calls start on a fixed grid (`1/rate_fps` apart) as a camera would deliver frames. Ctrl-C
    ends the loop early with `interrupted` set; what finished is kept.
    """
    period_ns = 1e9 / rate_fps if rate_fps else 0.0
    min_ns = duration_s * 1e9 if duration_s else 0.0
    samples, starts = array("q"), array("q")
    missed = dropped = 0
    slot = 0
    interrupted = False
    t0 = clock()
    try:
        while (runs is not None and len(samples) < runs) or (clock() - t0 < min_ns) or not samples:
            if period_ns:
                scheduled = t0 + slot * period_ns
                now = clock()
                if now < scheduled:
                    sleep((scheduled - now) / 1e9)
                elif now - scheduled >= period_ns:
                    behind = int((now - scheduled) // period_ns)
                    dropped += behind
                    slot += behind
                    scheduled = t0 + slot * period_ns
                start = clock()
                run()
                end = clock()
                if end > scheduled + period_ns:
                    missed += 1
                slot += 1
            else:
                start = clock()
                run()
                end = clock()
            samples.append(end - start)
            starts.append(start)
        if period_ns:  # the rest of the last frame's slot is part of sustained use (and of its energy)
            rest = t0 + slot * period_ns - clock()
            if rest > 0:
                sleep(rest / 1e9)
    except KeyboardInterrupt:
        interrupted = True
    end_ns = clock()
    return LoopResult(samples, starts, (t0, end_ns), missed, dropped, interrupted)


# -- inputs, memory -------------------------------------------------------------------------------------------


def _status_mb() -> dict[str, float]:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0]) / 1024.0  # kB -> MiB
    except OSError:
        pass
    if "VmHWM" not in out:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["VmHWM"] = peak / (1024.0 * 1024.0 if os.uname().sysname == "Darwin" else 1024.0)
        out.setdefault("VmRSS", out["VmHWM"])
    return out


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark for this process (Linux >= 4.0), so the peak is per model."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


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


def thermal_stats(trace: ThermalTrace, run: tuple[int, int]) -> ThermalStats | None:
    if trace.t_ns.size == 0:
        return None
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


# -- the benchmark --------------------------------------------------------------------------------------------


def _check(runs: int | None, duration_s: float | None, rate_fps: float | None, warmup: int, power_hz: float,
           idle_s: float) -> None:
    if runs is not None and runs < 1:
        raise BenchError(f"--runs must be at least 1, got {runs}")
    for name, value in (("--duration", duration_s), ("--rate", rate_fps)):
        if value is not None and (not math.isfinite(value) or value <= 0):
            raise BenchError(f"{name} must be a positive number, got {value:g}")
    if warmup < 0:
        raise BenchError(f"--warmup must be 0 or more, got {warmup}")
    if not math.isfinite(power_hz) or power_hz <= 0:
        raise BenchError(f"--power-hz must be a positive number, got {power_hz:g}")
    if not math.isfinite(idle_s) or idle_s < 0:
        raise BenchError(f"--idle-seconds must be 0 or more, got {idle_s:g}")


def bench(model: Model | str | os.PathLike, *, threads: int | None = None,
          delegate: str | Sequence[str] | None = None, delegate_options: Sequence[str] | Mapping[str, str] = (),
          delegate_lib: str | None = None, strict: bool = False, warmup: int = 5, runs: int | None = None,
          duration_s: float | None = None, rate_fps: float | None = None,
          inputs: Inputs | str | os.PathLike | None = None, seed: int = 0, power: str | None = "auto", power_cmd: str | None = None,
          power_options: Mapping[str, str] | None = None, power_hz: float = 100.0, idle_s: float = 2.0,
          thermal: bool = True, progress: Callable[[str], None] | None = None) -> BenchResult:
    """Benchmark one model with one delegate choice.

    Args:
        model: a loaded `Model` (its load is then not timed) or a `.tflite` path, loaded here with `threads`,
            `delegate`, `delegate_options`, `delegate_lib` and `strict` exactly as `edgert.load` does.
        warmup: untimed runs first. The first inference is always separate and reported as `first_inference_ms`
            (it includes checking and converting the inputs, once); timed runs reuse the converted inputs.
        runs, duration_s: at least `runs` timed runs and at least `duration_s` seconds (MLPerf style). With
            neither, 50 runs and 1 s. With only `runs`, exactly that many.
        rate_fps: start runs on a fixed grid, as frames from a 30 fps camera would arrive; missed deadlines and
            dropped frames are counted, and latency and energy describe that sustained use.
        inputs: arrays for `Model.run`, or a .npy/.npz file of them; by default seeded random inputs in the
            model's own dtypes.
        power: `auto`, `none`, or sensor names in priority order (`edgert sensors`); `power_cmd` an external meter
            command that prints watts.
        power_hz: sampling rate, capped by the meter's own update interval.
        idle_s: seconds of idle power measured before the warm-up, subtracted from the run's energy.
        progress: called with a short line at each stage (the CLI prints them to stderr).

    Raises:
        BenchError: bad run count, duration, rate, warm-up, sampling rate or idle time.
        InputDataError: `inputs` do not fit the model. SensorError: an unknown sensor name.
        Any error of `edgert.load` for a path.
    """
    _check(runs, duration_s, rate_fps, warmup, power_hz, idle_s)
    say = progress or (lambda _line: None)
    if runs is None and duration_s is None:
        runs, duration_s = DEFAULT_RUNS, DEFAULT_MIN_DURATION_S

    before = _status_mb()["VmRSS"]
    peak_reset = _reset_peak_rss()
    init_ms = None
    if not isinstance(model, Model):
        started = time.perf_counter_ns()
        model = Model(model, threads=threads, delegate=delegate, delegate_options=delegate_options,
                      delegate_lib=delegate_lib, strict=strict)
        init_ms = (time.perf_counter_ns() - started) / 1e6
    after_load = _status_mb()["VmRSS"]
    if inputs is None:
        arrays: Inputs = random_inputs(model.inputs, seed)
        inputs_text = f"seeded random (seed {seed})"
    elif isinstance(inputs, (str, os.PathLike)):
        arrays = match_inputs(load_arrays(inputs), [s.name for s in model.inputs], inputs)
        inputs_text = str(inputs)
    else:
        arrays, inputs_text = inputs, "given arrays"

    selection = select(power, power_cmd, power_options)
    power_error = selection.reason if selection.requested and selection.source is None else None
    monitor = Monitor(selection.source, power_hz=power_hz, thermal=thermal)
    idle_window = None
    first_ms = float("nan")
    try:
        monitor.start()
        if selection.source is not None and idle_s > 0:
            say(f"measuring idle power for {idle_s:g} s ({selection.source.label})")
            idle_start = time.perf_counter_ns()
            time.sleep(idle_s)
            idle_window = (idle_start, time.perf_counter_ns())

        say(f"warming up ({warmup} run(s))")
        started = time.perf_counter_ns()
        run_once = model.prepare(arrays)  # checks the inputs and runs the model once: the first inference
        first_ms = (time.perf_counter_ns() - started) / 1e6
        for _ in range(max(0, warmup - 1)):
            run_once()
        what = (f"{runs} run(s)" if runs else "") + (" and " if runs and duration_s else "") + (
            f"{duration_s:g} s" if duration_s else "")
        say(f"timing {what}" + (f" at {rate_fps:g} fps" if rate_fps else ""))
        loop = timed_loop(run_once, runs=runs, duration_s=duration_s, rate_fps=rate_fps)
    finally:
        power_trace, thermal_trace = monitor.stop()
        if selection.source is not None:
            selection.source.close()
    if not loop.samples_ns:
        raise KeyboardInterrupt
    latency = LatencyStats.from_ns(loop.samples_ns)
    wall_s = (loop.window_ns[1] - loop.window_ns[0]) / 1e9
    rate = None
    if rate_fps:
        rate = RateStats(rate_fps, latency.count, loop.missed, loop.dropped,
                         latency.count / wall_s if wall_s > 0 else 0.0)
    status = _status_mb()
    memory = MemoryStats(before, after_load, status["VmRSS"], status["VmHWM"], peak_reset)

    energy, note = None, selection.reason
    if power_trace is not None:
        energy, note = energy_stats(power_trace, loop.window_ns, latency.count, idle_window)
        if power_trace.errors and energy is not None:
            note = "; ".join(m for _, m in power_trace.errors)
    if power_error is None and selection.requested and power_trace is not None and energy is None:
        power_error = note
    return BenchResult(
        model=model.path, delegation=model.delegation, machine=machine_info(str(model.backend), model.threads),
        inputs=inputs_text, init_ms=init_ms, first_inference_ms=first_ms, warmup_runs=warmup, latency=latency,
        wall_s=wall_s, memory=memory, run_starts_ns=np.asarray(loop.starts_ns, dtype=np.int64),
        run_window_ns=loop.window_ns, idle_window_ns=idle_window, rate=rate, power=power_trace, energy=energy,
        power_note=note, power_error=power_error, thermal=thermal_trace,
        thermal_stats=None if thermal_trace is None else thermal_stats(thermal_trace, loop.window_ns),
        interrupted=loop.interrupted)


__all__ = ["BenchResult", "EnergyStats", "LatencyStats", "MemoryStats", "PowerTrace", "RateStats", "ThermalStats",
           "bench", "timed_loop"]
