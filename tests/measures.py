"""How tests compare a converted model's outputs with the source framework's, run separately: measures that a wrong
answer cannot pass by sitting near the mean (centred correlation), by being small (error over the reference's own
range), or by looking right on average (the decision: the class)."""

from __future__ import annotations

import numpy as np


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Centred (Pearson) correlation over all elements: a constant near the mean scores 0, where a plain cosine of
    probabilities would still be near 1."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def error_of_range(got: np.ndarray, want: np.ndarray) -> float:
    """The largest difference as a share of the reference's own range."""
    want = np.asarray(want, np.float64)
    span = float(want.max() - want.min()) or 1.0
    return float(np.max(np.abs(np.asarray(got, np.float64) - want))) / span


def same_class(got: np.ndarray, want: np.ndarray) -> float:
    """The share of rows whose top class agrees (the decision a classifier's output makes)."""
    return float(np.mean(np.asarray(got).argmax(-1) == np.asarray(want).argmax(-1)))
