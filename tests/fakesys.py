"""Fixture sysfs trees laid out like real boards' power monitors, with a thread that changes them over time.

Files are replaced atomically (write + rename), as a sysfs read never sees half a value.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable


class FakeSysfs:
    def __init__(self, root: Path):
        self.root = Path(root)

    def write(self, path: str, value) -> None:
        p = self.root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(f"{value}\n")
        os.replace(tmp, p)

    def hwmon(self, n: int, name: str, **attrs) -> str:
        base = f"/sys/class/hwmon/hwmon{n}"
        self.write(f"{base}/name", name)
        for key, value in attrs.items():
            self.write(f"{base}/{key}", value)
        return base

    def ina260(self, n: int = 3, power_mw: float = 1000.0) -> str:
        """drivers/hwmon/ina2xx.c for an INA260: bus voltage in1 (mV), current curr1 (mA), power1 (uW)."""
        return self.hwmon(n, "ina260", in0_input=0, in1_input=5000, curr1_input=int(power_mw / 5.0),
                          power1_input=int(power_mw * 1000), update_interval=2, shunt_resistor=2000)

    def ina219_without_power(self, n: int = 1, mv: float = 5000.0, ma: float = 200.0) -> str:
        return self.hwmon(n, "ina219", in0_input=12, in1_input=int(mv), curr1_input=int(ma), update_interval=1)

    def ina3221_jetson(self, n: int = 1, vdd_in_ma: float = 1000.0) -> str:
        """An Orin Nano's INA3221 at 1-0040: VDD_IN, VDD_CPU_GPU_CV, VDD_SOC (bus mV, current mA, labels)."""
        return self.hwmon(n, "ina3221", in1_label="VDD_IN", in1_input=5000, curr1_input=int(vdd_in_ma),
                          in1_enable=1, in2_label="VDD_CPU_GPU_CV", in2_input=5000, curr2_input=300, in2_enable=1,
                          in3_label="VDD_SOC", in3_input=5000, curr3_input=200, in3_enable=1,
                          in4_input=8000, in5_input=2400, in6_input=1600, update_interval=2)

    def rapl(self, energy_uj: int = 0, max_range_uj: int = 262143328850, zone: int = 0) -> str:
        base = f"/sys/class/powercap/intel-rapl:{zone}"
        self.write(f"{base}/name", f"package-{zone}")
        self.write(f"{base}/max_energy_range_uj", max_range_uj)
        self.write(f"{base}/energy_uj", energy_uj)
        self.write(f"{base}:0/name", "core")  # a sub-zone, which must not be added to the package
        self.write(f"{base}:0/energy_uj", 0)
        self.write(f"{base}:0/max_energy_range_uj", max_range_uj)
        return base

    def battery(self, name: str = "battery", current_ua: int = -500_000, voltage_uv: int = 4_000_000,
                status: str = "Discharging") -> str:
        base = f"/sys/class/power_supply/{name}"
        for key, value in dict(type="Battery", status=status, current_now=current_ua, voltage_now=voltage_uv,
                               capacity=80, present=1).items():
            self.write(f"{base}/{key}", value)
        return base

    def thermal_zone(self, n: int, kind: str, millideg: int) -> str:
        base = f"/sys/class/thermal/thermal_zone{n}"
        self.write(f"{base}/type", kind)
        self.write(f"{base}/temp", millideg)
        return base

    def cpufreq(self, cpus: int, khz: int, governor: str = "ondemand", max_khz: int = 2400000) -> None:
        for i in range(cpus):
            base = f"/sys/devices/system/cpu/cpu{i}/cpufreq"
            self.write(f"{base}/scaling_cur_freq", khz)
            self.write(f"{base}/scaling_governor", governor)
            self.write(f"{base}/cpuinfo_max_freq", max_khz)


class Driver(threading.Thread):
    """Applies `steps` [(seconds, value), ...] through `apply(value)` one after another in real time and logs
    when each took effect (perf_counter_ns)."""

    def __init__(self, apply: Callable[[float], None], steps: list[tuple[float, float]]):
        super().__init__(daemon=True)
        self.apply, self.steps = apply, steps
        self.log: list[tuple[int, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        for seconds, value in self.steps:
            self.apply(value)
            self.log.append((time.perf_counter_ns(), value))
            time.sleep(seconds)
        self.log.append((time.perf_counter_ns(), self.steps[-1][1]))
        self.done.set()
