"""Power sensor plugins on fixture sysfs trees, the sampling monitor, and energy integration against known answers."""

from __future__ import annotations

import os
import stat
import sys
import threading
import time

import numpy as np
import pytest
from fakesys import Driver, FakeSysfs

from edgert.devices import sensors as sensors
from edgert.devices.command import parse_power_line
from edgert.devices.pmic import parse_pmic_adc
from edgert.errors import SensorError
from edgert.measure.power_sampling import Monitor, build_trace

# 120 ms steps over ~1.2 s: power that a board really swings through between idle and busy.
STEPS = [(0.12, 1800.0), (0.12, 4200.0), (0.12, 2500.0), (0.12, 6100.0), (0.12, 3000.0), (0.12, 900.0),
         (0.12, 5200.0), (0.12, 2200.0), (0.12, 4700.0), (0.12, 1500.0)]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERT_SYSFS_ROOT", str(tmp_path))
    monkeypatch.delenv("EDGERT_VCGENCMD", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no vcgencmd here
    return FakeSysfs(tmp_path)


def measure(source, driver: Driver, hz: float = 100.0):
    """Sample in real time while the driver plays its steps. The exact arithmetic is tested on an injected clock
    (test_energy.py); here only what cannot depend on thread scheduling is asserted (`smoke`)."""
    monitor = Monitor(source, power_hz=hz, thermal=False).start()
    driver.start()
    driver.done.wait(30)
    trace, _ = monitor.stop()
    source.close()
    return trace


def smoke(trace, before_mw: float) -> None:
    """Samples arrived, energy is positive and never decreases, and every reading lies in the driven range (the
    steps, or the value before the driver started)."""
    levels = [mw for _, mw in STEPS] + [before_mw]
    assert trace.samples >= 2 and not trace.errors
    assert trace.energy_mj[-1] > 0 and np.all(np.diff(trace.energy_mj) >= 0)
    assert min(levels) - 1e-6 <= trace.power_mw.min() and trace.power_mw.max() <= max(levels) + 1e-6


def test_ina260_energy_matches_the_known_answer(fake):
    base = fake.ina260(n=7)  # the hwmon number is not the point: the name file is
    fake.hwmon(2, "k10temp", temp1_input=40000)
    sel = sensors.select("auto")
    assert sel.source is not None and sel.source.label.startswith("ina260")
    assert sel.source.min_interval_s == pytest.approx(0.002)
    driver = Driver(lambda mw: fake.write(f"{base}/power1_input", int(mw * 1000)), STEPS)
    trace = measure(sel.source, driver)
    assert trace.kind == "power"
    smoke(trace, before_mw=1000.0)


def test_ina219_power_from_bus_voltage_and_current(fake):
    base = fake.ina219_without_power()
    source = sensors.get("ina2xx").find({})[0]
    assert source.read().value == pytest.approx(5000 * 200 / 1000)  # mV x mA -> mW
    driver = Driver(lambda mw: fake.write(f"{base}/curr1_input", int(mw / 5.0)), STEPS)
    smoke(measure(source, driver), before_mw=1000.0)


def test_ina3221_jetson_rails_total_is_vdd_in(fake):
    base = fake.ina3221_jetson(n=4)
    fake.write(f"{base}/in3_enable", 0)  # a disabled channel is left out
    sel = sensors.select("auto")
    source = sel.source
    assert "VDD_IN" in source.label and "total = VDD_IN" in source.label and "VDD_SOC" not in source.label
    reading = source.read()
    assert reading.value == pytest.approx(5000.0) and reading.rails["VDD_CPU_GPU_CV"] == pytest.approx(1500.0)
    driver = Driver(lambda mw: fake.write(f"{base}/curr1_input", int(mw / 5.0)), STEPS)
    trace = measure(source, driver)
    smoke(trace, before_mw=5000.0)
    assert set(trace.rail_energy_mj) == {"VDD_IN", "VDD_CPU_GPU_CV"}
    mid = (trace.t_ns[0] + 10_000_000, trace.t_ns[-1] - 10_000_000)
    assert trace.mean_power_between(*mid, rail="VDD_CPU_GPU_CV") == pytest.approx(1500.0)
    with pytest.raises(SensorError, match="no rail 'VDD_GPU'.*VDD_IN, VDD_CPU_GPU_CV"):
        sensors.get("ina3221").find({"rail": "VDD_GPU"})
    assert sensors.get("ina3221").find({"rail": "VDD_CPU_GPU_CV"})[0].read().value == pytest.approx(1500.0)


def test_ina3221_without_vdd_in_sums_rails(fake):
    base = fake.ina3221_jetson()
    fake.write(f"{base}/in1_label", "VDD_GPU_SOC")
    source = sensors.get("ina3221").find({})[0]
    assert "sum of rails" in source.label
    assert source.read().value == pytest.approx(5000 + 1500 + 1000)


def test_rapl_counter_wrapping_mid_run(fake):
    """Real time, a counter thread wrapping about once a second: the unwrapped energy is positive and monotone and
    its mean power lies in the driven range. (The exact unwrapping is tested on an injected clock.)"""
    max_range = 3_000_000  # uJ
    start_uj = max_range - 400_000
    base = fake.rapl(energy_uj=start_uj, max_range_uj=max_range)
    changes = [(time.perf_counter_ns(), STEPS[0][1])]  # (when, mW): the CPU's true power, a step signal
    stop = threading.Event()
    wraps = []

    def true_energy_mj(at_ns: int) -> float:
        ends = [t for t, _ in changes[1:]] + [at_ns]
        return sum(mw * (min(b, at_ns) - a) / 1e9 for (a, mw), b in zip(changes, ends) if min(b, at_ns) > a)

    def counter():  # the kernel's counter: the exact energy so far, refreshed every millisecond, wrapping
        last_raw = start_uj
        while not stop.is_set():
            time.sleep(0.001)
            raw = int(start_uj + true_energy_mj(time.perf_counter_ns()) * 1000) % (max_range + 1)
            if raw < last_raw:
                wraps.append(raw)
            last_raw = raw
            fake.write(f"{base}/energy_uj", raw)

    thread = threading.Thread(target=counter, daemon=True)
    thread.start()
    source = sensors.select("rapl").source
    assert source.kind == "energy" and "package-0" in source.label and "core" not in source.label
    driver = Driver(lambda mw: changes.append((time.perf_counter_ns(), mw)), STEPS)
    trace = measure(source, driver)
    stop.set()
    thread.join()
    assert wraps, "the fixture counter must wrap during the run"
    assert trace.samples >= 2 and not trace.errors
    assert trace.energy_mj[-1] > 0 and np.all(np.diff(trace.energy_mj) >= 0)
    mean_mw = trace.energy_mj[-1] / ((trace.t_ns[-1] - trace.t_ns[0]) / 1e9)
    assert min(mw for _, mw in STEPS) <= mean_mw <= max(mw for _, mw in STEPS)


@pytest.mark.parametrize("sign", [-1, 1], ids=["negative-discharge", "positive-discharge"])
def test_android_battery_both_sign_conventions(fake, sign):
    base = fake.battery(current_ua=sign * 500_000, voltage_uv=3_900_000)
    source = sensors.select("battery").source
    assert source.read().value == pytest.approx(500_000 * 3_900_000 / 1e9)
    driver = Driver(lambda mw: fake.write(f"{base}/current_now", int(sign * mw * 1e9 / 3_900_000)), STEPS)
    trace = measure(source, driver)
    assert trace.samples >= 2 and np.all(np.diff(trace.energy_mj) >= 0) and trace.energy_mj[-1] > 0
    # current_now is rounded to the uA: each reading is within a milliwatt of a driven level
    levels = np.array([mw for _, mw in STEPS] + [1950.0])
    assert np.all(np.min(np.abs(trace.power_mw[:, None] - levels[None, :]), axis=1) < 1.0)


def test_battery_while_charging_is_refused_with_the_reason(fake):
    fake.battery(status="Charging", current_ua=800_000)
    fake.write("/sys/class/power_supply/usb/type", "USB")
    probe = sensors.get("battery").probe()
    assert not probe.usable and "charging" in probe.reason and "unplug the charger" in probe.reason


PMIC_OUTPUT = """\
     3V7_WL_SW_A current(0)=0.00390372A
       3V3_SYS_A current(1)=0.05660880A
       1V8_SYS_A current(2)=0.17666600A
      DDR_VDD2_A current(3)=0.02049995A
      DDR_VDDQ_A current(4)=0.00000000A
       1V1_SYS_A current(5)=0.18445200A
       0V8_SYS_A current(6)=0.33772970A
      VDD_CORE_A current(7)=0.76657000A
     3V7_WL_SW_V volt(8)=3.74487000V
       3V3_SYS_V volt(9)=3.31453000V
       1V8_SYS_V volt(10)=1.80000000V
      DDR_VDD2_V volt(11)=1.11902000V
      DDR_VDDQ_V volt(12)=0.60500000V
       1V1_SYS_V volt(13)=1.10500000V
       0V8_SYS_V volt(14)=0.80003780V
      VDD_CORE_V volt(15)=0.88281000V
         EXT5V_V volt(24)=5.14500000V
          BATT_V volt(25)=0.00000000V
"""


def test_pmic_adc_output_is_summed_over_rails_with_both_readings():
    rails = parse_pmic_adc(PMIC_OUTPUT)
    assert "EXT5V" not in rails and len(rails) == 8  # EXT5V has a voltage but no current
    assert rails["VDD_CORE"] == pytest.approx(0.76657 * 0.88281 * 1000)
    with pytest.raises(SensorError, match="no rail"):
        parse_pmic_adc("Command not registered")


def test_pmic_sensor_runs_vcgencmd(fake, tmp_path, monkeypatch):
    script = tmp_path / "vcgencmd"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = pmic_read_adc ] || exit 2\ncat <<'EOF'\n{PMIC_OUTPUT}EOF\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("EDGERT_VCGENCMD", str(script))
    sel = sensors.select("pmic")
    assert sel.source.read().value == pytest.approx(sum(parse_pmic_adc(PMIC_OUTPUT).values()))
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\necho 'error=1 error_msg=\"Command not registered\"' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("EDGERT_VCGENCMD", str(broken))
    probe = sensors.get("pmic").probe()
    assert not probe.usable and "exited with 1" in probe.reason and "Command not registered" in probe.reason


