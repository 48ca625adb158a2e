"""Detectors in int8: outputs whose channels span ranges orders of magnitude apart, found from calibration statistics,
and the tail of the graph that must stay in float so that one int8 scale does not crush the small channels.

A YOLOv8 export ends in one tensor holding box coordinates in input pixels (0..640) beside class scores (0..1).
Quantized with one scale, a step is 2.5 pixels, so every score becomes 0 or 2.5: the "int8 detects nothing"
failure. Ultralytics normalises the boxes in the graph for its TFLite export; edgert keeps the outputs as the source
defines them and leaves the operators that join the two ranges (the last concatenation, and the reshapes between
it and the output) in float, through TFLite's selective quantization. Everything before them stays int8.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

# A channel given fewer int8 levels than this by the tensor's one scale has lost its resolution.
MIN_LEVELS = 16
_LEVELS = 255


class MixedRange(NamedTuple):
    """An output (or tensor) whose channels along `axis` cover ranges too far apart for one int8 scale."""

    axis: int
    small: tuple[int, ...]  # the channels one scale would crush
    span: float  # the tensor's whole range
    small_span: float  # the widest of the crushed channels' ranges

    def describe(self, name: str) -> str:
        shown = ", ".join(map(str, self.small[:6])) + (" ..." if len(self.small) > 6 else "")
        step = self.span / _LEVELS
        return (f"{name} holds channels spanning {self.span:.3g} beside channels {shown} spanning at most "
                f"{self.small_span:.3g} (axis {self.axis}): one int8 scale has steps of {step:.3g}, "
                f"{self.small_span / step:.1f} of them for those channels")


def _candidate_axes(shape: tuple[int, ...]) -> list[int]:
    """Axes (of a tensor without its sample axis) that can carry attributes: not the largest, at most 256 long."""
    if len(shape) < 2:
        return []
    largest = max(shape)
    return [a for a, n in enumerate(shape) if 1 < n <= 256 and n < largest]


def mixed_range(values: np.ndarray) -> MixedRange | None:
    """Whether one int8 scale over `values` (samples on axis 0) would leave some channel fewer than MIN_LEVELS
    steps, along any axis that can carry attributes; the worst such axis."""
    values = np.asarray(values, np.float64)
    if values.ndim < 3 or values.size == 0 or not np.all(np.isfinite(values)):
        return None
    span = float(values.max() - values.min())
    if span <= 0:
        return None
    worst = None
    for axis in _candidate_axes(values.shape[1:]):
        moved = np.moveaxis(values, axis + 1, 0).reshape(values.shape[axis + 1], -1)
        spans = moved.max(axis=1) - moved.min(axis=1)
        small = [c for c, s in enumerate(spans) if 0 < s < span * MIN_LEVELS / _LEVELS]
        if small and spans.max() > span * 0.5:  # a channel as wide as the tensor beside ones a scale crushes
            found = MixedRange(axis + 1, tuple(small), span, float(max(spans[small])))
            if worst is None or found.small_span < worst.small_span:
                worst = found
    return worst


def mixed_range_outputs(outputs: dict[str, np.ndarray]) -> dict[str, MixedRange]:
    """The outputs (by name, samples on axis 0) whose channels one int8 scale cannot hold together."""
    found = {}
    for name, values in outputs.items():
        mixed = mixed_range(values)
        if mixed is not None:
            found[name] = mixed
    return found


def float_tail(float_model: bytes, samples: dict[str, np.ndarray], outputs: Sequence[str]) -> list[str]:
    """The operators to keep in float for the outputs (signature names) whose ranges mix: from each such output back
    through every operator whose result still mixes ranges. `float_model` carries a signature; `samples` are by its
    input names. Returns the operators' output tensor names, which TFLite's selective quantization and
    ai-edge-quantizer both take."""
    import warnings

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgert.tflite.flatbuffer import parse

    parsed = parse(float_model, "the float model")
    signature = parsed.main_signature()
    graph = parsed.subgraphs[signature.subgraph if signature else 0]
    with warnings.catch_warnings():  # "for debugging purposes only": which this is
        warnings.simplefilter("ignore")
        # without XNNPACK, whose delegated partitions keep no intermediate tensors
        interpreter = Interpreter(model_content=float_model, experimental_preserve_all_tensors=True,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    feeds = dict(signature.inputs) if signature else {d["name"]: d["index"] for d in interpreter.get_input_details()}
    wanted = dict(signature.outputs) if signature else {}
    dtypes = {d["index"]: d["dtype"] for d in interpreter.get_input_details()}
    collected: dict[int, list[np.ndarray]] = {}
    for i in range(len(next(iter(samples.values())))):
        for name, array in samples.items():
            interpreter.set_tensor(feeds[name], np.asarray(array[i:i + 1], dtypes[feeds[name]]))
        interpreter.invoke()
        for op in graph.operators:
            for t in op.outputs:
                if t >= 0:
                    collected.setdefault(t, []).append(np.array(interpreter.get_tensor(t)))
    producer = {t: op for op in graph.operators for t in op.outputs if t >= 0}
    starts = [wanted[name] for name in outputs if name in wanted]
    keep, seen = [], set()
    pending = list(starts)
    while pending:
        tensor = pending.pop()
        op = producer.get(tensor)
        if op is None or id(op) in seen:
            continue
        values = collected.get(tensor)
        if values is None or (tensor not in starts and mixed_range(np.concatenate(values)) is None):
            continue
        seen.add(id(op))
        keep.extend(graph.tensors[t].name for t in op.outputs if t >= 0)
        pending.extend(t for t in op.inputs if t >= 0 and t in producer)
    return keep
