"""Any external meter as a command (`--power-cmd`): a USB power meter script, a lab supply's CLI, an SSH one-liner.

The command prints power readings, one per line: a bare number is watts, a number with a unit is taken in that unit
(`2.31`, `2.31 W`, `2310 mW`, `5.12V 0.45A 2.30W`). A command that keeps running is a stream: every line it prints
is a reading, timed when it arrives. A command that prints and exits 0 is polled: it is run again, at most every
`POLL_INTERVAL_S`. A command that exits non-zero, or prints something that is not a reading, stops the sensor with
its output quoted.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from typing import Mapping

from edgert.devices.sensors import PowerSensor, PowerSource, Reading
from edgert.errors import SensorError

POLL_INTERVAL_S = 0.05
START_TIMEOUT_S = 5.0
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_WITH_UNIT = re.compile(rf"({_NUMBER})\s*(kW|mW|uW|µW|W)(?![A-Za-z])")
_BARE = re.compile(rf"^\s*({_NUMBER})\s*$")
_TO_MW = {"kW": 1e6, "W": 1e3, "mW": 1.0, "uW": 1e-3, "µW": 1e-3}


def parse_power_line(line: str) -> float:
    """Milliwatts from one line of meter output.

    Raises:
        ValueError: the line is not a reading (no number in watts, or several bare numbers).
    """
    m = _WITH_UNIT.search(line)
    if m:
        return float(m.group(1)) * _TO_MW[m.group(2)]
    m = _BARE.match(line)
    if m:
        return float(m.group(1)) * 1e3
    raise ValueError(line)


class CommandSource(PowerSource):
    def __init__(self, command: str, start_timeout_s: float | None = None):
        self.command = command
        self.label = f"command `{command}`"
        self.min_interval_s = 0.0
        self.mode = "starting"
        self._readings: list[Reading] = []
        self._error: str | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._run, name="edgert-power-cmd", daemon=True)
        self._thread.start()
        start_timeout_s = START_TIMEOUT_S if start_timeout_s is None else start_timeout_s
        deadline = time.monotonic() + start_timeout_s
        with self._cond:
            while not self._readings and self._error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            error, got = self._error, bool(self._readings)
        if error is not None or not got:
            self.close()
            raise SensorError(error or f"--power-cmd `{command}` printed no reading within {start_timeout_s:g} s")

    def _fail(self, message: str) -> None:
        with self._cond:
            if self._error is None:
                self._error = message
            self._cond.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                proc = self._proc = subprocess.Popen(
                    self.command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    start_new_session=True, errors="replace")
            except OSError as exc:
                self._fail(f"--power-cmd `{self.command}` could not start: {exc}")
                return
            got = 0
            for line in proc.stdout:  # type: ignore[union-attr]
                t_ns = time.perf_counter_ns()
                if not line.strip():
                    continue
                try:
                    mw = parse_power_line(line)
                except ValueError:
                    self._fail(f"--power-cmd `{self.command}` printed {line.strip()[:80]!r}, not a power reading "
                               "(print watts, one per line: '2.31', '2.31 W' or '2310 mW')")
                    self._kill()
                    return
                got += 1
                with self._cond:
                    if got == 2 and self.mode == "starting":
                        self.mode = "stream"
                    self._readings.append(Reading(t_ns, mw))
                    self._cond.notify_all()
            rc = proc.wait()
            if self._stop.is_set():
                return
            if rc != 0:
                err = (proc.stderr.read() if proc.stderr else "").strip()  # type: ignore[union-attr]
                self._fail(f"--power-cmd `{self.command}` exited with {rc}" + (f": {err[-200:]}" if err else ""))
                return
            if not got:
                self._fail(f"--power-cmd `{self.command}` exited without printing a reading")
                return
            if self.mode == "starting":
                self.mode = "poll"
            self._stop.wait(max(0.0, POLL_INTERVAL_S - (time.monotonic() - started)))

    def readings(self, wait_s: float = 0.0) -> list[Reading]:
        """Every reading that arrived since the last call, waiting up to `wait_s` for one."""
        with self._cond:
            if wait_s > 0:
                self._cond.wait_for(lambda: self._readings or self._error is not None, timeout=wait_s)
            if self._error is not None:
                raise SensorError(self._error)
            out, self._readings = self._readings, []
        return out

    def read(self) -> Reading:
        got = self.readings()
        if not got:
            raise SensorError(f"--power-cmd `{self.command}` has no new reading")
        return got[-1]

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=2)
            except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
                proc.kill()

    def close(self) -> None:
        self._stop.set()
        self._kill()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=3)


class CommandSensor(PowerSensor):
    name = "command"
    summary = "an external meter command that prints watts (--power-cmd)"
    auto = False
    priority = 0

    def find(self, options: Mapping[str, str]) -> list[PowerSource]:
        command = options.get("command")
        if not command:
            raise SensorError("the command sensor needs --power-cmd 'CMD' (a command that prints watts)")
        return [CommandSource(command)]
