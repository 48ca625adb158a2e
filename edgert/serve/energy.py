"""Power and energy while serving: the board's power sensor (edgert's sensor plugins, as `edgert bench` finds them)
sampled in a thread, energy integrated between samples, and energy per inference over each window of inferences."""

from __future__ import annotations

import logging
import threading
import time

from edgert.errors import EdgertError

log = logging.getLogger("edgert.serve")


class PowerMeter:
    """Samples `source` every `interval` s; publishes power, energy and energy per inference to `metrics`.

    Energy per inference is the energy of a window divided by the inferences (rows) the scheduler ran in it, once a
    window holds at least one inference and one second: the board's whole draw, idle included, as a deployed model
    costs it.
    """

    def __init__(self, source, metrics, inferences, interval: float = 0.1):
        self.source, self.metrics, self.inferences, self.interval = source, metrics, inferences, interval
        self.label = source.label
        self.energy_mj = 0.0
        self._last = None  # (t_ns, value) of the previous reading
        self._window = (time.perf_counter(), 0.0, inferences())  # start, energy then, inferences then
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgert-serve-power", daemon=True)

    @classmethod
    def open(cls, spec: str | None, metrics, inferences, interval: float = 0.1) -> tuple[PowerMeter | None, str]:
        """A meter on the first usable sensor of `spec` ("auto", "none" or names), or None and why there is none."""
        from edgert.devices.sensors import select

        if spec in (None, "none"):
            return None, "power measurement is off (--power none)"
        try:
            selection = select(spec)
        except EdgertError as exc:
            return None, str(exc)
        if selection.source is None:
            return None, selection.reason
        return cls(selection.source, metrics, inferences, interval), f"power from {selection.source.label}"

    def start(self) -> None:
        self._thread.start()

    def tick(self) -> None:
        for reading in self.source.readings(0.0):
            self._add(reading)
        start, energy_then, inferences_then = self._window
        now, done = time.perf_counter(), self.inferences()
        if done > inferences_then and now - start >= 1.0:
            self.metrics.energy_per_inference.labels(self.label).set((self.energy_mj - energy_then)
                                                                       / (done - inferences_then))
            self._window = (now, self.energy_mj, done)

    def _add(self, reading) -> None:
        previous, self._last = self._last, (reading.t_ns, reading.value)
        if self.source.kind == "power":
            self.metrics.power.labels(self.label).set(reading.value)
            if previous is not None and reading.t_ns > previous[0]:
                added = (previous[1] + reading.value) / 2 * (reading.t_ns - previous[0]) / 1e9  # mW x s = mJ
                self.energy_mj += added
                self.metrics.energy.labels(self.label).inc(added)
        elif previous is not None and reading.value >= previous[1]:  # a cumulative uJ counter (a wrap is skipped)
            added = (reading.value - previous[1]) / 1e3
            self.energy_mj += added
            self.metrics.energy.labels(self.label).inc(added)
            seconds = (reading.t_ns - previous[0]) / 1e9
            if seconds > 0:
                self.metrics.power.labels(self.label).set(added / seconds)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except EdgertError as exc:
                log.warning("power sensor %s stopped: %s", self.label, exc)
                return
            except Exception as exc:  # noqa: BLE001 - a sensor plugin's bug must not stop the server
                log.warning("power sensor %s failed: %s: %s", self.label, type(exc).__name__, exc)
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.source.close()
