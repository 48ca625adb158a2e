"""Measurements a conversion makes on the `.tflite` it wrote, through the edgert runtime: latency side by side,
accuracy on labelled data, and the work it runs in the background meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def interleaved_p50(paths: dict[str, Path], seconds: float = 1.0) -> dict[str, float]:
    """Median single-thread latency (ms) of each model on the same seeded inputs, alternating in short rounds."""
    import edgert
    from edgert.runtime.arrays import random_inputs

    models = {label: edgert.load(path, threads=1) for label, path in paths.items()}
    prepared = {label: m.prepare(random_inputs(m.inputs)) for label, m in models.items()}
    times: dict[str, list[float]] = {label: [] for label in models}
    deadline = time.perf_counter() + seconds * len(models)
    while time.perf_counter() < deadline or min(len(t) for t in times.values()) < 5:
        for label, run in prepared.items():
            started = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - started)
    return {label: float(np.median(t)) * 1e3 for label, t in times.items()}


class Background:
    """A function run in a thread; `result()` waits for it (and raises what it raised)."""

    def __init__(self, fn):
        import threading

        self._value, self._error = None, None

        def run():
            try:
                self._value = fn()
            except BaseException as exc:  # handed to whoever asks for the result
                self._error = exc

        self._thread = threading.Thread(target=run, name="edgert-background", daemon=True)
        self._thread.start()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def seeded_samples(inputs, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((n, *spec.shape), dtype=np.float32) for spec in inputs]


def tflite_accuracy(path, data) -> float:
    import edgert

    model = edgert.load(path)
    correct = 0
    for start in range(0, len(data), 256):
        predictions = model.run(data.x[start:start + 256])[0]
        correct += int((predictions.argmax(axis=1) == data.y[start:start + 256]).sum())
    return correct / len(data)
