"""Structured (channel) pruning: remove whole filters and rebuild a dense, physically smaller Keras model.

The model's graph is read into channel spaces (the last axis of each tensor). Layers that make new channels
(Conv2D, Dense, SeparableConv2D's pointwise part) open a space; layers that carry their input's channels
(BatchNormalization, DepthwiseConv2D, activations, pooling, padding, dropout, a Reshape that keeps the last axis)
pass it on; element-wise merges (Add, Subtract, Multiply, Maximum, Minimum, Average) join their inputs' spaces into
one dependency group, pruned with one index set (residual connections, squeeze-excite gates). Concatenate maps
channel ranges, Flatten before a Dense maps spatial blocks, global pooling maps directly. Anything else (Lambda,
custom layers, a Reshape or Permute that moves the last axis, Conv2DTranspose) stops a group: the channels it
touches are kept and the report names it. The model's inputs and outputs keep their width.

Importance is the L2 norm of each channel's filters summed over the group's producers (or |gamma| of its
BatchNormalizations, `criterion="bn"`); `policy="uniform"` removes the same fraction from every group, `"global"`
ranks all channels together (normalised per group) with a floor of `min_channels`. Counts are rounded to a multiple
of `multiple` where a group has at least 32 channels. The anchors: torch-pruning's dependency graph (DepGraph) and
NNCF's filter pruning, for Keras functional models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgert.converters.recipe import ChannelPruneConfig
from edgert.errors import InputDataError

_PASS = {"Rescaling", "Normalization", "BatchNormalization", "DepthwiseConv2D", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax",
         "ThresholdedReLU", "Dropout", "SpatialDropout2D", "SpatialDropout1D", "GaussianNoise", "GaussianDropout",
         "ZeroPadding2D", "ZeroPadding1D", "Cropping2D", "MaxPooling2D", "AveragePooling2D", "MaxPooling1D",
         "AveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "GlobalAveragePooling1D",
         "GlobalMaxPooling1D", "UpSampling2D", "LayerNormalization", "ActivityRegularization", "Identity",
         "TFOpLambda_identity"}
_MERGE = {"Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average"}
# TensorFlow ops recorded as layers (tf_keras's TFOpLambda; Keras 3 ops in a rebuilt Keras 3 model): element-wise,
# so with one tensor input (the other a number, as in hard-swish's x * relu6(x + 3) / 6) they carry its channels,
# with two they merge them.
_ELEMENTWISE_OPS = {"__operators__.add", "math.add", "math.multiply", "__operators__.mul", "math.truediv",
                    "__operators__.truediv", "math.subtract", "__operators__.sub", "nn.relu", "nn.relu6",
                    "math.sigmoid", "nn.silu", "nn.swish", "math.tanh", "math.maximum", "math.minimum",
                    "nn.gelu", "math.negative", "__operators__.neg"}
_KERAS3_ELEMENTWISE = {"Add", "Multiply", "Divide", "TrueDivide", "Subtract", "Maximum", "Minimum", "Negative",
                       "Relu", "Relu6", "Sigmoid", "HardSigmoid", "HardSilu", "Silu", "Tanh", "Gelu", "Abs"}
_PRODUCER = {"Conv2D", "Conv1D", "Dense", "SeparableConv2D"}


class _Groups:
    """Union-find over channel spaces, with a width and a 'fixed' mark per root."""

    def __init__(self):
        self.parent: list[int] = []
        self.width: list[int] = []
        self.fixed: dict[int, str] = {}  # root -> why it keeps its width

    def new(self, width: int, fixed: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.width.append(width)
        if fixed:
            self.fixed[len(self.parent) - 1] = fixed
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        self.parent[b] = a
        why = self.fixed.pop(b, None)
        if why and a not in self.fixed:
            self.fixed[a] = why

    def fix(self, a: int, why: str) -> None:
        self.fixed.setdefault(self.find(a), why)


@dataclass
class _Tensor:
    """A layer output's channels: one space, or (after Concatenate) a list of spaces side by side."""

    parts: list[int]  # space ids, in order along the last axis
    spatial: int = 1  # for a Flatten output: positions per channel (channels vary fastest)


@dataclass
class LayerReport:
    name: str
    kind: str
    channels_before: int
    channels_after: int
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int


