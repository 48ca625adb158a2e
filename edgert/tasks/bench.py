"""Per picture, not per inference: a task pipeline's pre-processing, inference and post-processing timed apart
over real photographs, with energy per picture where a power sensor exists (`edgert bench --image`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgert.measure.results import EnergyStats, LatencyStats


@dataclass(frozen=True)
class PictureBench:
    """Each stage's latency over the timed pictures, the whole of it, and energy per picture (or why not)."""

    model: str
    task: str
    pictures: tuple[str, ...]
    pre: LatencyStats
    infer: LatencyStats
    post: LatencyStats
    total: LatencyStats
    energy: EnergyStats | None
    power_note: str
    delegation: str

    @property
    def energy_per_picture_mj(self) -> float | None:
        if self.energy is None or not self.energy.inferences:
            return None
        return self.energy.net_energy_mj / self.energy.inferences

    def to_dict(self) -> dict:
        return {"model": self.model, "task": self.task, "pictures": list(self.pictures),
                "stages": {"pre": self.pre.to_dict(), "infer": self.infer.to_dict(), "post": self.post.to_dict(),
                           "total": self.total.to_dict()},
                "energy_per_picture_mj": self.energy_per_picture_mj,
                "energy": None if self.energy is None else self.energy.to_dict(), "power_note": self.power_note,
                "delegation": self.delegation}


def bench_pictures(pipeline, pictures: Sequence, *, runs: int = 50, warmup: int = 3, power: str | None = "auto",
                   power_cmd: str | None = None, power_options=None, power_hz: float = 100.0,
                   idle_s: float = 0.0) -> PictureBench:
    """Time `runs` pictures (cycling through `pictures`: paths, Pillow images or pixels, decoded once) through
    `pipeline` (an `edgert.tasks.Pipeline`), each stage on its own clock."""
    from edgert.devices.sensors import select
    from edgert.measure.power_sampling import Monitor
    from edgert.tasks.image import read_image

    colour = "L" if pipeline.plan.image.channels == 1 else "RGB"
    decoded = [read_image(p, colour) for p in pictures]
    names = tuple(str(p) if isinstance(p, (str, bytes)) or hasattr(p, "__fspath__") else "(array)" for p in pictures)
    for i in range(max(0, warmup)):
        pipeline.run_pixels(decoded[i % len(decoded)])
    selection = select(power, power_cmd, power_options)
    monitor = Monitor(selection.source, power_hz=power_hz, thermal=False)
    samples = np.zeros((max(1, runs), 3), np.int64)
    idle = None
    try:
        monitor.start()
        if selection.source is not None and idle_s > 0:
            start = time.perf_counter_ns()
            time.sleep(idle_s)
            idle = (start, time.perf_counter_ns())
        window_start = time.perf_counter_ns()
        for i in range(len(samples)):
            pixels = decoded[i % len(decoded)]
            t0 = time.perf_counter_ns()
            batch, geometry = pipeline.prepare(pixels)
            t1 = time.perf_counter_ns()
            outputs = pipeline.infer(batch)
            t2 = time.perf_counter_ns()
            pipeline.decode(outputs, geometry)
            samples[i] = (t1 - t0, t2 - t1, time.perf_counter_ns() - t2)
        window = (window_start, time.perf_counter_ns())
    finally:
        trace, _thermal = monitor.stop()
        if selection.source is not None:
            selection.source.close()
    energy, note = None, selection.reason
    if trace is not None:
        from edgert.measure.results import energy_stats

        energy, note = energy_stats(trace, window, len(samples), idle)
    return PictureBench(pipeline.model.path, pipeline.task, names, LatencyStats.from_ns(samples[:, 0]),
                        LatencyStats.from_ns(samples[:, 1]), LatencyStats.from_ns(samples[:, 2]),
                        LatencyStats.from_ns(samples.sum(axis=1)), energy, note or "",
                        pipeline.model.delegation.describe())
