"""Value ranges: what a model expects its inputs in, and refusing calibration data that disagrees with it.

Calibration data in the wrong range ruins an int8 model without any error (digits: 98.66% -> 11.58% held-out
accuracy for images scaled to 0..255 while the model trained on 0..1), so nothing here is silent: image folders need
a range the model states or the user gives, and arrays must agree with the training or evaluation data and with a
range the model states.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgert.errors import InputDataError

PIXELS = (0.0, 255.0)
IMAGE_RANGE_CHOICES = "0,1 (pixels / 255), -1,1 (MobileNet, Inception style) or 0,255 (raw pixels)"
FORCE_HINT = "pass --force-range if this is intended"
_INPUT_PREPROCESSING = ("Rescaling", "Normalization")


@dataclass(frozen=True)
class Declared:
    """The input range a model states through its first layer, and how."""

    value_range: tuple[float, float]
    why: str


def _first_layer(model):
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        if hasattr(layer, "layers") and type(layer).__name__ in ("Sequential", "Functional", "Model"):
            inner = _first_layer(layer)
            if inner is not None:
                return inner
            continue
        return layer
    return None


def declared_range(model) -> Declared | None:
    """The input range the model's first layer states: a `Rescaling` by 1/255 or 1/127.5 (or a `Normalization`
    whose mean is in the hundreds) takes raw pixels, 0..255; a `Rescaling` by about 1 or 2, or a `Normalization`
    with a mean below 1.5, takes 0..1. None when the model does not say (or for a SavedModel, whose layers edgert
    cannot see)."""
    layer = _first_layer(model) if model is not None else None
    kind = type(layer).__name__ if layer is not None else ""
    if kind == "Rescaling":
        scale = np.abs(np.asarray(layer.get_config().get("scale", 1.0), dtype=np.float64)).max()
        why = f"its first layer, {layer.name}, rescales by {scale:.4g}"
        if 0.9 <= scale * 255 <= 2.1:
            return Declared(PIXELS, why + ", so it takes raw pixels")
        if 0.9 <= scale <= 2.1:
            return Declared((0.0, 1.0), why + ", so it takes values in 0..1")
    elif kind == "Normalization":
        mean = np.asarray(getattr(layer, "mean", None) if getattr(layer, "mean", None) is not None else
                          layer.get_config().get("mean") or 0.0, dtype=np.float64)
        peak = float(np.abs(mean).max()) if mean.size else 0.0
        why = f"its first layer, {layer.name}, normalizes around {peak:.3g}"
        if peak > 2.0:
            return Declared(PIXELS, why + ", so it takes raw pixels")
        if peak > 0:
            return Declared((0.0, 1.0), why + ", so it takes values in 0..1")
    return None


def image_range_needed(folder, option: str) -> InputDataError:
    return InputDataError(f"{option} {folder} holds images and the model does not state the range it takes (no "
                          f"Rescaling or Normalization layer at its input): give --image-range LOW,HIGH, usually "
                          f"{IMAGE_RANGE_CHOICES}")


def declared_span(declared: Declared | None) -> list[Span]:
    if declared is None:
        return []
    low, high = declared.value_range
    return [Span(f"the model ({declared.why})", low, high, "expected")]


@dataclass(frozen=True)
class Span:
    """An array's value range, for comparing data sets."""

    what: str
    low: float
    high: float
    dtype: str

    @classmethod
    def of(cls, what: str, a: np.ndarray, dtype: str | None = None) -> Span:
        return cls(what, float(np.min(a)), float(np.max(a)), dtype or str(a.dtype))

    @property
    def scale(self) -> str:
        """'unit' for data within about -1..1 or 0..1, 'pixels' for data reaching well past it (0..255)."""
        return "unit" if max(abs(self.low), abs(self.high)) <= 1.5 else "pixels" if \
            max(abs(self.low), abs(self.high)) > 2.0 else "between"

    def describe(self) -> str:
        if self.dtype == "expected":
            return f"{self.what} expects {self.low:.3g}..{self.high:.3g}"
        return f"{self.what} spans {self.low:.3g}..{self.high:.3g} ({self.dtype})"


def check_calibration_range(calibration: list[np.ndarray] | None, calibration_dtype: str | None,
                            references: list[Span], source: str) -> None:
    """Refuse calibration arrays whose range disagrees with the training or evaluation data (or the range the model
    states): one in 0..255 where the others are in 0..1, or the other way round.

    Raises:
        InputDataError: naming both ranges and the fix.
    """
    if not calibration or len(calibration) != 1 or not references:
        return
    mine = Span.of(f"--calibration-data {source}", calibration[0], calibration_dtype)
    for ref in references:
        if {mine.scale, ref.scale} == {"unit", "pixels"}:
            raise InputDataError(f"{mine.describe()} but {ref.describe()}: calibrate with data in the range the "
                                 f"model sees in use (rescale one of them), or {FORCE_HINT}")
