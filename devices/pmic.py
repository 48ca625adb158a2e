"""Raspberry Pi 5 PMIC rails, read with `vcgencmd pmic_read_adc` (Raspberry Pi OS, firmware from late 2023 on).

The command prints each rail's current (`VDD_CORE_A current(7)=0.76657000A`) and voltage
(`VDD_CORE_V volt(15)=0.88281000V`); the board's power is the sum of V x I over the rails that have both. That is
the power the PMIC delivers, before the losses of the 5 V input stage, so it reads somewhat below a USB-C meter.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Mapping

from edgert.devices.sensors import PowerSensor, PowerSource
from edgert.errors import SensorError

_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=\s*([-+0-9.eE]+)\s*([AV])\s*$")


def parse_pmic_adc(text: str) -> dict[str, float]:
    """Rail name -> mW from `vcgencmd pmic_read_adc` output.

    Raises:
        SensorError: no rail has both a current and a voltage (the output is quoted).
    """
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            (amps if m.group(2) == "A" else volts)[m.group(1)] = float(m.group(3))
    rails = {name: volts[name] * amps[name] * 1000.0 for name in amps if name in volts}
    if not rails:
        raise SensorError(f"`vcgencmd pmic_read_adc` printed no rail with current and voltage: {text.strip()[:120]!r}")
    return rails


def vcgencmd() -> str | None:
    """The vcgencmd to run: `EDGERT_VCGENCMD` if set, else the one on PATH."""
    return os.environ.get("EDGERT_VCGENCMD") or shutil.which("vcgencmd")


class PmicSource(PowerSource):
    def __init__(self, command: str):
        self.command = command
        self.label = f"Raspberry Pi 5 PMIC rails ({command} pmic_read_adc)"
        self.min_interval_s = 0.05  # one vcgencmd call costs milliseconds of a core; 20 Hz is plenty
        self._read()  # fail now, not in the sampling thread

    def _read(self) -> tuple[float, dict[str, float]]:
        try:
            done = subprocess.run([self.command, "pmic_read_adc"], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SensorError(f"{self.command} pmic_read_adc failed: {exc}") from None
        if done.returncode != 0:
            raise SensorError(f"{self.command} pmic_read_adc exited with {done.returncode}: "
                              f"{(done.stderr or done.stdout).strip()[:160]}")
        rails = parse_pmic_adc(done.stdout)
        return sum(rails.values()), rails


class PmicSensor(PowerSensor):
    name = "pmic"
    aliases = ("rpi5", "vcgencmd")
    summary = "Raspberry Pi 5 PMIC rails (vcgencmd pmic_read_adc), sum of V x I"
    priority = 30

    def find(self, options: Mapping[str, str]) -> list[PowerSource]:
        command = vcgencmd()
        if command is None:
            raise SensorError("vcgencmd is not on PATH (Raspberry Pi OS only; set EDGERT_VCGENCMD to its path)")
        return [PmicSource(command)]
