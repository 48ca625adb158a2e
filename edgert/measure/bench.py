"""`edgert.bench`: latency percentiles, memory, temperature and energy per inference for one model and delegate.

The order of a run: load (timed: `init_ms`), measure the idle power baseline, warm up (the first run is timed on its
own: `first_inference_ms`), then the timed runs, back to back or at a fixed rate. A sampling thread records power,
temperatures and CPU frequency throughout on the same clock as the runs (`time.perf_counter_ns`). With `isolate`,
all of it happens in a fresh process, so a row's memory is its own.
"""

from __future__ import annotations

import math
import os
import time
from array import array
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from edgert.runtime.arrays import load_arrays, match_inputs, random_inputs, to_model_layout
from edgert.measure.results import (
    BenchResult,
    EnergyStats,
    LatencyStats,
    MemoryStats,
    RateStats,
    ThermalStats,
    empty_power_trace,
    empty_thermal_trace,
    energy_stats,
    thermal_stats,
)
from edgert.devices.machine import machine_info
from edgert.devices.sensors import select
from edgert.errors import BenchError
from edgert.runtime.model import Inputs, Model
from edgert.measure.power_sampling import Monitor, PowerTrace

DEFAULT_RUNS = 50
DEFAULT_MIN_DURATION_S = 1.0


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
          inputs: Inputs | str | os.PathLike | None = None, seed: int = 0, power: str | None = "auto",
          power_cmd: str | None = None,
          power_options: Mapping[str, str] | None = None, power_hz: float = 100.0, idle_s: float = 2.0,
          thermal: bool = True, progress: Callable[[str], None] | None = None, isolate: bool = False) -> BenchResult:
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
        isolate: measure in a fresh process of its own (`model` must be a path), so that the memory figures hold
            this model only, not what earlier benchmarks in this process left behind.

    Raises:
        BenchError: bad run count, duration, rate, warm-up, sampling rate or idle time.
        InputDataError: `inputs` do not fit the model. SensorError: an unknown sensor name.
        Any error of `edgert.load` for a path.
    """
    _check(runs, duration_s, rate_fps, warmup, power_hz, idle_s)
    options = dict(threads=threads, delegate=delegate, delegate_options=delegate_options, delegate_lib=delegate_lib,
                   strict=strict, warmup=warmup, runs=runs, duration_s=duration_s, rate_fps=rate_fps, inputs=inputs,
                   seed=seed, power=power, power_cmd=power_cmd, power_options=power_options, power_hz=power_hz,
                   idle_s=idle_s, thermal=thermal)
    if isolate:
        if isinstance(model, Model):
            raise BenchError("isolate needs the model's path: a loaded Model lives in this process")
        from edgert.measure.isolation import run_isolated

        return run_isolated(_measure, (os.fspath(model),), {**options, "isolated": True}, progress)
    return _measure(model, **options, progress=progress)


def _measure(model, *, threads, delegate, delegate_options, delegate_lib, strict, warmup, runs, duration_s, rate_fps,
             inputs, seed, power, power_cmd, power_options, power_hz, idle_s, thermal, progress=None,
             isolated=False) -> BenchResult:
    say = progress or (lambda _line: None)
    if runs is None and duration_s is None:
        runs, duration_s = DEFAULT_RUNS, DEFAULT_MIN_DURATION_S

    if not isinstance(model, Model):
        from edgert.runtime.backend import get_backend

        get_backend()  # the interpreter library is the runtime's, not the model's: loaded before the baseline
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
        arrays, moved = to_model_layout(match_inputs(load_arrays(inputs), model.inputs, inputs), model)
        inputs_text = str(inputs) + (" (transposed from the source's channel-first layout)" if moved else "")
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
    status = _status_mb()  # before anything is computed from the runs: their figures are edgert's, not the model's
    buffers_mb = (loop.samples_ns.buffer_info()[1] * loop.samples_ns.itemsize
                  + loop.starts_ns.buffer_info()[1] * loop.starts_ns.itemsize) / 2**20
    latency = LatencyStats.from_ns(loop.samples_ns)
    wall_s = (loop.window_ns[1] - loop.window_ns[0]) / 1e9
    rate = None
    if rate_fps:
        rate = RateStats(rate_fps, latency.count, loop.missed, loop.dropped,
                         latency.count / wall_s if wall_s > 0 else 0.0)
    memory = MemoryStats(before, after_load, status["VmRSS"], status["VmHWM"], peak_reset, buffers_mb, isolated)

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
        run_window_ns=loop.window_ns, idle_window_ns=idle_window, rate=rate,
        power=power_trace if power_trace is not None else empty_power_trace(), energy=energy,
        power_note=note, power_error=power_error,
        thermal=thermal_trace if thermal_trace is not None else empty_thermal_trace(),
        thermal_stats=(thermal_stats(thermal_trace or empty_thermal_trace(), loop.window_ns) if thermal
                       else ThermalStats.not_measured("thermal sampling was off (thermal=False)")),
        interrupted=loop.interrupted)


__all__ = ["BenchResult", "EnergyStats", "LatencyStats", "MemoryStats", "PowerTrace", "RateStats", "ThermalStats",
           "bench", "timed_loop"]
