"""Labelled data for fine-tuning and evaluation: an .npz with `x` and `y`, or an image folder of class sub-folders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgert.runtime.arrays import load_arrays
from edgert.converters.calibration import IMAGE_SUFFIXES, decode_images
from edgert.converters.sources import InputShape
from edgert.errors import InputDataError


@dataclass(frozen=True)
class LabelledData:
    x: np.ndarray  # float32, (N, *input_shape)
    y: np.ndarray  # int64 class indices, (N,)
    source: str
    stored_dtype: str = "float32"  # what the file held before the float32 cast (for range checks)

    def __len__(self) -> int:
        return len(self.x)


def load_labelled_data(path: str | os.PathLike, spec: InputShape, num_classes: int, option: str,
                       value_range: tuple[float, float] | None = None) -> LabelledData:
    """Load and check labelled data against the model's single input and its number of output classes.

    Labels may be class indices (N,) or one-hot rows (N, num_classes).

    Raises:
        InputDataError: unreadable, wrong shapes, labels out of range or not matching the output classes.
    """
    p = Path(path)
    if p.is_dir():
        classes = sorted(d for d in p.iterdir() if d.is_dir())
        if not classes:
            raise InputDataError(f"{option} {p}: an image folder needs one sub-folder per class")
        files, labels = [], []
        for label, folder in enumerate(classes):
            found = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            files += found
            labels += [label] * len(found)
        if not files:
            raise InputDataError(f"{option} {p}: the class folders hold no images")
        if value_range is None:
            from edgert.converters.ranges import image_range_needed

            raise image_range_needed(p, option)
        x, y = decode_images(files, spec, value_range), np.array(labels, np.int64)
        if len(classes) != num_classes:
            raise InputDataError(f"{option} {p} has {len(classes)} class folders; the model outputs {num_classes} "
                                 "classes")
    else:
        arrays = load_arrays(p) if p.suffix == ".npz" else None
        if arrays is None:
            raise InputDataError(f"{option} {p}: use an .npz with arrays x and y, or an image folder")
        if "x" not in arrays or "y" not in arrays:
            raise InputDataError(f"{option} {p} holds {sorted(arrays)}; it needs arrays named x and y")
        x, y = arrays["x"], arrays["y"]
    if x.dtype.kind not in "fiub" or tuple(x.shape[1:]) != spec.shape:
        raise InputDataError(f"{option}: x has shape {x.shape} ({x.dtype}); the model expects "
                             f"(N, {', '.join(map(str, spec.shape))}) numbers")
    if y.ndim == 2 and y.shape[1] == num_classes:
        y = y.argmax(axis=1)
    if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu" and not np.all(np.mod(y, 1) == 0):
        raise InputDataError(f"{option}: y must hold one integer label per sample (or one-hot rows); "
                             f"got shape {y.shape} for {len(x)} samples")
    y = y.astype(np.int64)
    if len(y) == 0:
        raise InputDataError(f"{option} {p} holds no samples")
    if y.min() < 0 or y.max() >= num_classes:
        raise InputDataError(f"{option}: labels run from {y.min()} to {y.max()}, but the model outputs "
                             f"{num_classes} classes (0..{num_classes - 1})")
    stored = "images scaled to %g..%g" % value_range if p.is_dir() else str(x.dtype)
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise InputDataError(f"{option}: x contains NaN or infinite values")
    return LabelledData(x, y, str(p), stored)
