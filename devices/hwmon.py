"""Linux hwmon power monitors: the `ina2xx` family (INA219/INA226/INA260...) and the 3-channel `ina3221` (Jetson).

Chips are found by the hwmon `name` file, never by the `hwmonN` number (which changes between boots). Units are the
kernel's hwmon ABI (Documentation/hwmon/sysfs-interface.rst): `power1_input` in uW, `in*_input` in mV, `curr*_input`
in mA, `update_interval` in ms.
"""

from __future__ import annotations

import os
from typing import Mapping

from edgert.devices import sysfs
from edgert.devices.sensors import PowerSensor, PowerSource
from edgert.errors import SensorError

# Chips of the kernel's ina2xx/ina238 drivers that expose one bus voltage, one current and (mostly) one power.
INA2XX_NAMES = frozenset({"ina209", "ina219", "ina220", "ina226", "ina230", "ina231", "ina233", "ina234",
                          "ina237", "ina238", "ina260", "ina700", "ina780"})


def hwmon_chips(names: frozenset[str] | set[str]) -> list[tuple[str, str]]:
    """(chip name, attribute directory) of every hwmon device whose `name` is in `names`."""
    found = []
    for d in sysfs.glob("/sys/class/hwmon/hwmon*"):
        name = (sysfs.read_text(os.path.join(d, "name"), "") or "").lower()
        if name in names:
            # Old kernels keep the attributes in hwmonN/device/ rather than hwmonN/.
            found.append((name, d if _has_inputs(d) else os.path.join(d, "device")))
    return found


def _has_inputs(d: str) -> bool:
    try:
        return any(f.endswith("_input") for f in os.listdir(d))
    except OSError:
        return False


def _update_interval_s(d: str) -> float:
    text = sysfs.read_text(os.path.join(d, "update_interval"))
    try:
        return max(0.0, float(text) / 1000.0) if text is not None else 0.0
    except ValueError:
        return 0.0


class Ina2xxSource(PowerSource):
    def __init__(self, chip: str, directory: str):
        self.chip, self.dir = chip, directory
        self.label = f"{chip} ({directory})"
        self.min_interval_s = _update_interval_s(directory)
        power = os.path.join(directory, "power1_input")
        self._power = power if os.path.exists(power) else None
        self._volts = os.path.join(directory, "in1_input")
        self._amps = os.path.join(directory, "curr1_input")
        if self._power is None and not (os.path.exists(self._volts) and os.path.exists(self._amps)):
            raise SensorError(f"{directory} has neither power1_input nor in1_input and curr1_input")

    def _read(self) -> tuple[float, dict[str, float]]:
        if self._power is not None:
            mw = sysfs.read_number(self._power) / 1000.0  # uW -> mW
        else:
            mw = sysfs.read_number(self._volts) * abs(sysfs.read_number(self._amps)) / 1000.0  # mV x mA -> mW
        return mw, {}


class Ina2xxSensor(PowerSensor):
    name = "ina2xx"
    aliases = ("ina219", "ina226", "ina260")
    summary = "INA219/INA226/INA260... current monitors on I2C (Linux hwmon ina2xx driver)"
    priority = 20

    def find(self, options: Mapping[str, str]) -> list[PowerSource]:
        chips = hwmon_chips(INA2XX_NAMES)
        if not chips:
            raise SensorError("no ina2xx hwmon device (none of /sys/class/hwmon/*/name is an INA2xx chip; "
                              "load the ina2xx driver and declare the chip in the device tree)")
        return [Ina2xxSource(name, d) for name, d in chips]


class Ina3221Source(PowerSource):
    """All enabled channels of every INA3221 on the board, as rails; the total is the board input rail."""

    def __init__(self, chips: list[str], rail: str | None):
        self.channels: list[tuple[str, str, str]] = []  # (label, mV file, mA file)
        intervals = []
        for d in chips:
            intervals.append(_update_interval_s(d))
            for n in (1, 2, 3):
                volts, amps = os.path.join(d, f"in{n}_input"), os.path.join(d, f"curr{n}_input")
                if not (os.path.exists(volts) and os.path.exists(amps)):
                    continue
                if sysfs.read_text(os.path.join(d, f"in{n}_enable"), "1") == "0":
                    continue
                label = sysfs.read_text(os.path.join(d, f"in{n}_label")) or f"{os.path.basename(d)}.in{n}"
                self.channels.append((label, volts, amps))
        if not self.channels:
            raise SensorError(f"ina3221 at {', '.join(chips)} has no enabled channel with in*_input and curr*_input")
        labels = [c[0] for c in self.channels]
        if rail is not None:
            if rail not in labels:
                raise SensorError(f"ina3221 has no rail {rail!r}; its rails are {', '.join(labels)}")
            self.total_rail: str | None = rail
        else:
            # The board input (Jetson's VDD_IN) already includes the other rails: summing would count them twice.
            self.total_rail = next((lbl for lbl in labels if lbl.upper().startswith(("VDD_IN", "VIN"))), None)
        self.min_interval_s = max(intervals, default=0.0)
        rule = f"total = {self.total_rail}" if self.total_rail else "total = sum of rails"
        self.label = f"ina3221 rails {', '.join(labels)} ({rule})"

    def _read(self) -> tuple[float, dict[str, float]]:
        rails = {label: sysfs.read_number(v) * abs(sysfs.read_number(a)) / 1000.0 for label, v, a in self.channels}
        total = rails[self.total_rail] if self.total_rail else sum(rails.values())
        return total, rails


class Ina3221Sensor(PowerSensor):
    name = "ina3221"
    summary = "INA3221 three-channel monitors, per rail (Jetson VDD_IN, VDD_CPU_GPU_CV, VDD_SOC)"
    priority = 10

    def find(self, options: Mapping[str, str]) -> list[PowerSource]:
        chips = [d for _, d in hwmon_chips({"ina3221"})]
        if not chips:
            raise SensorError("no ina3221 hwmon device (no /sys/class/hwmon/*/name says ina3221)")
        return [Ina3221Source(chips, options.get("rail"))]
