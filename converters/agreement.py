"""Numerical agreement of a converted `.tflite` with the model it came from, measured through the edgert runtime.

Float models are judged by the largest difference relative to the largest output (`max_rel_diff`); quantized ones
by the cosine similarity of each output, top-1 agreement for classifier-shaped outputs and SQNR. A poor result is a
warning in the report and on the terminal: the report's promise is that the `.tflite` computes what the model does.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

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


def _pair_outputs(reference: list[np.ndarray], converted: list[np.ndarray]) -> list[tuple[int, int]]:
    """Match reference outputs to the .tflite's: in order when the shapes agree in order, else by shape (the
    converter may store outputs in another order), keeping the order among outputs of the same shape."""
    if [r.shape for r in reference] == [c.shape for c in converted]:
        return list(enumerate(range(len(converted))))
    pairs, used = [], set()
    for i, r in enumerate(reference):
        j = next((j for j, c in enumerate(converted) if j not in used and c.shape == r.shape), None)
        if j is not None:
            used.add(j)
            pairs.append((i, j))
    return pairs


def _cosines(r: np.ndarray, c: np.ndarray) -> np.ndarray:
    r2, c2 = r.reshape(len(r), -1), c.reshape(len(c), -1)
    dot = np.sum(r2 * c2, axis=1)
    norms = np.linalg.norm(r2, axis=1) * np.linalg.norm(c2, axis=1)
    identical = np.all(r2 == c2, axis=1)
    return np.where(identical, 1.0, dot / np.maximum(norms, 1e-30))


def compare(mode: str, reference_name: str, inputs_name: str, reference: list[np.ndarray],
            converted: list[np.ndarray], names: Sequence[str]) -> Agreement:
    """Agreement of `converted` outputs (the .tflite's, sample-major) with `reference` outputs."""
    outputs = []
    for i, j in _pair_outputs(reference, converted):
        r, c = reference[i].astype(np.float64), converted[j].astype(np.float64)
        diff = np.abs(r - c)
        peak = float(np.max(np.abs(r))) if r.size else 0.0
        cos = _cosines(r, c)
        noise = float(np.sum((r - c) ** 2))
        sqnr = math.inf if noise == 0 else 10 * math.log10(max(float(np.sum(r ** 2)), 1e-30) / noise)
        top1 = float(np.mean(r.argmax(axis=-1) == c.argmax(axis=-1))) if r.ndim == 2 and r.shape[1] > 1 else None
        outputs.append(OutputAgreement(names[j] if j < len(names) else f"output {j}",
                                       float(diff.max()) if diff.size else 0.0,
                                       float(diff.max()) / peak if peak > 0 else float(diff.max(initial=0.0)),
                                       float(cos.mean()), float(cos.min()), sqnr, top1))
    agreement = Agreement(mode, reference_name, inputs_name, len(reference[0]) if reference else 0, tuple(outputs))
    bad_reference = sum(int(np.size(r) - np.isfinite(r).sum()) for r in reference)
    bad_converted = sum(int(np.size(c) - np.isfinite(c).sum()) for c in converted)
    return _with_warning(agreement, len(reference), len(converted), bad_reference, bad_converted)


def _with_warning(a: Agreement, n_reference: int, n_converted: int, bad_reference: int = 0,
                  bad_converted: int = 0) -> Agreement:
    from dataclasses import replace

    if bad_reference:
        why = (f"{a.reference} itself outputs NaN or infinity ({bad_reference} values on these {a.samples} "
               f"{a.inputs}), so agreement cannot be judged: check the model's weights and the inputs' range")
    elif bad_converted:
        why = f"the .tflite outputs NaN or infinity ({bad_converted} values) where {a.reference} does not"
    elif len(a.outputs) != n_reference or n_reference != n_converted:
        why = (f"the .tflite has {n_converted} output(s) and {a.reference} {n_reference}; {len(a.outputs)} could be "
               "matched by shape")
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


def _bare_name(tensor_name: str) -> str:
    """`serving_default_image:0` -> `image`: a converted input's name as the model called it."""
    name = re.sub(r":\d+$", "", tensor_name)
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def run_tflite(path: str, samples: list[np.ndarray], names: Sequence[str] = ()) -> tuple[list[np.ndarray], list[str]]:
    """The .tflite's outputs (dequantized) for each sample, one at a time (batch-1 models stay batch 1).

    `names` are the samples' input names: with several inputs, each goes to the .tflite input whose name holds it
    (`serving_default_image:0` for `image`), else they go in order."""
    import edgert

    model = edgert.load(path)
    order = list(range(len(samples)))
    if len(samples) > 1 and len(names) == len(samples):
        found = [next((k for k, name in enumerate(names) if name == _bare_name(spec.name)), None)
                 for spec in model.inputs]
        if None not in found and len(set(found)) == len(found):
            order = found
    per_sample = [model.run([samples[k][i:i + 1] for k in order]) for i in range(len(samples[0]))]
    outputs = [np.concatenate([s[k] for s in per_sample]) for k in range(len(per_sample[0]))]
    return outputs, [s.name for s in model.outputs]


def measure(mode: str, tflite_path: str, reference: Callable[[list[np.ndarray]], list[np.ndarray]],
            reference_name: str, samples: list[np.ndarray], inputs_name: str,
            input_names: Sequence[str] = ()) -> Agreement:
    """Run the reference and the .tflite on the same samples and compare."""
    expected = [np.asarray(o) for o in reference(samples)]
    got, names = run_tflite(tflite_path, samples, input_names)
    return compare(mode, reference_name, inputs_name, expected, got, names)
