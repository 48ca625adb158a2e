"""`edgert.bench` and `edgert bench`: the timed loop, statistics, energy with an idle baseline, thermal, CLI."""

from __future__ import annotations

import csv
import io
import json
import time

import numpy as np
import pytest
from click.testing import CliRunner
from fakesys import FakeSysfs

import edgert
from edgert.measure.bench import LatencyStats, bench, timed_loop
from edgert.cli import cli
from edgert.errors import BenchError, InputDataError, SensorError


@pytest.fixture
def fake(tmp_path, monkeypatch):
    root = tmp_path / "sysroot"
    monkeypatch.setenv("EDGERT_SYSFS_ROOT", str(root))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.delenv("EDGERT_VCGENCMD", raising=False)
    return FakeSysfs(root)


def on_each_run(model, effect) -> None:
    """Call `effect(n)` before the model's n-th inference in a benchmark (the first is n=1)."""
    prepare, calls = model.prepare, []

    def prepare_with_effect(inputs):
        calls.append(1)
        effect(1)
        run = prepare(inputs)  # the first inference

        def run_with_effect():
            calls.append(1)
            effect(len(calls))
            return run()

        return run_with_effect

    model.prepare = prepare_with_effect


class FakeClock:
    """A clock that only moves when the loop sleeps or a run takes its (scripted) time."""

    def __init__(self):
        self.now = 0

    def __call__(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += round(seconds * 1e9)

    def runner(self, durations_ms):
        it = iter(durations_ms)

        def run():
            self.now += round(next(it) * 1e6)

        return run


def test_latency_stats_agree_with_numpy():
    rng = np.random.default_rng(1)
    samples = rng.lognormal(mean=14.5, sigma=0.3, size=5001).astype(np.int64)  # ns, skewed like real latency
    stats = LatencyStats.from_ns(samples)
    ms = samples / 1e6
    assert stats.count == 5001
    assert stats.p50_ms == pytest.approx(np.median(ms))
    assert (stats.p90_ms, stats.p99_ms) == pytest.approx(tuple(np.percentile(ms, [90, 99])))
    assert (stats.min_ms, stats.max_ms) == (pytest.approx(ms.min()), pytest.approx(ms.max()))
    assert (stats.mean_ms, stats.std_ms) == (pytest.approx(ms.mean()), pytest.approx(ms.std()))
    assert np.array_equal(stats.samples_ms, ms)
    with pytest.raises(BenchError):
        LatencyStats.from_ns([])


def test_fixed_rate_deadline_accounting():
    clock = FakeClock()
    # 10 fps: slots every 100 ms. Frame 1 overruns (missed); frame 3 overruns so far that slot 4 passes (dropped).
    loop = timed_loop(clock.runner([50, 150, 50, 250, 50]), runs=5, duration_s=None, rate_fps=10,
                      clock=clock, sleep=clock.sleep)
    assert [s // 1_000_000 for s in loop.samples_ns] == [50, 150, 50, 250, 50]
    assert [s // 1_000_000 for s in loop.starts_ns] == [0, 100, 250, 300, 550]
    assert (loop.missed, loop.dropped) == (2, 1)
    assert loop.window_ns == (0, 600_000_000)  # through the end of the last frame's slot


def test_fixed_rate_that_keeps_up_misses_nothing():
    clock = FakeClock()
    loop = timed_loop(clock.runner([10] * 30), runs=30, duration_s=None, rate_fps=30, clock=clock,
                      sleep=clock.sleep)
    assert (loop.missed, loop.dropped) == (0, 0)
    assert loop.window_ns[1] == pytest.approx(1e9, abs=1)  # 30 frames at 30 fps take a second


def test_runs_and_duration_are_both_minimums():
    clock = FakeClock()
    assert len(timed_loop(clock.runner([10] * 1000), runs=5, duration_s=None, clock=clock).samples_ns) == 5
    clock = FakeClock()
    assert len(timed_loop(clock.runner([10] * 1000), runs=5, duration_s=0.2, clock=clock).samples_ns) == 20
    clock = FakeClock()
    assert len(timed_loop(clock.runner([10] * 1000), runs=50, duration_s=0.2, clock=clock).samples_ns) == 50
    clock = FakeClock()
    assert len(timed_loop(clock.runner([500]), runs=None, duration_s=0.2, clock=clock).samples_ns) == 1


def test_ctrl_c_keeps_what_finished():
    calls = []

    def run():
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt

    loop = timed_loop(run, runs=100, duration_s=None)
    assert loop.interrupted and len(loop.samples_ns) == 3


def test_bench_a_real_model(int8_tflite, fake):
    result = edgert.bench(int8_tflite, threads=1, runs=40, warmup=3)
    assert result.latency.count == 40 and result.warmup_runs == 3
    assert result.init_ms > 0 and result.first_inference_ms > 0
    assert result.latency.min_ms <= result.latency.p50_ms <= result.latency.p99_ms <= result.latency.max_ms
    assert result.throughput_ips == pytest.approx(40 / result.wall_s)
    assert result.delegation.used == "xnnpack" and result.machine.threads == 1
    assert result.machine.backend.startswith("ai_edge_litert") and result.machine.edgert == edgert.__version__
    assert result.memory.peak_rss_mb >= result.memory.rss_after_load_mb > 0
    assert result.energy is None and result.power.samples == 0 and result.power.t_ns.size == 0
    assert result.power_note.startswith("no power sensor found (tried")
    assert not result.thermal_stats.measured and result.thermal_stats.note.startswith("not measured: no thermal")
    assert result.inputs == "seeded random (seed 0)"
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["latency"]["count"] == 40 and doc["energy"] is None


def test_isolated_rows_report_the_models_own_memory(int8_tflite, float_tflite, fake):
    """A fresh process per row: the same baseline before every load, and a peak that does not grow with the number
    of runs (edgert's own timing buffers are not the model's). In one process, later rows inherit earlier ones."""
    short = bench(int8_tflite, duration_s=0.05, power="none", isolate=True)
    long = bench(int8_tflite, duration_s=1.5, power="none", isolate=True)
    other = bench(float_tflite, runs=20, power="none", isolate=True)
    assert short.memory.isolated and long.memory.isolated
    assert long.latency.count > 10 * short.latency.count
    assert abs(long.memory.model_peak_mb - short.memory.model_peak_mb) < 2.0
    assert long.memory.buffers_mb > short.memory.buffers_mb
    assert abs(other.memory.rss_before_load_mb - short.memory.rss_before_load_mb) < 2.0
    assert 0 < short.memory.model_mb <= short.memory.model_peak_mb
    doc = long.to_dict()["memory"]
    assert doc["isolated"] is True and doc["model_peak_mb"] == round(long.memory.model_peak_mb, 2)


def test_an_isolated_bench_says_what_went_wrong_in_one_line(int8_tflite, tmp_path, fake):
    (tmp_path / "bad.tflite").write_bytes(b"not a model")
    with pytest.raises(edgert.ModelFormatError, match="not a TFLite model"):
        bench(tmp_path / "bad.tflite", runs=2, isolate=True)
    with pytest.raises(BenchError, match="isolate needs the model's path"):
        bench(edgert.load(int8_tflite), runs=2, isolate=True)


def test_bench_energy_with_idle_baseline(int8_tflite, fake):
    """Real time, an INA260 at 1000 mW idle and 3000 mW from the first warm-up run on (set by the run itself).

    A smoke test: what is asserted holds however the OS schedules the sampler. The exact idle subtraction and
    per-inference arithmetic are tested on synthetic traces (test_energy.py)."""
    base = fake.ina260(power_mw=1000.0)
    model = edgert.load(int8_tflite, threads=1)
    on_each_run(model, lambda n: n == 1 and fake.write(f"{base}/power1_input", 3_000_000))
    result = bench(model, duration_s=0.6, idle_s=0.4, power_hz=200)
    e = result.energy
    assert e is not None and not e.estimate and e.sensor.startswith("ina260")
    assert 1000.0 <= e.idle_power_mw <= 3000.0 and 1000.0 <= e.avg_power_mw <= 3000.0
    assert 1000.0 <= e.peak_power_mw <= 3000.0
    assert e.energy_mj > 0 and e.net_energy_mj == pytest.approx(e.energy_mj - e.idle_power_mw * result.wall_s)
    assert e.energy_per_inference_mj == pytest.approx(e.net_energy_mj / result.latency.count)
    assert e.inferences_per_joule == pytest.approx(result.latency.count / (e.net_energy_mj / 1000))
    assert result.init_ms is None  # a loaded Model's load is not timed
    assert result.power.samples >= 2 and result.idle_window_ns[1] <= result.run_window_ns[0]


def test_bench_reads_temperatures_and_frequency(int8_tflite, fake):
    """Real time: the thermal trace comes from the fixture's zones and cpufreq; what throttling is is tested on
    synthetic traces (test_energy.py), since here it would depend on when the sampler runs."""
    fake.cpufreq(2, 1_800_000)
    fake.thermal_zone(0, "cpu-thermal", 55000)
    model = edgert.load(int8_tflite, threads=1)
    result = bench(model, duration_s=0.3, warmup=1)
    t = result.thermal_stats
    assert t.temps_c["cpu-thermal"] == (55.0, 55.0, 55.0) and t.freq_start_mhz == 1800.0
    assert not t.throttled
    assert result.machine.governor == "ondemand" and result.machine.cpu_freq_mhz == pytest.approx(1800.0)
    assert result.thermal.t_ns.size >= 2


def test_sensor_vanishing_mid_bench_is_reported_not_fatal(int8_tflite, fake):
    base = fake.ina260()
    model = edgert.load(int8_tflite, threads=1)

    def unplug(n):
        if n == 30:
            for f in (fake.root / base.lstrip("/")).iterdir():
                f.unlink()

    on_each_run(model, unplug)
    result = bench(model, runs=300, idle_s=0)
    assert result.latency.count == 300 and result.energy is None
    assert "stopped" in result.power_note and "cannot be read" in result.power_note
    assert result.power_error is None  # auto-detected: a note, not a failure of what the user asked


def test_given_inputs_and_wrong_ones(int8_tflite, tmp_path, fake):
    model = edgert.load(int8_tflite)
    x = np.zeros(model.inputs[0].shape, np.float32)
    np.save(tmp_path / "x.npy", x)
    assert bench(model, runs=3, inputs=tmp_path / "x.npy").inputs.endswith("x.npy")
    with pytest.raises(InputDataError, match="expects shape"):
        bench(model, runs=3, inputs=np.zeros((1, 5, 5), np.float32))
    with pytest.raises(InputDataError, match="expects int8"):
        bench(model, runs=3, inputs=np.zeros(model.inputs[0].shape, np.complex64))


@pytest.mark.parametrize("kwargs, message", [
    ({"runs": 0}, "--runs must be at least 1, got 0"),
    ({"duration_s": -1.0}, "--duration must be a positive number"),
    ({"rate_fps": 0.0}, "--rate must be a positive number"),
    ({"rate_fps": float("nan")}, "--rate must be a positive number"),
    ({"warmup": -2}, "--warmup must be 0 or more"),
    ({"power_hz": 0.0}, "--power-hz must be a positive number"),
    ({"idle_s": -0.5}, "--idle-seconds must be 0 or more"),
])
def test_bad_bench_arguments(int8_tflite, kwargs, message):
    with pytest.raises(BenchError, match=message):
        bench(int8_tflite, **kwargs)


def test_unknown_sensor_name(int8_tflite, fake):
    with pytest.raises(SensorError, match="did you mean 'rapl'"):
        bench(int8_tflite, runs=2, power="rpal")


# -- CLI ------------------------------------------------------------------------------------------------------


def invoke(*args):
    return CliRunner().invoke(cli, ["bench", *map(str, args)])


def test_cli_table_with_two_models_and_ratios(int8_tflite, float_tflite, fake):
    out = invoke(float_tflite, int8_tflite, "--runs", 20, "--threads", 1)
    assert out.exit_code == 0, out.output
    assert "p50 ratio" in out.output and "digits.tflite" in out.output and "digits_int8.tflite" in out.output
    row = next(line for line in out.output.splitlines() if line.startswith("digits.tflite "))
    assert row.endswith("1.000")  # the first row is the anchor
    assert "no power sensor found" in out.output


def test_cli_json_and_csv(int8_tflite, fake):
    doc = json.loads(invoke(int8_tflite, "--runs", 10, "--json").output)
    (result,) = doc["results"]
    assert result["latency"]["count"] == 10 and doc["ratios_p50"] == [1.0]
    assert result["machine"]["cpu"] and result["delegation"]["used"] == "xnnpack"
    rows = list(csv.DictReader(io.StringIO(invoke(int8_tflite, "--runs", 10, "--csv",
                                                  "--delegate", "xnnpack", "--delegate", "cpu").output)))
    assert len(rows) == 2 and rows[0]["runs"] == "10" and float(rows[1]["ratio_p50"]) > 0
    assert invoke(int8_tflite, "--json", "--csv").exit_code == 2


def test_cli_fixed_rate(int8_tflite, fake):
    out = invoke(int8_tflite, "--rate", 50, "--runs", 10)
    assert out.exit_code == 0, out.output
    assert "target 50 fps" in out.output and "deadlines missed" in out.output


def test_cli_power_cmd_garbage_still_reports_latency(int8_tflite, fake):
    out = invoke(int8_tflite, "--runs", 5, "--power-cmd", "echo 'meter offline'")
    assert out.exit_code == 1
    assert "p50 ms" in out.output  # the latency table is there
    assert out.output.strip().splitlines()[-1].startswith("Error: power measurement failed (latency reported above)")
    assert "'meter offline', not a power reading" in out.output


def test_cli_power_cmd_energy(int8_tflite, fake):
    out = invoke(int8_tflite, "--duration", 0.5, "--power-cmd", "echo 2.5", "--idle-seconds", 0.3, "--json")
    assert out.exit_code == 0, out.output
    energy = json.loads(out.output)["results"][0]["energy"]
    assert energy["avg_power_mw"] == pytest.approx(2500.0) and energy["idle_power_mw"] == pytest.approx(2500.0)
    assert energy["sensor"] == "command `echo 2.5`"


@pytest.mark.parametrize("args, message", [
    (("--runs", 0), "--runs must be at least 1, got 0"),
    (("--duration", -3), "--duration must be a positive number, got -3"),
    (("--rate", -30), "--rate must be a positive number, got -30"),
    (("--power", "nope"), "unknown power sensor 'nope'"),
    (("--plot", "out.txt"), "use a .png, .svg, .pdf path"),
])
def test_cli_bad_input_is_one_line(int8_tflite, fake, args, message):
    out = invoke(int8_tflite, *args)
    assert out.exit_code == 1 and message in out.output
    assert out.output.count("\n") == 1 and "Traceback" not in out.output


def test_threads_zero_is_the_same_usage_error_in_run_and_bench(int8_tflite):
    outs = [CliRunner().invoke(cli, [command, str(int8_tflite), "--threads", "0"]) for command in ("run", "bench")]
    for out in outs:
        assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
        assert "Invalid value for '--threads': 0 is not in the range x>=1" in out.output
    assert outs[0].output.replace("run", "X") == outs[1].output.replace("bench", "X")


def test_cli_missing_model_and_wrong_input(int8_tflite, tmp_path, fake):
    out = invoke(tmp_path / "nope.tflite")
    assert out.exit_code == 1 and "nope.tflite" in out.output and out.output.count("\n") == 1
    np.save(tmp_path / "bad.npy", np.zeros((3, 3), np.float32))
    out = invoke(int8_tflite, "--input", tmp_path / "bad.npy")
    assert out.exit_code == 1 and "expects shape" in out.output


def test_cli_plot_refuses_to_overwrite(int8_tflite, tmp_path, fake):
    plot = tmp_path / "bench.png"
    plot.write_bytes(b"keep")
    out = invoke(int8_tflite, "--runs", 5, "--plot", plot)
    assert out.exit_code == 1 and "--force" in out.output and plot.read_bytes() == b"keep"
    assert "p50" not in out.output  # refused before measuring anything


def test_cli_plot_with_power_trace(int8_tflite, tmp_path, fake):
    fake.ina260(power_mw=1500)
    plot = tmp_path / "bench.png"
    out = invoke(int8_tflite, "--duration", 0.3, "--idle-seconds", 0.2, "--plot", plot)
    assert out.exit_code == 0, out.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "plot written" in out.output
    assert "energy" in out.output and "mJ/inference above idle" in out.output
    assert not list(tmp_path.glob(".bench.png.*"))  # no temporary left behind


def test_cli_ctrl_c_prints_what_finished(int8_tflite, fake, monkeypatch):
    real_prepare = edgert.Model.prepare

    def prepare(self, inputs):
        run, calls = real_prepare(self, inputs), []  # the first inference

        def interrupting():
            calls.append(1)
            if len(calls) == 19:  # one more warm-up run, then 17 timed runs finish
                raise KeyboardInterrupt
            return run()

        return interrupting

    monkeypatch.setattr(edgert.Model, "prepare", prepare)
    out = invoke(int8_tflite, "--runs", 1000, "--warmup", 2)
    assert out.exit_code == 130
    assert "interrupted" in out.output and "p50 ms" in out.output
    row = next(line for line in out.output.splitlines() if line.startswith("digits_int8.tflite "))
    assert row.split()[4] == "17"  # 2 warm-up runs, then 17 timed before Ctrl-C


def test_cli_sensors_lists_plugins(fake):
    fake.ina260()
    out = CliRunner().invoke(cli, ["sensors", "--json"])
    doc = json.loads(out.output)
    found = {r["name"]: r for r in doc["power_sensors"]}
    assert found["ina2xx"]["usable"] and found["ina2xx"]["found"].startswith("ina260")
    assert not found["rapl"]["usable"] and "powercap" in found["rapl"]["reason"]
    text = CliRunner().invoke(cli, ["sensors"]).output
    assert "ina2xx    found" in text and "only when asked for" in text


def test_sigterm_mid_bench_prints_what_finished(int8_tflite, tmp_path):
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "from edgert.cli import main; main()", "bench", str(int8_tflite),
                             "--duration", "60", "--power", "none"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    line = ""
    while "timing" not in line and time.monotonic() < deadline:  # the timed runs have started
        line = proc.stderr.readline()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "p50 ms" in out and "interrupted" in out
    assert "interrupted: the results above cover what finished" in err
