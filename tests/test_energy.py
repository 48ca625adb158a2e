"""Energy arithmetic on synthetic and recorded series, on an injected clock: exact answers that cannot flake.

No thread and no sleep here: the monitor is driven tick by tick (`Monitor.tick`) while a fake clock advances, and
sources read the signal at the fake clock's time. The real-time end-to-end checks are the smoke tests in
test_power.py and test_benchmark.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fakesys import FakeSysfs

from edgert.measure.bench import energy_stats, thermal_stats
from edgert.devices import sensors as sensors
from edgert.devices.sensors import PowerSource
from edgert.measure.power_sampling import Monitor, PowerTrace, ThermalTrace, build_trace

S = 1_000_000_000  # ns per second


class FakeClock:
    def __init__(self, now_ns: int = 0):
        self.now = now_ns

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * S)


class SignalSource(PowerSource):
    """A meter whose reading is `signal(t_ns)` in mW, timed by the fake clock."""

    label = "signal"

    def __init__(self, signal, clock):
        self.signal, self.clock = signal, clock

    def _read(self):
        return float(self.signal(self.clock())), {}


def sine_mw(t_ns: int) -> float:
    return 2000.0 + 1000.0 * math.sin(2 * math.pi * t_ns / S)


def sine_energy_mj(a_ns: int, b_ns: int) -> float:
    """The exact integral of `sine_mw` over [a, b] in mJ."""
    a, b = a_ns / S, b_ns / S
    return 2000.0 * (b - a) - 1000.0 / (2 * math.pi) * (math.cos(2 * math.pi * b) - math.cos(2 * math.pi * a))


def piecewise_linear_energy(t_ns, p_mw, a_ns: int, b_ns: int) -> float:
    """The integral of the straight lines between samples over [a, b], segment by segment (an independent sum)."""
    total = 0.0
    for t0, t1, p0, p1 in zip(t_ns, t_ns[1:], p_mw, p_mw[1:]):
        lo, hi = max(t0, a_ns), min(t1, b_ns)
        if hi <= lo:
            continue
        at = lambda t: p0 + (p1 - p0) * (t - t0) / (t1 - t0)  # noqa: E731
        total += (at(lo) + at(hi)) / 2 * (hi - lo) / S
    return total


def drive(monitor: Monitor, clock: FakeClock, seconds: float, interval_s: float, jitter_s: float = 0.0, seed=0):
    """Tick the monitor every `interval_s` (plus seeded jitter, as a busy machine would) for `seconds`."""
    rng = np.random.default_rng(seed)
    end = clock.now + round(seconds * S)
    while clock.now < end:
        monitor.tick()
        clock.advance(interval_s + (rng.uniform(0, jitter_s) if jitter_s else 0.0))
    monitor.tick(final=True)
    return monitor.stop()


def test_trapezoid_over_irregular_samples_is_exact_for_piecewise_linear_power():
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.integers(2_000_000, 30_000_000, 200))  # samples 2-30 ms apart
    p = rng.uniform(500.0, 6000.0, t.size)
    rails = [{"VDD_IN": v, "VDD_CPU": v / 3} for v in p]
    trace = build_trace("synthetic", "power", 100.0, list(t), list(p), rails, [])
    truth = piecewise_linear_energy(t, p, t[0], t[-1])
    assert trace.energy_mj[-1] == pytest.approx(truth, rel=1e-12)
    assert np.all(np.diff(trace.energy_mj) > 0)
    assert trace.rail_energy_mj["VDD_CPU"][-1] == pytest.approx(truth / 3, rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_window_ends_are_integrated_exactly_between_samples(seed):
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.integers(1_000_000, 50_000_000, 100))
    p = rng.uniform(0.0, 8000.0, t.size)
    trace = build_trace("synthetic", "power", 100.0, list(t), list(p), [], [])
    for _ in range(20):
        a, b = sorted(rng.integers(t[0], t[-1], 2))  # anywhere, mostly between two samples
        assert trace.energy_between(int(a), int(b)) == pytest.approx(piecewise_linear_energy(t, p, a, b),
                                                                     rel=1e-9, abs=1e-9)
        if b > a:
            assert trace.mean_power_between(int(a), int(b)) == pytest.approx(
                piecewise_linear_energy(t, p, a, b) / ((b - a) / S), rel=1e-9)
    assert trace.energy_between(int(t[0]) - 1, int(t[-1])) is None  # not covered: no guess
    assert trace.energy_between(int(t[0]), int(t[-1]) + 1) is None


def test_monitor_on_an_injected_clock_integrates_a_known_signal():
    clock = FakeClock()
    monitor = Monitor(SignalSource(sine_mw, clock), power_hz=100, thermal=False, clock=clock)
    trace, _ = drive(monitor, clock, 2.0, 0.01, jitter_s=0.004)
    assert trace.samples > 150 and trace.kind == "power"
    window = (S // 4 + 123_457, 7 * S // 4 - 98_765)  # not on sample instants
    assert trace.energy_between(*window) == pytest.approx(sine_energy_mj(*window), rel=1e-3)
    # The trapezoid's error on this signal is tiny; what is asserted is far from any flake.
    assert abs(trace.energy_between(*window) / sine_energy_mj(*window) - 1) < 1e-4
    assert trace.peak_power_between(*window) == pytest.approx(3000.0, rel=1e-3)


def test_counter_unwrapping_on_an_injected_clock(tmp_path, monkeypatch):
    """A RAPL counter that wraps five times: energy is exact at every sample, and windows between samples are the
    counter's straight line."""
    monkeypatch.setenv("EDGERT_SYSFS_ROOT", str(tmp_path))
    fake = FakeSysfs(tmp_path)
    max_range = 1_000_000  # uJ: 1 J, so a 2 W average wraps about every half second
    base = fake.rapl(energy_uj=0, max_range_uj=max_range)
    clock = FakeClock()

    def counter_uj(t_ns: int) -> int:  # what the kernel holds at t: the exact energy so far, wrapped
        return int(round(sine_energy_mj(0, t_ns) * 1000)) % (max_range + 1)

    source = sensors.select("rapl").source
    source.clock = clock
    assert source.kind == "energy"
    monitor = Monitor(source, power_hz=100, thermal=False, clock=clock)
    rng = np.random.default_rng(0)
    raw = []
    while clock.now < 3 * S:
        fake.write(f"{base}/energy_uj", counter_uj(clock.now))
        raw.append(counter_uj(clock.now))
        monitor.tick()
        clock.advance(0.01 + rng.uniform(0, 0.003))
    trace, _ = monitor.stop()
    assert sum(b < a for a, b in zip(raw, raw[1:])) >= 5, "the fixture counter must wrap several times"
    assert np.all(np.diff(trace.energy_mj) >= 0)
    # At each sample the unwrapped counter is the true energy since the first sample (to the uJ it stores).
    truth = np.array([sine_energy_mj(int(trace.t_ns[0]), int(t)) for t in trace.t_ns])
    assert np.max(np.abs(trace.energy_mj - truth)) < 0.002  # mJ: two rounded counter values
    a, b = int(trace.t_ns[10]), int(trace.t_ns[-10])
    assert trace.energy_between(a, b) == pytest.approx(sine_energy_mj(a, b), rel=1e-6)
    # Between samples the counter's power is the interval mean, so a window between samples interpolates it.
    mid = (int(trace.t_ns[20] + trace.t_ns[21]) // 2, int(trace.t_ns[200] + trace.t_ns[201]) // 2)
    assert trace.energy_between(*mid) == pytest.approx(sine_energy_mj(*mid), rel=1e-3)


def step_trace(idle_mw: float, busy_mw: float, step_s: float, end_s: float, interval_s: float) -> PowerTrace:
    t = np.arange(0, round(end_s * S) + 1, round(interval_s * S))
    p = np.where(t < round(step_s * S), idle_mw, busy_mw)
    return build_trace("synthetic", "power", 1 / interval_s, list(t), list(p), [], [])


def test_idle_subtraction_and_energy_per_inference_are_exact():
    trace = step_trace(1000.0, 3000.0, step_s=2.0, end_s=5.0, interval_s=0.01)
    idle, run = (0, round(1.9 * S)), (round(2.1 * S), round(4.9 * S))  # both inside flat stretches
    e, note = energy_stats(trace, run, inferences=700, idle=idle)
    assert note == ""
    assert e.idle_power_mw == pytest.approx(1000.0, rel=1e-12)
    assert e.avg_power_mw == pytest.approx(3000.0, rel=1e-12) and e.peak_power_mw == 3000.0
    assert e.energy_mj == pytest.approx(3000.0 * 2.8, rel=1e-12)
    assert e.net_energy_mj == pytest.approx(2000.0 * 2.8, rel=1e-12)
    assert e.energy_per_inference_mj == pytest.approx(2000.0 * 2.8 / 700, rel=1e-12)
    assert e.gross_energy_per_inference_mj == pytest.approx(3000.0 * 2.8 / 700, rel=1e-12)
    assert e.inferences_per_joule == pytest.approx(700 / 5.6, rel=1e-12)


def test_energy_without_a_covered_idle_baseline_says_so():
    trace = step_trace(1000.0, 3000.0, step_s=2.0, end_s=5.0, interval_s=0.01)
    run = (round(2.1 * S), round(4.9 * S))
    e, note = energy_stats(trace, run, inferences=10, idle=None)
    assert e.idle_power_mw is None and e.net_energy_mj == e.energy_mj and "no idle baseline" in note
    e, note = energy_stats(trace, run, inferences=10, idle=(-S, 0))
    assert e.net_energy_mj == e.energy_mj and "not covered" in note
    e, note = energy_stats(trace, (run[0], 6 * S), inferences=10, idle=None)
    assert e is None and "do not cover the timed runs" in note


def test_energy_counter_and_power_series_agree_on_the_same_signal():
    t = np.arange(0, 3 * S + 1, 10_000_000)
    power = build_trace("p", "power", 100.0, list(t), [sine_mw(int(x)) for x in t], [], [])
    counter = build_trace("c", "energy", 100.0, list(t), [sine_energy_mj(0, int(x)) * 1000 for x in t], [], [])
    window = (S // 2, 5 * S // 2)
    assert counter.energy_between(*window) == pytest.approx(sine_energy_mj(*window), rel=1e-9)
    assert power.energy_between(*window) == pytest.approx(sine_energy_mj(*window), rel=1e-4)
    assert counter.power_mw[1:].min() > 1000 - 1 and counter.power_mw.max() < 3000 + 1  # interval means


def thermal(freqs_mhz, temps_c):
    t = np.arange(len(freqs_mhz), dtype=np.int64) * (S // 4)
    return ThermalTrace(t, {"cpu-thermal": np.asarray(temps_c, dtype=np.float64)},
                        np.asarray(freqs_mhz, dtype=np.float64))


def test_throttling_is_a_sustained_frequency_fall():
    trace = thermal([1800] * 4 + [1200] * 4, [55.0] * 4 + [82.0] * 4)
    t = thermal_stats(trace, (0, 7 * S // 4))
    assert t.throttled and "1800 to 1200 MHz" in t.reason
    assert t.temps_c["cpu-thermal"] == (55.0, 82.0, 82.0)
    assert (t.freq_start_mhz, t.freq_min_mhz, t.freq_end_mhz) == (1800.0, 1200.0, 1200.0)
    steady = thermal_stats(thermal([1800, 1790, 1800, 1795, 1800, 1800, 1790, 1800], [55.0] * 8), (0, 7 * S // 4))
    assert not steady.throttled and steady.reason == ""
    one_dip = thermal_stats(thermal([1800, 1800, 1800, 1200, 1800, 1800, 1800, 1800], [55.0] * 8), (0, 7 * S // 4))
    assert not one_dip.throttled  # a momentary dip is not throttling
    no_freq = thermal_stats(thermal([float("nan")] * 4, [50.0] * 4), (0, S))
    assert no_freq.throttled is False and "cpufreq" in no_freq.reason


def test_thermal_samples_follow_the_injected_clock(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERT_SYSFS_ROOT", str(tmp_path))
    fake = FakeSysfs(tmp_path)
    fake.thermal_zone(0, "cpu-thermal", 55000)
    fake.cpufreq(2, 1_800_000)
    clock = FakeClock()
    monitor = Monitor(None, thermal_hz=4.0, clock=clock)
    for i in range(8):
        if i == 4:
            fake.cpufreq(2, 1_200_000)
            fake.write("/sys/class/thermal/thermal_zone0/temp", 82000)
        monitor.tick()
        clock.advance(0.25)
    _, trace = monitor.stop()
    assert list(trace.t_ns) == [i * S // 4 for i in range(8)]
    assert list(trace.freq_mhz) == [1800.0] * 4 + [1200.0] * 4
    assert thermal_stats(trace, (0, 7 * S // 4)).throttled
