"""Agreement of a model's outputs with a reference, defined once: the measures and the thresholds per quantization
mode that the converters (a `.tflite` against the model it came from) and the fleet's gates (a board's run of the
very `.tflite` against the host's) both judge by. numpy only, so a bundle runs it on a board.

Two comparisons, two questions:
- A conversion changes what a model computes by as much as its mode quantizes. A float32 `.tflite` must stay within
  `FLOAT32_MAX_REL_DIFF` of its largest output (other kernels round differently, no more); a quantized one keeps a
  cosine of at least `MIN_COSINE[mode]` on each output (the converters judge detectors and attribute channels too).
- A board runs the file the host ran, so its outputs may differ only as kernels round: each output's largest
  difference stays within `BOARD_MAX_ERROR[mode]` of the host's range for that output, or `BOARD_STEPS` of its
  quantization steps. A cosine is scale-blind (a board whose outputs all come out 5% small keeps cosine 1.0): the
  gates report it against `MIN_COSINE` and judge by the difference.
"""

from __future__ import annotations

import numpy as np

MODES = ("float32", "float16", "dynamic", "int8", "int16x8", "edgetpu")
FLOAT32_MAX_REL_DIFF = 1e-3
MIN_COSINE = {"float32": 0.9999, "float16": 0.999, "dynamic": 0.98, "int8": 0.98, "edgetpu": 0.98, "int16x8": 0.99}
BOARD_MAX_ERROR = {"float32": 1e-3, "float16": 1e-3, "dynamic": 0.02, "int8": 0.02, "edgetpu": 0.02,
                   "int16x8": 0.02}
BOARD_STEPS = 2
DEFAULT_MODE = "int8"  # what an unknown mode is judged as: the loosest of the quantized ones

# ModelInfo.quantization, as `edgert inspect` reads it from the file, by how it starts.
_FROM_FILE = (("float32", "float32"), ("float16", "float16"), ("dynamic", "dynamic"), ("full integer", "int8"),
              ("int16x8", "int16x8"))


def mode_of(quantization: str) -> str:
    """The mode of a recipe (`int8`, `float16`, ...) or of a file as `ModelInfo.quantization` describes it
    (`full integer (int8), float I/O`, `dynamic range (int8 weights)`, ...)."""
    if quantization in MODES:
        return quantization
    return next((mode for start, mode in _FROM_FILE if quantization.startswith(start)), DEFAULT_MODE)


def min_cosine(mode: str) -> float:
    """The worst cosine an output may keep in this mode (a recipe's mode or a file's quantization)."""
    return MIN_COSINE[mode_of(mode)]


def board_max_error(mode: str) -> float:
    """The largest difference a board's output may show, as a share of the host's range for that output."""
    return BOARD_MAX_ERROR[mode_of(mode)]


def board_tolerance(share: float, span: float, step: float) -> float:
    """What a board's output may differ by: `share` of the host's range for it, or `BOARD_STEPS` quantization steps
    (`step` 0 for a float output), and never less than float rounding."""
    return max(share * span, BOARD_STEPS * step * 1.0001, 1e-6)


def cosines(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The cosine similarity of each sample (the first axis), flattened; identical samples (zeros too) score 1."""
    r = np.asarray(reference, np.float64).reshape(len(reference), -1)
    c = np.asarray(other, np.float64).reshape(len(other), -1)
    dot = np.sum(r * c, axis=1)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(c, axis=1)
    identical = np.all(r == c, axis=1)
    return np.where(identical, 1.0, dot / np.maximum(norms, 1e-30))