@pytest.mark.parametrize("line, mw", [("2.31", 2310.0), ("2.31 W", 2310.0), ("2310 mW", 2310.0),
                                      ("5.12V 0.45A 2.30W", 2300.0), ("  1e-3 kW ", 1000.0), ("450uW", 0.45)])
def test_power_lines_from_meters(line, mw):
    assert parse_power_line(line) == pytest.approx(mw)


@pytest.mark.parametrize("line", ["voltage ok", "5.1 0.4", "12 V", ""])
def test_power_lines_that_are_not_readings(line):
    with pytest.raises(ValueError):
        parse_power_line(line)


def py(code: str) -> str:
    return f"{sys.executable} -c \"{code}\""


def wait_for(condition, timeout_s: float = 60.0, what: str = "the condition") -> None:
    """Poll until `condition()` holds: a slow machine only makes this take longer, never fail."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened within {timeout_s:g} s"
        time.sleep(0.01)


def test_streaming_command_meter(fake):
    cmd = py("import time,sys\nfor i in range(400): print(f'{1.5 + (i % 2)} W', flush=True); time.sleep(0.005)")
    sel = sensors.select(command=cmd)
    source = sel.source
    monitor = Monitor(source, power_hz=20, thermal=False).start()
    wait_for(lambda: monitor.traces()[0] is not None and monitor.traces()[0].samples > 40, what="41 readings")
    trace, _ = monitor.stop()
    source.close()
    assert source.mode == "stream"
    # Every line is kept with its arrival time, though the sampler only ticked at 20 Hz.
    assert trace.samples > 40 and set(np.unique(trace.power_mw)) == {1500.0, 2500.0}


def test_polled_command_meter(fake):
    source = sensors.select(command="echo 2.5").source
    got = []
    wait_for(lambda: got.extend(source.readings()) or len(got) >= 2, what="two polled readings")
    source.close()
    assert source.mode == "poll" and len(got) >= 2 and all(r.value == 2500.0 for r in got)


@pytest.mark.parametrize("cmd, message", [
    ("echo 'meter offline'", "printed 'meter offline', not a power reading"),
    ("echo 'no device /dev/ttyUSB0' >&2; exit 3", "exited with 3: no device /dev/ttyUSB0"),
    ("true", "exited without printing a reading"),
    ("sleep 30", "printed no reading within 0.3 s"),
])
def test_failing_command_meters(fake, monkeypatch, cmd, message):
    if cmd.startswith("sleep"):  # only this case is about the timeout; the others fail on what they print
        monkeypatch.setattr("edgert.devices.command.START_TIMEOUT_S", 0.3)
    sel = sensors.select(command=cmd)
    assert sel.source is None and sel.requested and message in sel.reason


def test_command_meter_turning_to_garbage_mid_run_stops_cleanly(fake):
    cmd = py("import time\nfor i in range(20): print(2.0, flush=True); time.sleep(0.01)\nprint('ERR', flush=True)")
    source = sensors.select(command=cmd).source
    monitor = Monitor(source, power_hz=100, thermal=False).start()
    wait_for(lambda: monitor.traces()[0] is not None and monitor.traces()[0].errors, what="the garbage line")
    trace, _ = monitor.stop()
    source.close()
    assert trace.samples >= 5 and trace.errors and "'ERR', not a power reading" in trace.errors[0][1]


def test_sensor_that_disappears_mid_run_is_recorded(fake):
    base = fake.ina260()
    source = sensors.select("ina2xx").source
    monitor = Monitor(source, power_hz=100, thermal=False).start()
    time.sleep(0.1)
    for f in (fake.root / base.lstrip("/")).iterdir():
        f.unlink()
    time.sleep(0.1)
    trace, _ = monitor.stop()
    assert trace.errors and "stopped" in trace.errors[0][1] and "cannot be read" in trace.errors[0][1]
    assert trace.energy_between(int(trace.t_ns[0]), int(trace.t_ns[-1]) + 10**9) is None  # not covered: no guess


def test_garbage_in_a_sysfs_file_is_quoted(fake):
    base = fake.ina260()
    fake.write(f"{base}/power1_input", "N/A")
    source = sensors.get("ina2xx").find({})[0]
    with pytest.raises(SensorError, match=r"power1_input holds 'N/A', not a number"):
        source.read()


def test_unreadable_rapl_says_how_to_fix(fake, monkeypatch):
    base = fake.rapl()
    (fake.root / base.lstrip("/") / "energy_uj").chmod(0)

    real_open = os.open

    def as_a_user(file, *args, **kwargs):  # root reads mode-0 files, so deny it the way the kernel denies users
        if str(file).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", as_a_user)
    probe = sensors.get("rapl").probe()
    assert not probe.usable and "not readable by this user" in probe.reason
    assert "root-only since Linux 5.10" in probe.reason


def test_selection_order_names_and_errors(fake):
    fake.ina260()
    fake.ina3221_jetson(n=5)
    assert "ina3221" in sensors.select("auto").source.label  # the per-rail board meter comes first
    assert sensors.select("ina2xx,ina3221").source.label.startswith("ina260")
    assert sensors.select("none").source is None
    with pytest.raises(SensorError, match="unknown power sensor 'ina226x'; did you mean"):
        sensors.select("ina226x")
    assert sensors.get("ina260").name == "ina2xx"  # aliases


def test_nothing_found_says_what_was_tried(fake):
    sel = sensors.select("auto")
    assert sel.source is None and not sel.requested
    assert sel.reason.startswith("no power sensor found (tried ina3221, ina2xx, pmic, battery, rapl")
    sel = sensors.select("rapl")
    assert sel.requested and sel.reason.startswith("rapl: no RAPL zone")


def test_a_third_party_sensor_plugin(fake):
    class Constant(sensors.PowerSource):
        label = "bench supply"

        def _read(self):
            return 1234.0, {}

    class SupplySensor(sensors.PowerSensor):
        name = "supply"
        priority = 1

        def find(self, options):
            return [Constant()]

    sensors.register(SupplySensor())
    try:
        assert sensors.select("auto").source.label == "bench supply"
        assert sensors.get("supply").probe().usable
    finally:
        sensors.unregister("supply")
    assert "supply" not in sensors.plugins()


def test_energy_counter_trace_and_power_trace_agree():
    t = [0, 1_000_000_000, 2_000_000_000, 3_000_000_000]
    power = build_trace("p", "power", 1, t, [1000.0, 1000.0, 3000.0, 3000.0], [], [])
    counter = build_trace("e", "energy", 1, t, [5e6, 6e6, 8e6, 11e6], [], [])
    assert power.energy_between(0, 3_000_000_000) == pytest.approx(1000 + 2000 + 3000)
    assert counter.energy_between(0, 3_000_000_000) == pytest.approx(6000)
    assert counter.power_mw.tolist() == [1000.0, 1000.0, 2000.0, 3000.0]
    assert power.energy_between(500_000_000, 1_500_000_000) == pytest.approx(1000 * 0.5 + 1500 * 0.5, rel=0.01)
    assert power.energy_between(-1, 10) is None


def test_a_buggy_sensor_plugin_is_skipped_with_its_error(fake):
    class Buggy(sensors.PowerSensor):
        name = "buggy"
        priority = 1

        def find(self, options):
            raise RuntimeError("i2c bus exploded")

    fake.ina260()
    sensors.register(Buggy())
    try:
        sel = sensors.select("auto")
        assert sel.source.label.startswith("ina260")
        assert sel.skipped[0] == ("buggy", "the plugin failed: RuntimeError: i2c bus exploded")
        assert sensors.get("buggy").probe().reason == "the plugin failed: RuntimeError: i2c bus exploded"
    finally:
        sensors.unregister("buggy")


def test_env_restricts_which_sensor_plugins_load(fake, monkeypatch):
    monkeypatch.setenv("EDGERT_POWER_SENSORS", "rapl,battery")
    sensors.reset()
    try:
        assert set(sensors.plugins()) == {"rapl", "battery"}
        with pytest.raises(SensorError, match="unknown power sensor 'ina2xx'"):
            sensors.get("ina2xx")
    finally:
        monkeypatch.delenv("EDGERT_POWER_SENSORS")
        sensors.reset()
    assert {"ina2xx", "ina3221", "pmic", "battery", "rapl", "command"} <= set(sensors.plugins())


def test_auto_follows_the_boards_profile(fake, tmp_path, monkeypatch):
    """A Raspberry Pi 5 with an INA219 on its header: by priority the external meter would come first, but the
    board's profile prefers its own PMIC; without a recognised board the priority order stands."""
    script = tmp_path / "vcgencmd"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{PMIC_OUTPUT}EOF\n")
    script.chmod(0o755)
    monkeypatch.setenv("EDGERT_VCGENCMD", str(script))
    monkeypatch.setenv("EDGERT_MACHINE", "aarch64")
    fake.ina219_without_power(1)
    assert sensors.select("auto").source.label.startswith("ina219")  # no board recognised: priority order
    fake.write("/proc/device-tree/model", "Raspberry Pi 5 Model B Rev 1.0")
    assert sensors.board_sensor_order()[0] == "pmic"
    assert "pmic" in sensors.select("auto").source.label.lower()
    monkeypatch.setenv("EDGERT_DEVICE", "rpi4")  # named profile: no pmic in its list, the INA219 first again
    assert sensors.select("auto").source.label.startswith("ina219")