@dataclass
class ChannelPruneReport:
    """What was removed: per layer and for the model, and the layers that stopped a group (kept their channels)."""

    layers: list[LayerReport]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    groups: int
    pruned_groups: int
    kept: dict[str, str] = field(default_factory=dict)  # layer -> why its channels were kept
    # p50 of the unpruned and the pruned .tflite (same mode), single-thread, measured here after conversion
    latency_before_ms: float | None = None
    latency_after_ms: float | None = None

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    def to_dict(self) -> dict:
        return {"params_before": self.params_before, "params_after": self.params_after,
                "macs_before": self.macs_before, "macs_after": self.macs_after,
                "macs_ratio": round(self.macs_ratio, 4), "params_ratio": round(self.params_ratio, 4),
                "groups": self.groups, "pruned_groups": self.pruned_groups, "kept": dict(self.kept),
                "latency_before_ms": self.latency_before_ms, "latency_after_ms": self.latency_after_ms,
                "layers": [vars(layer) for layer in self.layers]}


def _kind(layer) -> str:
    return type(layer).__name__


def _inbound(layer) -> list:
    """The layers (and their output index) that feed `layer`'s first call."""
    node = layer._inbound_nodes[0]
    out = []
    for tensor in node.input_tensors if isinstance(node.input_tensors, list) else [node.input_tensors]:
        history = tensor._keras_history
        out.append(history.layer)
    return out


def _analyse(model):
    """Channel spaces per layer output, the groups, and why some are fixed."""
    groups = _Groups()
    tensors: dict[str, _Tensor] = {}
    stops: dict[str, str] = {}
    for layer in model.layers:
        kind = _kind(layer)
        shape = layer.output_shape
        if isinstance(shape, list):
            shape = shape[0]
        width = int(shape[-1]) if shape and shape[-1] is not None else 0
        if kind == "InputLayer":
            tensors[layer.name] = _Tensor([groups.new(width, "a model input")])
            continue
        if len(layer._inbound_nodes) != 1:
            stops[layer.name] = "a layer called more than once (shared weights)"
        inputs = [tensors[p.name] for p in _inbound(layer)]
        spaces = [s for t in inputs for s in t.parts]
        if layer.name in stops:
            for s in spaces:
                groups.fix(s, f"{layer.name}: {stops[layer.name]}")
            tensors[layer.name] = _Tensor([groups.new(width, stops[layer.name])])
        elif kind in _PRODUCER:
            if kind == "SeparableConv2D" and layer.depth_multiplier != 1 or \
                    kind in ("Conv2D", "Conv1D") and getattr(layer, "groups", 1) != 1:
                for s in spaces:
                    groups.fix(s, f"{layer.name}: {kind} with groups or a depth multiplier")
            tensors[layer.name] = _Tensor([groups.new(width)])
        elif _elementwise_op(layer) and all(len(t.parts) == 1 for t in inputs):
            for t in inputs[1:]:
                groups.union(inputs[0].parts[0], t.parts[0])
            tensors[layer.name] = _Tensor([inputs[0].parts[0]], inputs[0].spatial)
        elif kind in _PASS or (kind == "Reshape" and _keeps_last_axis(layer)):
            if kind == "DepthwiseConv2D" and layer.depth_multiplier != 1:
                for s in spaces:
                    groups.fix(s, f"{layer.name}: DepthwiseConv2D with depth_multiplier {layer.depth_multiplier}")
                tensors[layer.name] = _Tensor([groups.new(width, "after a depth multiplier")])
            else:
                tensors[layer.name] = _Tensor(list(inputs[0].parts), inputs[0].spatial)
        elif kind in _MERGE:
            composite = [t for t in inputs if len(t.parts) != 1]
            if composite:  # a concatenation merged with something else: keep all of it
                for s in spaces:
                    groups.fix(s, f"{layer.name}: {kind} of a concatenation")
                tensors[layer.name] = _Tensor([groups.new(width, f"{layer.name}: merge of a concatenation")])
            else:
                for t in inputs[1:]:
                    groups.union(inputs[0].parts[0], t.parts[0])
                tensors[layer.name] = _Tensor([inputs[0].parts[0]])
        elif kind == "Concatenate" and layer.axis in (-1, len(layer.output_shape) - 1):
            tensors[layer.name] = _Tensor(spaces)
        elif kind == "Flatten":
            positions = int(np.prod(layer.input_shape[1:-1])) if len(layer.input_shape) > 2 else 1
            tensors[layer.name] = _Tensor(list(inputs[0].parts), positions)
        else:
            why = f"{kind} layer {layer.name} (edgert does not know how it maps channels)"
            stops[layer.name] = why
            for s in spaces:
                groups.fix(s, why)
            tensors[layer.name] = _Tensor([groups.new(width, why)])
    for name in model.output_names:
        for s in tensors[name].parts:
            groups.fix(s, "a model output")
    return groups, tensors, stops


