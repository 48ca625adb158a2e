"""Numerical agreement of a converted `.tflite` with the model it came from, measured through the edgert runtime.

Outputs are paired by name (the source's output names, the `.tflite`'s signature names), never by order or shape.
Float models are judged by the largest difference relative to the largest output (`max_rel_diff`); quantized ones
by the cosine similarity of each output, top-1 agreement for classifier-shaped outputs and SQNR. A poor result is a
warning in the report and on the terminal: the report's promise is that the `.tflite` computes what the model does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

FLOAT32_MAX_REL_DIFF = 1e-4
# Cosine similarity below which a quantized mode warns (per mode; float16 weights should barely move anything).
MIN_COSINE = {"float16": 0.999, "dynamic": 0.98, "int8": 0.98, "edgetpu": 0.98, "int16x8": 0.99}
SAMPLES = 8


@dataclass(frozen=True)
class OutputAgreement:
    """One output of the `.tflite` against the same output of the reference model, over all samples."""

    name: str
    max_abs_diff: float
    max_rel_diff: float  # max |tflite - reference| / max |reference|
    cosine: float  # mean over samples of the cosine similarity of the flattened outputs
    min_cosine: float
    sqnr_db: float  # 10 log10(sum reference^2 / sum error^2); inf when identical
    top1: float | None  # fraction of samples whose argmax agrees, for (batch, classes) outputs

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Agreement:
    """How closely the `.tflite` reproduces `reference` on `samples` inputs (`inputs` says which)."""

    mode: str
    reference: str
    inputs: str
    samples: int
    outputs: tuple[OutputAgreement, ...]
    warning: str = ""

    @property
    def max_rel_diff(self) -> float:
        return max((o.max_rel_diff for o in self.outputs), default=0.0)

    @property
    def min_cosine(self) -> float:
        return min((o.min_cosine for o in self.outputs), default=1.0)

    def describe(self) -> str:
        if not self.outputs:
            return f"no output could be paired by name with {self.reference}"
        if self.mode == "float32":
            head = f"max relative difference {self.max_rel_diff:.1e}"
        else:
            head = f"cosine {min(o.cosine for o in self.outputs):.4f} (worst sample {self.min_cosine:.4f})"
            top = [o.top1 for o in self.outputs if o.top1 is not None]
            if top:
                head += f", top-1 agreement {min(top):.0%}"
            sqnr = min(o.sqnr_db for o in self.outputs)
            head += f", SQNR {sqnr:.1f} dB" if math.isfinite(sqnr) else ", identical"
        return f"{head} vs {self.reference} on {self.samples} {self.inputs}"

    def to_dict(self) -> dict:
        return {"mode": self.mode, "reference": self.reference, "inputs": self.inputs, "samples": self.samples,
                "max_rel_diff": self.max_rel_diff, "min_cosine": self.min_cosine,
                "outputs": [o.to_dict() for o in self.outputs], "warning": self.warning or None}


def _cosines(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    r2, c2 = r.reshape(len(r), -1), c.reshape(len(c), -1)
    dot = np.sum(r2 * c2, axis=1)
    norms = np.linalg.norm(r2, axis=1) * np.linalg.norm(c2, axis=1)
    identical = np.all(r2 == c2, axis=1)
    return np.where(identical, 1.0, dot / np.maximum(norms, 1e-30))


def compare(mode: str, reference_name: str, inputs_name: str, reference: Mapping[str, np.ndarray],
            converted: Mapping[str, np.ndarray]) -> Agreement:
    """Agreement of `converted` outputs (the .tflite's, by signature name, sample-major) with `reference` outputs
    (the source model's, by the names its author gave them). Outputs are paired by name only: two outputs can
    share a shape, so order and shape say nothing about which is which."""
    outputs, shapes = [], []
    for name, r in reference.items():
        if name not in converted:
            continue
        r, c = np.asarray(r, np.float64), np.asarray(converted[name], np.float64)
        if r.shape != c.shape:
            shapes.append((name, r.shape, c.shape))
            outputs.append(OutputAgreement(name, math.inf, math.inf, 0.0, 0.0, -math.inf, None))
            continue
        diff = np.abs(r - c)
        peak = float(np.max(np.abs(r))) if r.size else 0.0
        cos = _cosines(r, c)
        noise = float(np.sum((r - c) ** 2))
        sqnr = math.inf if noise == 0 else 10 * math.log10(max(float(np.sum(r ** 2)), 1e-30) / noise)
        top1 = float(np.mean(r.argmax(axis=-1) == c.argmax(axis=-1))) if r.ndim == 2 and r.shape[1] > 1 else None
        outputs.append(OutputAgreement(name, float(diff.max()) if diff.size else 0.0,
                                       float(diff.max()) / peak if peak > 0 else float(diff.max(initial=0.0)),
                                       float(cos.mean()), float(cos.min()), sqnr, top1))
    first = next(iter(reference.values()), None)
    agreement = Agreement(mode, reference_name, inputs_name, len(first) if first is not None else 0, tuple(outputs))
    bad_reference = sum(int(np.size(r) - np.isfinite(r).sum()) for r in reference.values())
    bad_converted = sum(int(np.size(c) - np.isfinite(c).sum()) for c in converted.values())
    unmatched = ([n for n in reference if n not in converted], [n for n in converted if n not in reference])
    return _with_warning(agreement, unmatched, shapes, bad_reference, bad_converted)


def _with_warning(a: Agreement, unmatched: tuple[list[str], list[str]] = ([], []), shapes=(),
                  bad_reference: int = 0, bad_converted: int = 0) -> Agreement:
    from dataclasses import replace

    only_reference, only_converted = unmatched
    if only_reference or only_converted:
        why = (f"outputs are paired by name, and {a.reference}'s output(s) {', '.join(only_reference) or 'none'} "
               f"have no namesake in the .tflite, whose unmatched output(s) are {', '.join(only_converted) or 'none'}"
               "; those were not compared (the .tflite's signature should carry the model's output names)")
    elif shapes:
        name, want, got = shapes[0]
        why = f"output {name} has shape {tuple(got)} in the .tflite and {tuple(want)} in {a.reference}"
    elif bad_reference:
        why = (f"{a.reference} itself outputs NaN or infinity ({bad_reference} values on these {a.samples} "
               f"{a.inputs}), so agreement cannot be judged: check the model's weights and the inputs' range")
    elif bad_converted:
        why = f"the .tflite outputs NaN or infinity ({bad_converted} values) where {a.reference} does not"
    elif a.mode == "float32":
        why = "" if a.max_rel_diff <= FLOAT32_MAX_REL_DIFF else (
            f"the float32 .tflite differs from {a.reference} by {a.max_rel_diff:.1e} of the largest output "
            f"(expected <= {FLOAT32_MAX_REL_DIFF:g})")
    else:
        floor = MIN_COSINE.get(a.mode, 0.98)
        worst = min(a.outputs, key=lambda o: o.cosine)
        why = "" if worst.cosine >= floor else (
            f"poor {a.mode} agreement with {a.reference}: cosine {worst.cosine:.3f} on output {worst.name} (expected "
            f">= {floor:g}); check that the calibration data is what the model sees in use (its value range above "
            "all), or keep sensitive layers in float (edgert optimize)")
    return replace(a, warning=why)


def run_tflite(path: str, samples: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The .tflite's outputs (dequantized) by signature name for each sample, one at a time (batch-1 models stay
    batch 1). `samples` are keyed by input name: the signature's names, or the tensor names of a file without one;
    a single input is taken whatever its name."""
    import edgert

    model = edgert.load(path)
    arrays = list(samples.values())
    if len(arrays) == 1 and len(model.inputs) == 1:
        feed = lambda i: arrays[0][i:i + 1]  # noqa: E731
    else:
        feed = lambda i: {k: v[i:i + 1] for k, v in samples.items()}  # noqa: E731
    per_sample = [model.run_by_name(feed(i)) for i in range(len(arrays[0]))]
    return {name: np.concatenate([s[name] for s in per_sample]) for name in per_sample[0]}


def measure(mode: str, tflite_path: str, reference: Callable[[list[np.ndarray]], Mapping[str, np.ndarray]],
            reference_name: str, samples: list[np.ndarray], inputs_name: str,
            input_names: Sequence[str]) -> Agreement:
    """Run the reference and the .tflite on the same samples (one array per input, named by `input_names`) and
    compare their outputs by name."""
    expected = {k: np.asarray(v) for k, v in reference(samples).items()}
    got = run_tflite(tflite_path, dict(zip(input_names, samples)))
    return compare(mode, reference_name, inputs_name, expected, got)
