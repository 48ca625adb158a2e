"""A classifier's output as its best classes: plain functions over arrays, as PyCoral's `classify.get_classes`."""

from __future__ import annotations

import numpy as np


def top_k(scores: np.ndarray, k: int = 5, threshold: float = float("-inf")) -> list[tuple[int, float]]:
    """The `k` best (class index, score) pairs of one picture's scores (any shape with the classes last and one
    row), best first, those below `threshold` left out; ties keep the lower index first."""
    row = np.asarray(scores, np.float64).reshape(-1)
    k = max(0, min(int(k), row.size))
    order = np.argsort(-row, kind="stable")[:k]
    return [(int(i), float(row[i])) for i in order if row[i] >= threshold]


def classes_of(shape: tuple[int, ...]) -> int | None:
    """The number of classes of a classifier output shape (1, C) or (C,), or None when it is not one."""
    dims = [int(d) for d in shape if int(d) != 1]
    return dims[0] if len(dims) == 1 and dims[0] > 1 and len(shape) <= 2 else None