def _elementwise_op(layer) -> bool:
    """A TensorFlow op (tf_keras's TFOpLambda) or a Keras 3 op (edgert's rebuild of a Keras 3 model) that works
    element by element."""
    kind = _kind(layer)
    if kind == "TFOpLambda":
        return getattr(layer, "symbol", "") in _ELEMENTWISE_OPS
    if kind == "Keras3Op":
        return type(getattr(layer, "op", None)).__name__ in _KERAS3_ELEMENTWISE
    return False


def _keeps_last_axis(layer) -> bool:
    before, after = layer.input_shape, layer.output_shape
    return before[-1] is not None and before[-1] == after[-1] and \
        int(np.prod([d for d in before[1:-1] if d])) == int(np.prod([d for d in after[1:-1] if d]))


def _producers(model, tensors, groups) -> dict[int, list]:
    """Per group root: the layers whose kernels make its channels (their output filters are its channels)."""
    out: dict[int, list] = {}
    for layer in model.layers:
        if _kind(layer) in _PRODUCER and len(tensors[layer.name].parts) == 1:
            out.setdefault(groups.find(tensors[layer.name].parts[0]), []).append(layer)
    return out


def _importance(model, groups, tensors, criterion: str) -> dict[int, np.ndarray]:
    scores: dict[int, np.ndarray] = {}
    if criterion == "bn":
        for layer in model.layers:
            if _kind(layer) == "BatchNormalization" and len(tensors[layer.name].parts) == 1:
                root = groups.find(tensors[layer.name].parts[0])
                gamma = np.abs(layer.get_weights()[0]) if layer.scale else np.ones(groups.width[root])
                scores[root] = scores.get(root, 0) + gamma
    for root, layers in _producers(model, tensors, groups).items():
        if root in scores:
            continue
        total = 0
        for layer in layers:
            kernel = layer.get_weights()[1 if _kind(layer) == "SeparableConv2D" else 0]  # the pointwise kernel
            total = total + np.sqrt((kernel.reshape(-1, kernel.shape[-1]).astype(np.float64) ** 2).sum(axis=0))
        scores[root] = total
    return scores


def _round(n: int, keep: float, multiple: int, floor: int) -> int:
    want = max(1, int(round(n * keep)))
    if n >= 32 and multiple > 1:
        want = max(multiple, int(round(want / multiple)) * multiple)
    return int(min(n, max(want, min(floor, n))))


def _select(groups, scores, config: ChannelPruneConfig) -> dict[int, np.ndarray]:
    """Kept channel indices (sorted) for every pruned group."""
    keep = 1.0 - config.fraction
    prunable = {r: s for r, s in scores.items() if r not in groups.fixed and groups.width[r] > 1}
    kept: dict[int, np.ndarray] = {}
    if config.policy == "uniform":
        for root, score in prunable.items():
            n = groups.width[root]
            k = _round(n, keep, config.multiple, 1)
            kept[root] = np.sort(np.argsort(-score, kind="stable")[:k])
        return kept
    # global: every channel ranked together, each group's scores normalised by its mean; a floor per group
    pool = []
    for root, score in prunable.items():
        norm = score / (score.mean() or 1.0)
        pool.extend((float(v), root, i) for i, v in enumerate(norm))
    pool.sort(key=lambda t: -t[0])
    total = sum(groups.width[r] for r in prunable)
    budget = int(round(total * keep))
    chosen: dict[int, list[int]] = {r: [] for r in prunable}
    for _, root, i in pool[:budget]:
        chosen[root].append(i)
    for root, score in prunable.items():
        n = groups.width[root]
        k = _round(n, max(len(chosen[root]), 1) / n, config.multiple, config.min_channels)
        kept[root] = np.sort(np.argsort(-score, kind="stable")[:k])
    return kept


def _indices(tensor: _Tensor, groups, kept, widths) -> np.ndarray:
    """The kept indices along a tensor's last axis (flattened spatial blocks for a Flatten output)."""
    out, offset = [], 0
    for s in tensor.parts:
        root = groups.find(s)
        width = widths[s]
        idx = kept.get(root, np.arange(width))
        out.append(idx + offset)
        offset += width
    idx = np.concatenate(out) if out else np.arange(0)
    if tensor.spatial > 1:
        idx = (np.arange(tensor.spatial)[:, None] * offset + idx[None, :]).ravel()
    return idx


