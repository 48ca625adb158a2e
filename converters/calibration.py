"""Calibration data for full-integer quantization: .npy, .npz or a folder of images, checked against the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from edgert.runtime.arrays import load_arrays
from edgert.converters.sources import InputShape
from edgert.errors import InputDataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def decode_images(files: Sequence[Path], spec: InputShape, value_range: tuple[float, float]) -> np.ndarray:
    """Decode image files, resized to the input's height and width and scaled from 0..255 to `value_range`."""
    from edgert.converters._tf import import_tf

    if len(spec.shape) != 3:
        raise InputDataError(f"images need a model input of shape (H, W, C); "
                             f"input '{spec.name}' has shape {spec.shape}")
    channel_first = spec.shape[0] in (1, 3, 4) and spec.shape[-1] not in (1, 3, 4)  # a (C, H, W) input
    if channel_first:
        return np.ascontiguousarray(decode_images(files, InputShape(spec.name, (*spec.shape[1:], spec.shape[0])),
                                                  value_range).transpose(0, 3, 1, 2))
    height, width, channels = spec.shape
    tf, _ = import_tf()
    low, high = value_range
    out = []
    for f in files:
        try:
            img = tf.io.decode_image(f.read_bytes(), channels=channels, expand_animations=False)
        except Exception:  # TensorFlow raises InvalidArgumentError for files it cannot decode
            raise InputDataError(f"{f} is not a readable image; remove it from the folder") from None
        img = tf.image.resize(tf.cast(img, tf.float32), (height, width)).numpy()
        out.append(low + img * ((high - low) / 255.0))
    return np.stack(out)


def _images(folder: Path, spec: InputShape, value_range: tuple[float, float] | None) -> np.ndarray:
    files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputDataError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if value_range is None:
        from edgert.converters.ranges import image_range_needed

        raise image_range_needed(folder, "--calibration-data")
    return decode_images(files, spec, value_range)


def _pick(arrays: dict[str, np.ndarray], inputs: Sequence[InputShape], source: Path) -> list[np.ndarray]:
    if len(inputs) == 1:
        if len(arrays) == 1:
            return list(arrays.values())
        for key in ("x", inputs[0].name):
            if key in arrays:
                return [arrays[key]]
        raise InputDataError(f"{source} holds arrays {sorted(arrays)}; name the calibration array 'x'")
    names = [s.name for s in inputs]
    if all(n in arrays for n in names):
        return [arrays[n] for n in names]
    raise InputDataError(f"the model has inputs {names}; save the calibration data as an .npz "
                         f"with one array per input under those names (found {sorted(arrays)})")


def load_calibration_data(
    path: str | os.PathLike,
    inputs: Sequence[InputShape],
    max_samples: int = 200,
    value_range: tuple[float, float] | None = None,
) -> list[np.ndarray]:
    """Load calibration samples: all of them, or a seeded random subset of `max_samples`.

    Args:
        path: a `.npy` (single-input models), an `.npz` (`x`, or one array per input name) or a folder of images,
            which are decoded, resized to the input's height and width and scaled to `value_range` (required for a
            folder: see `ranges.declared_range`).
        inputs: the model's inputs, shapes without the batch dimension.
        max_samples: upper bound on the samples used.

    Returns:
        One float32 array per input, each of shape (n_samples, *input_shape).

    Raises:
        InputDataError: unreadable file, wrong shapes, non-numeric or non-finite values, too few samples, or an
            image folder without a value range.
    """
    return load_calibration_arrays(path, inputs, max_samples, value_range)[0]


def load_calibration_arrays(path, inputs, max_samples: int = 200, value_range=None, notes: list[str] | None = None
                            ) -> tuple[list[np.ndarray], list[str]]:
    """`load_calibration_data`, with the dtypes the file stored (images: `image`), for range checks.

    Arrays in the source framework's layout (an input's `source_shape`, channel-first) are transposed to the
    model's, and `notes` says so."""
    p = Path(path)
    if max_samples < 1:
        raise InputDataError(f"--calibration-samples must be at least 1, got {max_samples}")
    if not p.exists():
        raise InputDataError(f"calibration data {p}: no such file or directory")
    if p.is_dir():
        if len(inputs) != 1:
            raise InputDataError("an image folder can calibrate a model with one input only; use an .npz")
        arrays = [_images(p, inputs[0], value_range)]
        dtypes = ["images scaled to %g..%g" % value_range]
    elif p.suffix in (".npy", ".npz"):
        arrays = _pick(load_arrays(p), inputs, p)
        dtypes = [str(a.dtype) for a in arrays]
    else:
        raise InputDataError(f"calibration data {p}: use a .npy, an .npz or a folder of images")

    counts = {len(a) if a.ndim else 0 for a in arrays}
    out = []
    for spec, a in zip(inputs, arrays):
        if a.dtype.kind not in "fiub":
            raise InputDataError(f"calibration data for '{spec.name}' has dtype {a.dtype}; it must be numeric")
        if spec.source_shape is not None and tuple(a.shape[1:]) == spec.source_shape != spec.shape:
            from edgert.converters.foreign.layout import to_last

            a = to_last(a)
            if notes is not None:
                notes.append(f"calibration data for '{spec.name}' is channel-first, as the source takes it: "
                             f"transposed to the .tflite's channel-last {(len(a), *spec.shape)}")
        if a.ndim != len(spec.shape) + 1 or tuple(a.shape[1:]) != spec.shape:
            raise InputDataError(
                f"calibration data for input '{spec.name}' has shape {a.shape}; the model expects "
                f"(N, {', '.join(map(str, spec.shape))})")
        a = a.astype(np.float32, copy=False)
        if not np.isfinite(a).all():
            raise InputDataError(f"calibration data for '{spec.name}' contains NaN or infinite values")
        out.append(a)
    if len(counts) != 1 or 0 in counts:
        raise InputDataError(f"calibration data {p} must hold the same, non-zero number of samples per input")
    n = counts.pop()
    if n > max_samples:
        chosen = np.sort(np.random.default_rng(0).choice(n, size=max_samples, replace=False))
        out = [a[chosen] for a in out]
    return out, dtypes
