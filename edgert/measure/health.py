"""A rollout's health check on one board: the model's outputs against the host's, and its latency against the version
it replaces. Runtime code only (numpy and edgert), so a bundle runs it on the board: `python3 BUNDLE check REF.npz`.

The reference file is an `.npz` the host writes once per rollout (`make_reference`): `input/NAME` and `output/NAME`
with the samples on the first axis, and `__meta__`, a JSON string with the tolerance for the model's mode.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgert.errors import InputDataError
from edgert.measure.agreement import board_max_error, board_tolerance, cosines, min_cosine

# A board runs the very .tflite this host ran, so its outputs may differ only as kernels round (XNNPACK against the
# reference kernels, as under qemu): edgert.measure.agreement's board tolerance for the model's mode, read from the
# file (ModelInfo.quantization), judges each output; its cosine is reported against the same mode's floor.
META = "__meta__"
# The latency gate fails a board only when the new version is slower than --max-slowdown beyond the noise measured
# in the same check (the lower end of the interval over interleaved rounds) and slower by at least this much in
# absolute p50: a few microseconds are timer and scheduler noise on any board, whatever the ratio.
LATENCY_FLOOR_MS = 0.05
LATENCY_ROUNDS = 5


@dataclass(frozen=True)
class OutputAgreement:
    """One output on the board against the host: worst-sample cosine and largest absolute difference, which must
    stay within `tolerance_abs` (a share of the host's range for it, or two quantization steps)."""

    name: str
    min_cosine: float
    max_abs_diff: float
    tolerance_abs: float
    ok: bool


@dataclass(frozen=True)
class CheckResult:
    """What `python3 BUNDLE check` measured on the board."""

    samples: int
    min_cosine_required: float
    outputs: tuple[OutputAgreement, ...]
    p50_ms: float
    baseline_p50_ms: float | None  # the version this one replaces, measured in the same process, interleaved
    delegate: str
    throttled: bool
    throttle_reason: str
    # the slowdown's spread: the lowest and highest p50 ratio of the interleaved rounds (with 5 rounds, the median
    # ratio lies inside with 94% confidence), widened to hold `slowdown`
    slowdown_low: float | None = None
    slowdown_high: float | None = None
    max_slowdown: float | None = None
    floor_ms: float = LATENCY_FLOOR_MS

    @property
    def agrees(self) -> bool:
        return all(o.ok for o in self.outputs)

    @property
    def slowdown(self) -> float | None:
        return self.p50_ms / self.baseline_p50_ms if self.baseline_p50_ms else None

    def latency(self) -> str:
        """The comparison with the replaced version as one phrase, or '' when there was none."""
        if self.slowdown is None:
            return ""
        spread = (f" (rounds {self.slowdown_low:.2f}-{self.slowdown_high:.2f}x)"
                  if self.slowdown_low is not None else "")
        return (f"p50 {self.p50_ms:.3f} ms is {self.slowdown:.2f}x the replaced version's {self.baseline_p50_ms:.3f}"
                f" ms{spread}")

    def latency_failure(self) -> str:
        """Why the latency gate fails, or '': slower than `max_slowdown` beyond the rounds' spread (its lowest
        ratio), and by more than `floor_ms` in p50."""
        if not self.max_slowdown or self.slowdown is None:
            return ""
        low = self.slowdown_low if self.slowdown_low is not None else self.slowdown
        if low <= self.max_slowdown or self.p50_ms - self.baseline_p50_ms <= self.floor_ms:
            return ""
        return f"{self.latency()} on this board, over --max-slowdown {self.max_slowdown:g}"

    def disagreement(self) -> str:
        """The worst output as one phrase, or '' when every output agrees."""
        bad = [o for o in self.outputs if not o.ok]
        if not bad:
            return ""
        worst = max(bad, key=lambda o: o.max_abs_diff / max(o.tolerance_abs, 1e-30))
        return (f"output {worst.name} disagrees with the host: max |diff| {worst.max_abs_diff:.4g} > "
                f"{worst.tolerance_abs:.4g} allowed (cosine {worst.min_cosine:.4f})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(agrees=self.agrees, slowdown=self.slowdown, disagreement=self.disagreement(), latency=self.latency(),
                 latency_failure=self.latency_failure())
        return d


def make_reference(model_path: str | os.PathLike, output: str | os.PathLike, *,
                   inputs: str | os.PathLike | None = None, samples: int = 4, seed: int = 0) -> dict:
    """Run `model_path` here (the default CPU delegate) and write the reference file a rollout checks boards with.

    Args:
        inputs: `.npy`/`.npz` arrays (by input name, the samples on the first axis) [default: `samples` seeded
            random inputs, as `edgert bench` makes them].

    Returns: the file's `__meta__` (samples, min_cosine, quantization).

    Raises:
        InputDataError: the inputs do not fit the model.
        ModelFormatError: not a model.
    """
    from edgert.runtime.arrays import load_arrays, random_inputs
    from edgert.tflite.info import inspect_model
    from edgert.runtime.model import load

    info = inspect_model(model_path)
    model = load(model_path)
    if inputs is None:
        batches = [dict(zip((s.name for s in model.inputs), random_inputs(model.inputs, seed + i)))
                   for i in range(samples)]
    else:
        arrays = load_arrays(inputs)
        if len(arrays) == 1 and len(model.inputs) == 1:
            arrays = {model.inputs[0].name: next(iter(arrays.values()))}
        count = len(next(iter(arrays.values())))
        batches = [{name: a[i] for name, a in arrays.items()} for i in range(count)]
    results = [model.run_by_name(batch) for batch in batches]
    data = {f"input/{name}": np.stack([b[name] for b in batches]) for name in batches[0]}
    data.update({f"output/{name}": np.stack([r[name] for r in results]) for name in results[0]})
    scales = {s.name: max(s.scale) for s in model.outputs if s.scale}  # per-axis: the coarsest step
    meta = {"samples": len(batches), "quantization": info.quantization,
            "min_cosine": min_cosine(info.quantization), "max_error": board_max_error(info.quantization),
            "output_scales": scales}
    data[META] = np.array(json.dumps(meta))
    from edgert.files import atomic_path

    with atomic_path(Path(output)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **data)
    return meta


def check(model_path: str | os.PathLike, reference: str | os.PathLike, *, delegate: str | Sequence[str] = "auto",
          baseline: str | os.PathLike | None = None, baseline_delegate: str | Sequence[str] | None = None,
          runs: int = 50, rounds: int = LATENCY_ROUNDS, max_slowdown: float | None = None,
          floor_ms: float = LATENCY_FLOOR_MS) -> CheckResult:
    """Run the model on the reference inputs and compare by output name; then time it against `baseline` in
    `rounds` interleaved rounds (their order alternating), so both see the same load on the board: the p50s of all
    runs, and the spread of the rounds' ratios, which `CheckResult.latency_failure` judges against `max_slowdown`.

    Raises:
        InputDataError: the reference file does not fit this model (another model's file).
    """
    from edgert.measure.bench import bench
    from edgert.runtime.model import load

    try:
        with np.load(reference, allow_pickle=False) as ref:
            arrays = {key: ref[key] for key in ref.files}
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{reference} is not a reference file ({exc})") from None
    meta = json.loads(str(arrays.pop(META, np.array("{}"))))
    model = load(model_path, delegate=delegate)
    inputs = {k[6:]: v for k, v in arrays.items() if k.startswith("input/")}
    expected = {k[7:]: v for k, v in arrays.items() if k.startswith("output/")}
    missing = sorted(set(expected) - {s.name for s in model.outputs})
    if missing or set(inputs) != {s.name for s in model.inputs}:
        raise InputDataError(f"{reference} was made for another model (outputs {', '.join(sorted(expected))}); "
                             "make the reference from the model being rolled out")
    count = len(next(iter(inputs.values())))
    got = [model.run_by_name({name: a[i] for name, a in inputs.items()}) for i in range(count)]
    mode = str(meta.get("quantization", ""))
    floor = float(meta.get("min_cosine", min_cosine(mode)))
    share = float(meta.get("max_error", board_max_error(mode)))
    outputs = []
    for name, want in expected.items():
        have = np.stack([got[i][name] for i in range(count)]).astype(np.float64)
        diff = float(np.max(np.abs(want.astype(np.float64) - have))) if want.size else 0.0
        span = float(np.max(want) - np.min(want)) if want.size else 0.0
        tolerance = board_tolerance(share, span, float(meta.get("output_scales", {}).get(name, 0.0)))
        outputs.append(OutputAgreement(name, float(np.min(cosines(want, have))), diff, tolerance, diff <= tolerance))
    old = load(baseline, delegate=baseline_delegate or delegate) if baseline else None
    rounds, per_round = max(1, rounds), max(1, runs // max(1, rounds))
    new_ms: list[np.ndarray] = []
    old_ms: list[np.ndarray] = []
    throttled, reason = False, ""
    for i in range(rounds):
        order = ((model, new_ms), (old, old_ms)) if i % 2 == 0 else ((old, old_ms), (model, new_ms))
        for which, samples in order:
            if which is None:
                continue
            result = bench(which, runs=per_round, warmup=3, power=None, idle_s=0, thermal=which is model)
            samples.append(result.latency.samples_ms)
            if result.thermal_stats.throttled:
                throttled, reason = True, result.thermal_stats.reason
    p50 = float(np.median(np.concatenate(new_ms)))
    base = low = high = None
    if old_ms:
        base = float(np.median(np.concatenate(old_ms)))
        ratios = [float(np.median(n) / np.median(o)) for n, o in zip(new_ms, old_ms)]
        point = p50 / base
        low, high = min(ratios + [point]), max(ratios + [point])
    return CheckResult(count, floor, tuple(outputs), p50, base, model.delegation.describe(), throttled, reason, low,
                       high, max_slowdown, floor_ms)