def prune_channels(model, config: ChannelPruneConfig, custom_objects=None):
    """A new Keras model with `config.fraction` of the prunable channels removed, its weights sliced from `model`.

    Returns the model and a ChannelPruneReport.

    Raises:
        InputDataError: not a functional or Sequential Keras model, or nothing in it can be pruned.
    """
    from edgert.converters._tf import import_tf

    tf, keras = import_tf()
    if isinstance(model, keras.Sequential):  # the same layers as a functional graph, InputLayer included
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    if not getattr(model, "_is_graph_network", False):
        raise InputDataError("--prune-channels needs a functional or Sequential Keras model (a subclassed model's "
                             "graph cannot be read)")
    groups, tensors, stops = _analyse(model)
    widths = list(groups.width)
    scores = _importance(model, groups, tensors, config.criterion)
    kept = _select(groups, scores, config)
    kept = {r: k for r, k in kept.items() if len(k) < groups.width[r]}
    if not kept:
        why = "; ".join(sorted(set(groups.fixed.values())))[:300]
        raise InputDataError(f"--prune-channels: no channel group of this model can be pruned ({why})")

    def out_idx(layer):
        return _indices(tensors[layer.name], groups, kept, widths)

    def in_idx(layer):
        (parent,) = _inbound(layer)[:1]
        return _indices(tensors[parent.name], groups, kept, widths)

    config_dict = model.get_config()
    new_width = {}
    for layer in model.layers:
        kind = _kind(layer)
        if kind in _PRODUCER and len(tensors[layer.name].parts) == 1:
            root = groups.find(tensors[layer.name].parts[0])
            if root in kept:
                new_width[layer.name] = len(kept[root])
        elif kind == "Reshape" and len(tensors[layer.name].parts) == 1:
            root = groups.find(tensors[layer.name].parts[0])
            if root in kept:
                new_width[layer.name] = len(kept[root])
    for entry in config_dict["layers"]:
        name = entry["config"]["name"]
        if name in new_width:
            if entry["class_name"] == "Reshape":  # a squeeze-excite reshape: (1, 1, C) with the new C
                entry["config"]["target_shape"] = [*entry["config"]["target_shape"][:-1], new_width[name]]
            else:
                key = "units" if entry["class_name"] == "Dense" else "filters"
                entry["config"][key] = new_width[name]
    rebuilt = keras.Model.from_config(config_dict, custom_objects=custom_objects)

    for old, new in zip(model.layers, rebuilt.layers):
        weights = old.get_weights()
        if not weights:
            continue
        kind = _kind(old)
        if kind in ("Conv2D", "Conv1D", "Dense"):
            w = weights[0][..., in_idx(old), :][..., out_idx(old)]
            sliced = [w] + ([weights[1][out_idx(old)]] if old.use_bias else [])
        elif kind == "SeparableConv2D":
            i, o = in_idx(old), out_idx(old)
            sliced = [weights[0][:, :, i, :], weights[1][:, :, i, :][..., o]] + (
                [weights[2][o]] if old.use_bias else [])
        elif kind == "DepthwiseConv2D":
            i = in_idx(old)
            sliced = [weights[0][:, :, i, :]] + ([weights[1][i]] if old.use_bias else [])
        elif kind in ("BatchNormalization", "LayerNormalization", "PReLU"):
            i = out_idx(old)
            sliced = [w[..., i] for w in weights]
        else:
            sliced = weights  # a layer that kept its channels (a stop or a fixed group)
        try:
            new.set_weights(sliced)
        except ValueError as exc:
            raise InputDataError(f"--prune-channels: cannot fit {old.name}'s weights to its pruned shape ({exc}); "
                                 "report this model") from None
    return rebuilt, _report(model, rebuilt, groups, kept, stops)


def _macs(layer) -> int:
    kind = _kind(layer)
    shape = layer.output_shape
    if isinstance(shape, list):
        shape = shape[0]
    positions = int(np.prod([d for d in shape[1:-1] if d])) if len(shape) > 2 else 1
    weights = layer.get_weights()
    if kind in ("Conv2D", "Conv1D", "Dense"):
        return positions * int(np.prod(weights[0].shape))
    if kind == "DepthwiseConv2D":
        return positions * int(np.prod(weights[0].shape))
    if kind == "SeparableConv2D":
        return positions * (int(np.prod(weights[0].shape)) + int(np.prod(weights[1].shape)))
    return 0


def _report(before, after, groups, kept, stops) -> ChannelPruneReport:
    rows = []
    for old, new in zip(before.layers, after.layers):
        if _kind(old) not in _PRODUCER | {"DepthwiseConv2D", "BatchNormalization"}:
            continue
        rows.append(LayerReport(old.name, _kind(old), int(old.output_shape[-1]), int(new.output_shape[-1]),
                                int(old.count_params()), int(new.count_params()), _macs(old), _macs(new)))
    roots = {groups.find(i) for i in range(len(groups.parent))}
    return ChannelPruneReport(rows, int(before.count_params()), int(after.count_params()),
                              sum(_macs(layer) for layer in before.layers),
                              sum(_macs(layer) for layer in after.layers), len(roots), len(kept), dict(stops))
