"""RAPL energy counters through Linux powercap (`/sys/class/powercap/intel-rapl:N`, Intel and recent AMD CPUs).

Each top-level zone has `name` (`package-0`, `psys`), a cumulative `energy_uj` and `max_energy_range_uj`, the value
at which the counter wraps to zero. The counters cover the CPU package (or with `psys` the platform), not the
board: report them as such.
"""

from __future__ import annotations

import os
import re
from typing import Mapping

from edgert.devices import sysfs
from edgert.devices.sensors import PowerSensor, PowerSource
from edgert.errors import SensorError

_TOP_LEVEL = re.compile(r"intel-rapl:\d+$")


class _Counter:
    """One zone's counter, unwrapped: keeps adding `max_energy_range_uj` each time the raw value goes down."""

    def __init__(self, directory: str):
        self.file = os.path.join(directory, "energy_uj")
        self.name = sysfs.read_text(os.path.join(directory, "name")) or os.path.basename(directory)
        self.range_uj = sysfs.read_number(os.path.join(directory, "max_energy_range_uj"))
        self.last = sysfs.read_number(self.file)
        self.offset = 0.0

    def read(self) -> float:
        raw = sysfs.read_number(self.file)
        if raw < self.last:
            self.offset += self.range_uj + 1  # the counter runs 0..max_energy_range_uj inclusive
        self.last = raw
        return raw + self.offset


class RaplSource(PowerSource):
    kind = "energy"

    def __init__(self, zones: list[str]):
        counters = [_Counter(z) for z in zones]
        platform = [c for c in counters if c.name == "psys"]
        # psys is the whole platform and already includes the packages; otherwise add the packages up.
        self.counters = platform or counters
        self.label = "RAPL " + " + ".join(c.name for c in self.counters) + " (CPU energy counters, not the board)"
        self.min_interval_s = 0.001

    def _read(self) -> tuple[float, dict[str, float]]:
        rails = {c.name: c.read() for c in self.counters}
        return sum(rails.values()), rails


class RaplSensor(PowerSensor):
    name = "rapl"
    aliases = ("powercap",)
    summary = "CPU package energy from RAPL counters (Linux powercap)"
    priority = 60

    def find(self, options: Mapping[str, str]) -> list[PowerSource]:
        zones = [z for z in sysfs.glob("/sys/class/powercap/intel-rapl:*") if _TOP_LEVEL.search(z)]
        if not zones:
            raise SensorError("no RAPL zone under /sys/class/powercap (not an Intel/AMD CPU, or powercap is off)")
        try:
            return [RaplSource(zones)]
        except SensorError as exc:
            if "not readable" in str(exc):
                raise SensorError(f"{exc}: energy_uj is root-only since Linux 5.10 (CVE-2020-8694); "
                                  "run as root or `sudo chmod o+r` it") from None
            raise
