"""Numerical agreement of a converted `.tflite` with the model it came from, measured through the edgert runtime.

Outputs are paired by name (the source's output names, the `.tflite`'s signature names), never by order or shape.
Float models are judged by the largest difference relative to the largest output (`max_rel_diff`); quantized ones
by the cosine similarity of each output, top-1 agreement for classifier-shaped outputs and SQNR. An output with an
attribute axis (a detector's 4 + C box and class channels) is compared channel by channel too, so that no channel
hides behind another: one cosine over a tensor of box pixels and scores stays near 1 while every score is lost.
A detector whose layout `edgert.tasks.boxes` recognises is judged by what decides its use: its detections, decoded
by the family's own rules from both models' outputs, matched at IoU 0.5 with the same class. A poor result is a
warning in the report and on the terminal: the report's promise is that the `.tflite` computes what the model does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from edgert.measure.agreement import FLOAT32_MAX_REL_DIFF, cosines, min_cosine

# The thresholds per mode are edgert.measure.agreement's, the ones the fleet's gates judge a board by too. A float32
# .tflite runs other kernels than its source (XNNPACK's reassociated sums, fused activations, folded constants):
# rounding that grows with depth and range. Basic Pitch's constant-Q front end measures 2.8e-4 of its largest output
# on uniform inputs (5e-5 on audio-like ones); a conversion bug moves outputs by far more. Below its mode's cosine a
# quantized model warns (float16 weights should barely move anything).
SAMPLES = 8
# A detector is compared on more pictures (detections are few per picture), when there are that many.
DETECTOR_SAMPLES = 32
# The share of the source's detections the .tflite must find (recall), and of its own that must be the source's
# (precision), at IoU 0.5 with the same class.
MIN_DETECTION_AGREEMENT = 0.95
# A channel whose largest difference exceeds this share of its own range has lost what it carries. A channel is judged
# alone where it spans at least 1% of the output's widest channel, or 0.1 (a probability that moves: a class score
# beside box pixels); one that stays near zero on these samples (objectness on a picture with nothing in it) is not.
MAX_CHANNEL_ERROR = 0.25
MIN_CHANNEL_SHARE = 0.01
MIN_CHANNEL_SPAN = 0.1


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
class ChannelAgreement:
    """One channel of an output along its attribute axis (a box coordinate, a class score), over all samples."""

    output: str
    axis: int
    channel: int
    label: str
    span: float  # the reference's range in this channel
    max_abs_diff: float

    @property
    def error(self) -> float:
        """The largest difference as a share of the channel's own range."""
        return self.max_abs_diff / self.span if self.span > 0 else (0.0 if self.max_abs_diff == 0 else math.inf)

    def describe(self) -> str:
        return (f"output {self.output} channel {self.channel} ({self.label}): max |diff| {self.max_abs_diff:.3g} "
                f"of its range {self.span:.3g}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["error"] = None if not math.isfinite(self.error) else self.error
        return d


@dataclass(frozen=True)
class DetectionAgreement:
    """The .tflite's detections against the source's, decoded the same way from each, on the same samples."""

    layout: str
    outputs: tuple[str, ...]
    reference: int  # detections the source made
    found: int  # detections the .tflite made
    matched: int  # of those, the source's (IoU >= 0.5, same class, one to one)
    conf: float
    iou: float = 0.5

    @property
    def recall(self) -> float:
        return self.matched / self.reference if self.reference else 1.0

    @property
    def precision(self) -> float:
        return self.matched / self.found if self.found else 1.0

    def describe(self) -> str:
        return (f"{self.matched} of {self.reference} detections kept (recall {self.recall:.2f}, precision "
                f"{self.precision:.2f} at IoU {self.iou:g}, same class; {self.layout} layout)")

    def to_dict(self) -> dict:
        return {**asdict(self), "recall": self.recall, "precision": self.precision}


@dataclass(frozen=True)
class Agreement:
    """How closely the `.tflite` reproduces `reference` on `samples` inputs (`inputs` says which)."""

    mode: str
    reference: str
    inputs: str
    samples: int
    outputs: tuple[OutputAgreement, ...]
    warning: str = ""
    channels: tuple[ChannelAgreement, ...] = ()  # every channel of each output that has an attribute axis
    detections: DetectionAgreement | None = None

    def worst_channel(self, outputs: tuple[str, ...] | None = None) -> ChannelAgreement | None:
        """The channel furthest off for its own range, among those wide enough to judge alone."""
        judged = [c for c in self.channels if (outputs is None or c.output in outputs) and self._judged(c)]
        return max(judged, key=lambda c: c.error, default=None)

    def _judged(self, c: ChannelAgreement) -> bool:
        widest = max((o.span for o in self.channels if o.output == c.output), default=0.0)
        return c.span >= min(MIN_CHANNEL_SHARE * widest, MIN_CHANNEL_SPAN)

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
        if self.detections is not None and self.detections.reference:
            head += f"; detections: {self.detections.describe()}"
        return f"{head} vs {self.reference} on {self.samples} {self.inputs}"

    def to_dict(self) -> dict:
        return {"mode": self.mode, "reference": self.reference, "inputs": self.inputs, "samples": self.samples,
                "max_rel_diff": self.max_rel_diff, "min_cosine": self.min_cosine,
                "outputs": [o.to_dict() for o in self.outputs], "warning": self.warning or None,
                "channels": [c.to_dict() for c in self.channels],
                "detections": None if self.detections is None else self.detections.to_dict()}


def attribute_axis(shape: tuple[int, ...]) -> int | None:
    """The axis of a sample-major output that holds attributes rather than positions: for (samples, 1, 4 + C, N) or
    (samples, 1, N, 5 + C) the short axis beside the long one; None for outputs without one (a classifier's
    (samples, classes), an image)."""
    if len(shape) < 3:
        return None
    inner = shape[1:]
    largest = max(inner)
    short = [a for a, n in enumerate(inner) if 1 < n <= 256 and n * 8 <= largest]
    return short[-1] + 1 if len(short) == 1 else None


def channel_label(layout: str | None, channel: int) -> str:
    """What a channel of a detector's output carries, by its family's layout."""
    from edgert.tasks import boxes as detect

    if layout == detect.YOLOV8:
        return ("box x", "box y", "box w", "box h")[channel] if channel < 4 else f"class {channel - 4} score"
    if layout in (detect.YOLOV5, detect.YOLOX, detect.YOLOX_RAW):
        if channel < 5:
            return ("box x", "box y", "box w", "box h", "objectness")[channel]
        return f"class {channel - 5} score"
    return f"channel {channel}"


def channel_agreement(name: str, r: np.ndarray, c: np.ndarray, layout: str | None = None) -> list[ChannelAgreement]:
    """Every channel of an output along its attribute axis (none when it has none)."""
    axis = attribute_axis(r.shape)
    if axis is None or r.shape != c.shape:
        return []
    rr, cc = np.moveaxis(r, axis, 0), np.moveaxis(c, axis, 0)
    out = []
    for k in range(rr.shape[0]):
        span = float(rr[k].max() - rr[k].min()) if rr[k].size else 0.0
        out.append(ChannelAgreement(name, axis, k, channel_label(layout, k), span,
                                    float(np.max(np.abs(rr[k] - cc[k]))) if rr[k].size else 0.0))
    return out


def detection_agreement(reference: Mapping[str, np.ndarray], converted: Mapping[str, np.ndarray],
                        input_hw: tuple[int, int] | None, conf: float = 0.25) -> DetectionAgreement | None:
    """Both models' detections on every sample, decoded with edgert.tasks.boxes, matched one to one; None when the
    outputs are not a layout the decoders know."""
    from edgert.tasks import boxes as detect

    if input_hw is None:
        return None
    names = [n for n in reference if n in converted]
    if not names:
        return None
    # one sample's shapes, with its batch of one, as the model itself has them
    layout = detect.recognise([(1, *reference[n].shape[1:]) for n in names], input_hw,
                              [reference[n][:1] for n in names])
    if layout is None:
        return None
    matched = found = total = 0
    for i in range(len(reference[names[0]])):
        want = detect.decode(layout, [reference[n][i:i + 1] for n in names], input_hw, conf=conf)
        got = detect.decode(layout, [converted[n][i:i + 1] for n in names], input_hw, conf=conf)
        m, f, t = detect.match(got, want)
        matched, found, total = matched + m, found + f, total + t
    return DetectionAgreement(layout, tuple(names), total, found, matched, conf)


def compare(mode: str, reference_name: str, inputs_name: str, reference: Mapping[str, np.ndarray],
            converted: Mapping[str, np.ndarray], input_hw: tuple[int, int] | None = None) -> Agreement:
    """Agreement of `converted` outputs (the .tflite's, by signature name, sample-major) with `reference` outputs
    (the source model's, by the names its author gave them). Outputs are paired by name only: two outputs can
    share a shape, so order and shape say nothing about which is which. With the input's height and width
    (`input_hw`), a recognised detector's detections are compared too."""
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
        cos = cosines(r, c)
        noise = float(np.sum((r - c) ** 2))
        sqnr = math.inf if noise == 0 else 10 * math.log10(max(float(np.sum(r ** 2)), 1e-30) / noise)
        top1 = float(np.mean(r.argmax(axis=-1) == c.argmax(axis=-1))) if r.ndim == 2 and r.shape[1] > 1 else None
        outputs.append(OutputAgreement(name, float(diff.max()) if diff.size else 0.0,
                                       float(diff.max()) / peak if peak > 0 else float(diff.max(initial=0.0)),
                                       float(cos.mean()), float(cos.min()), sqnr, top1))
    first = next(iter(reference.values()), None)
    paired = {n: (np.asarray(reference[n], np.float64), np.asarray(converted[n], np.float64)) for n in reference
              if n in converted and np.shape(reference[n]) == np.shape(converted[n])}
    detections = detection_agreement({n: r for n, (r, _) in paired.items()},
                                     {n: c for n, (_, c) in paired.items()}, input_hw) if paired else None
    layout = detections.layout if detections is not None else None
    channels = tuple(ch for n, (r, c) in paired.items() for ch in channel_agreement(n, r, c, layout))
    agreement = Agreement(mode, reference_name, inputs_name, len(first) if first is not None else 0, tuple(outputs),
                          channels=channels, detections=detections)
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
    elif a.detections is not None and a.detections.reference and min(a.detections.recall, a.detections.precision) \
            < MIN_DETECTION_AGREEMENT:
        d = a.detections
        worst = a.worst_channel(d.outputs)
        why = (f"the .tflite's detections differ from {a.reference}'s: it keeps {d.matched} of {d.reference} "
               f"(recall {d.recall:.2f}, precision {d.precision:.2f} at IoU {d.iou:g}, same class; expected >= "
               f"{MIN_DETECTION_AGREEMENT:g}) on {a.samples} {a.inputs}"
               + (f"; the furthest off is {worst.describe()}" if worst is not None else ""))
    elif a.worst_channel() is not None and a.worst_channel().error > MAX_CHANNEL_ERROR and not (
            a.detections is not None and a.detections.reference):
        worst = a.worst_channel()
        why = (f"{worst.describe()} in the .tflite against {a.reference}: {worst.error:.0%} of that range (expected "
               f"<= {MAX_CHANNEL_ERROR:.0%}), though the whole output's cosine is "
               f"{min(o.cosine for o in a.outputs if o.name == worst.output):.4f}; one channel lost what it carries")
    elif a.mode == "float32":
        why = "" if a.max_rel_diff <= FLOAT32_MAX_REL_DIFF else (
            f"the float32 .tflite differs from {a.reference} by {a.max_rel_diff:.1e} of the largest output "
            f"(expected <= {FLOAT32_MAX_REL_DIFF:g})")
    else:
        floor = min_cosine(a.mode)
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


def input_size(samples: Sequence[np.ndarray]) -> tuple[int, int] | None:
    """The height and width of an image input (channel-last or channel-first, 1 to 4 channels), or None."""
    for a in samples:
        shape = np.shape(a)
        if len(shape) == 4:
            if shape[-1] in (1, 2, 3, 4):
                return int(shape[1]), int(shape[2])
            if shape[1] in (1, 2, 3, 4):
                return int(shape[2]), int(shape[3])
    return None


def measure(mode: str, tflite_path: str, reference: Callable[[list[np.ndarray]], Mapping[str, np.ndarray]],
            reference_name: str, samples: list[np.ndarray], inputs_name: str,
            input_names: Sequence[str]) -> Agreement:
    """Run the reference and the .tflite on the same samples (one array per input, named by `input_names`) and
    compare their outputs by name. `SAMPLES` of them; a detector, up to `DETECTOR_SAMPLES`."""
    from edgert.tasks import boxes as detect

    first = [a[:SAMPLES] for a in samples]
    expected = {k: np.asarray(v) for k, v in reference(first).items()}
    hw = input_size(samples)
    more = len(samples[0]) > SAMPLES and hw is not None and detect.recognise(
        [(1, *v.shape[1:]) for v in expected.values()], hw, [v[:1] for v in expected.values()]) is not None
    if more:
        first = [a[:DETECTOR_SAMPLES] for a in samples]
        expected = {k: np.asarray(v) for k, v in reference(first).items()}
    got = run_tflite(tflite_path, dict(zip(input_names, first)))
    return compare(mode, reference_name, inputs_name, expected, got, hw)
