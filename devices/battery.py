"""Battery fuel gauges (`/sys/class/power_supply/*`): Android phones, Linux laptops and battery-powered boards.

The power-supply ABI gives `current_now` in uA and `voltage_now` in uV (or `power_now` in uW). Vendors disagree on the
sign of a discharge current (negative on some, positive on others), so only its magnitude is used, and only while
`status` says `Discharging`: with a charger attached the gauge sees the charge current, not the device's draw.
"""

from __future__ import annotations

import os
from typing import Mapping

from edgert.devices import sysfs
from edgert.devices.sensors import PowerSensor, PowerSource
from edgert.errors import SensorError


class BatterySource(PowerSource):
    def __init__(self, directory: str):
        self.dir = directory
        self.name = os.path.basename(directory)
        self.label = f"battery {self.name} ({directory})"
        power = os.path.join(directory, "power_now")
        self._power = power if os.path.exists(power) else None
        self._amps = os.path.join(directory, "current_now")
        self._volts = os.path.join(directory, "voltage_now")
        # Gauges refresh about once a second on most phones; faster polling reads repeats.
        self.min_interval_s = 0.0

    def _read(self) -> tuple[float, dict[str, float]]:
        if self._power is not None:
            return abs(sysfs.read_number(self._power)) / 1000.0, {}  # uW -> mW
        ua, uv = sysfs.read_number(self._amps), sysfs.read_number(self._volts)
        return abs(ua) * uv / 1e9, {}  # uA x uV = pW -> mW


class BatterySensor(PowerSensor):
    name = "battery"
    aliases = ("android", "power_supply")
    summary = "battery fuel gauge while discharging (Android, laptops): current_now x voltage_now"
    priority = 40

    def find(self, options: Mapping[str, str]) -> list[PowerSource]:
        found, reasons = [], []
        for d in sysfs.glob("/sys/class/power_supply/*"):
            if (sysfs.read_text(os.path.join(d, "type"), "") or "").lower() != "battery":
                continue
            name = os.path.basename(d)
            readable = os.path.exists(os.path.join(d, "power_now")) or (
                os.path.exists(os.path.join(d, "current_now")) and os.path.exists(os.path.join(d, "voltage_now")))
            if not readable:
                reasons.append(f"{name} has no current_now/voltage_now")
                continue
            status = sysfs.read_text(os.path.join(d, "status"), "unknown") or "unknown"
            if status.lower() != "discharging":
                reasons.append(f"{name} is {status.lower()}: with a charger attached the gauge shows the charge "
                               "current, not the device's draw; unplug the charger")
                continue
            found.append(BatterySource(d))
        if not found:
            raise SensorError("; ".join(reasons) or "no battery under /sys/class/power_supply")
        return found
