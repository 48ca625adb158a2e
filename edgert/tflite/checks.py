"""The consistency checks the flatbuffer reader runs on every operator and subgraph, each one a way a corrupt or
hand-edited model crashed the interpreter or a delegate under fuzzing: operator arity, integer parameter types,
pooling windows, dataflow order and subgraph calls. `flatbuffer.parse` runs them; they raise `ModelFormatError`."""

from __future__ import annotations

from edgert.errors import ModelFormatError
from edgert.tflite.records import (MAX_RANK, POINTER_BYTES, SUBGRAPH_OPTIONS, VALID, SubgraphInfo, TensorInfo,
                                       max_tensor_bytes, size_text)

# Inputs that kernels read as integer parameters (axes, shapes, begin/end, paddings...): position -> allowed types.
# The kernels take the bytes as int32/int64 without looking, so a float tensor there read past its data and
# crashed the process (found by fuzzing); such a model is refused. SPLIT's axis must also be constant: XNNPACK
# reads it while the graph is being built.
_I32_64 = frozenset({"int32", "int64"})
_INT_PARAMS: dict[str, dict[int, frozenset[str]]] = {
    "SPLIT": {0: frozenset({"int32"})}, "SPLIT_V": {1: _I32_64, 2: frozenset({"int32"})},
    "STRIDED_SLICE": {1: _I32_64, 2: _I32_64, 3: _I32_64}, "SLICE": {1: _I32_64, 2: _I32_64},
    "RESHAPE": {1: _I32_64}, "PAD": {1: _I32_64}, "PADV2": {1: _I32_64}, "MIRROR_PAD": {1: _I32_64},
    "TRANSPOSE": {1: _I32_64}, "MEAN": {1: _I32_64}, "SUM": {1: _I32_64}, "REDUCE_MAX": {1: _I32_64},
    "REDUCE_MIN": {1: _I32_64}, "REDUCE_PROD": {1: _I32_64}, "ARG_MAX": {1: _I32_64}, "ARG_MIN": {1: _I32_64},
    "CUMSUM": {1: _I32_64}, "EXPAND_DIMS": {1: _I32_64}, "TILE": {1: _I32_64}, "BROADCAST_TO": {1: _I32_64},
    "GATHER": {1: frozenset({"int16", "int32", "int64"})}, "RESIZE_BILINEAR": {1: frozenset({"int32"})},
    "RESIZE_NEAREST_NEIGHBOR": {1: frozenset({"int32"})},
}
_CONSTANT_PARAMS = {"SPLIT": 0, "SPLIT_V": 2}
# How many inputs and outputs builtin operators take (min, max; None: any number), from the TFLite kernels'
# Prepare checks. Delegates read a node's inputs by position before the kernel's own check can run, so a wrong
# count is refused here (a 2-input SLICE crashed XNNPACK's partitioner under fuzzing). Optional inputs count:
# they are stored as -1.
_UNARY = ("ABS", "AVERAGE_POOL_2D", "CAST", "CEIL", "COS", "DEPTH_TO_SPACE", "DEQUANTIZE", "ELU", "EXP", "FLOOR",
          "GELU", "HARD_SWISH", "L2_NORMALIZATION", "L2_POOL_2D", "LEAKY_RELU", "LOCAL_RESPONSE_NORMALIZATION", "LOG",
          "LOGICAL_NOT", "LOGISTIC", "LOG_SOFTMAX", "MAX_POOL_2D", "NEG", "QUANTIZE", "RELU", "RELU6", "RELU_N1_TO_1",
          "ROUND", "RSQRT", "SHAPE", "SIGN", "SIN", "SOFTMAX", "SPACE_TO_DEPTH", "SQRT", "SQUARE", "SQUEEZE", "TANH",
          "ZEROS_LIKE")
_BINARY = ("ADD", "ARG_MAX", "ARG_MIN", "BATCH_MATMUL", "BROADCAST_TO", "CUMSUM", "DIV", "EQUAL", "EXPAND_DIMS",
           "FLOOR_DIV", "FLOOR_MOD", "GATHER", "GATHER_ND", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL",
           "LOGICAL_AND", "LOGICAL_OR", "MAXIMUM", "MEAN", "MINIMUM", "MIRROR_PAD", "MUL", "NOT_EQUAL", "POW", "PRELU",
           "REDUCE_ANY", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
           "SQUARED_DIFFERENCE", "SUB", "SUM", "TILE", "TRANSPOSE")
_ARITY: dict[str, tuple[int, int | None, int, int | None]] = {
    **{op: (1, 1, 1, 1) for op in _UNARY}, **{op: (2, 2, 1, 1) for op in _BINARY},
    "RESHAPE": (1, 2, 1, 1), "PAD": (2, 3, 1, 1), "PADV2": (3, 3, 1, 1), "SLICE": (3, 3, 1, 1),
    "STRIDED_SLICE": (4, 4, 1, 1), "CONV_2D": (2, 3, 1, 1), "DEPTHWISE_CONV_2D": (2, 3, 1, 1),
    "FULLY_CONNECTED": (2, 3, 1, 2), "TRANSPOSE_CONV": (3, 4, 1, 1), "CONCATENATION": (1, None, 1, 1),
    "PACK": (1, None, 1, 1), "UNPACK": (1, 1, 1, None), "ADD_N": (1, None, 1, 1), "SPLIT": (2, 2, 1, None),
    "SPLIT_V": (3, 3, 1, None), "SELECT": (3, 3, 1, 1), "SELECT_V2": (3, 3, 1, 1),
    "SPACE_TO_BATCH_ND": (3, 3, 1, 1), "BATCH_TO_SPACE_ND": (3, 3, 1, 1),
}


def _count_text(low: int, high: int | None, what: str) -> str:
    if high == low:
        return f"{low} {what}"
    return f"at least {low} {what}" if high is None else f"{low} to {high} {what}"
# The builtin options types edgert reads, and the operators each belongs to: any other pairing is a corrupt file.
_OPTIONS_OWNERS = {1: {"CONV_2D"}, 2: {"DEPTHWISE_CONV_2D"}, 5: {"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"},
                   8: {"FULLY_CONNECTED"}, 10: {"CONCATENATION"}, 11: {"ADD"}, 21: {"MUL"}, 28: {"SUB"},
                   29: {"DIV"}, 92: {"IF"}, 93: {"WHILE"}, 103: {"CALL_ONCE"}}


def check_operator(source, where, o, name, custom, options_type, inputs, outputs, tensors, buffer_sizes,
                    options) -> None:
    def refuse(why: str):
        raise ModelFormatError(f"{source}: {where} operator {o} ({name}) {why} (corrupt or hand-edited model?)")

    if name == "RESHAPE" and len(inputs) > 1 and 0 <= inputs[1] < len(tensors):
        # The shape input's length is the output's rank: a 32-element shape made the interpreter crash while
        # loading (found by fuzzing). TFLite's kernels handle at most MAX_RANK dimensions.
        target = tensors[inputs[1]].shape
        if len(target) > 1 or (target and target[0] > MAX_RANK):
            refuse(f"reshapes to rank {target[0] if len(target) == 1 else list(target)}; TFLite tensors have at "
                   f"most {MAX_RANK} dimensions")
    for key in ("stride_w", "stride_h", "filter_w", "filter_h", "dilation_w", "dilation_h", "depth_multiplier"):
        if key in options and options[key] < 1:
            refuse(f"has {key} {options[key]}; it must be at least 1")
    if "filter_h" in options and inputs and 0 <= inputs[0] < len(tensors):
        _check_pool_window(refuse, options, tensors[inputs[0]])

    arity = None if custom else _ARITY.get(name)
    if arity is not None:
        low_in, high_in, low_out, high_out = arity
        if not low_in <= len(inputs) <= (high_in if high_in is not None else len(inputs)):
            refuse(f"has {len(inputs)} inputs; {name} takes {_count_text(low_in, high_in, 'inputs')}")
        if not low_out <= len(outputs) <= (high_out if high_out is not None else len(outputs)):
            refuse(f"has {len(outputs)} outputs; {name} takes {_count_text(low_out, high_out, 'outputs')}")

    owners = _OPTIONS_OWNERS.get(options_type)
    if owners is not None and not custom and name not in owners:
        refuse(f"carries the options of {'/'.join(sorted(owners))}")
    for position, allowed in _INT_PARAMS.get(name, {}).items():
        if len(inputs) <= position or not 0 <= inputs[position] < len(tensors):
            continue  # absent optional input; index errors are reported with the operator's other indices
        t = tensors[inputs[position]]
        if t.dtype not in allowed:
            refuse(f"reads input {position} (tensor {t.index}, {t.dtype}) as {'/'.join(sorted(allowed))}")
        if _CONSTANT_PARAMS.get(name) == position and buffer_sizes[t.buffer] == 0:
            refuse(f"takes its axis from computed tensor {t.index}; edgert needs a constant axis")


def _check_pool_window(refuse, options: dict, tensor: TensorInfo) -> None:
    """Pooling windows as the kernels see them. With SAME padding any window is valid (InceptionV3's 3x3 average
    pool over a 1x1 map): the padding keeps every output position on at least one input element. Without padding
    (VALID) a window larger than its input leaves no output. What remains to refuse is size: delegates such as
    XNNPACK build an indirection buffer of one pointer per output position and window element while loading (a
    window of 134 million rows made XNNPACK take 8 GB, found by fuzzing), so that buffer must stay within the
    tensor limit."""
    shape, signature = tensor.shape, tensor.shape_signature
    if len(shape) != 4 or not all(d > 0 for d in signature[1:3]):
        return
    filter_h, filter_w = options["filter_h"], options["filter_w"]
    if options.get("padding") == VALID:
        if filter_h > shape[1] or filter_w > shape[2]:
            refuse(f"pools a {filter_h}x{filter_w} window over a {shape[1]}x{shape[2]} input without padding "
                   "(VALID), which leaves no output")
        out_h = (shape[1] - filter_h) // options["stride_h"] + 1
        out_w = (shape[2] - filter_w) // options["stride_w"] + 1
    else:
        out_h, out_w = -(-shape[1] // options["stride_h"]), -(-shape[2] // options["stride_w"])
    indirection = out_h * out_w * filter_h * filter_w * POINTER_BYTES
    limit = max_tensor_bytes()
    if indirection > limit:
        refuse(f"pools a {filter_h}x{filter_w} window over a {shape[1]}x{shape[2]} input, which needs "
               f"{size_text(indirection)} of window pointers while loading, over the limit of {size_text(limit)}")


def check_dataflow(source: str, where: str, sg: SubgraphInfo, buffer_sizes, variables: set[int]) -> None:
    """The interpreter runs operators in file order and reads whatever memory a tensor has: every input must be a
    subgraph input, a constant, a variable or an earlier operator's output, and every tensor is written at most
    once (a RESHAPE reading a tensor nothing produced crashed the interpreter under fuzzing)."""
    ready = set(sg.inputs) | variables | {t.index for t in sg.tensors if buffer_sizes[t.buffer]}
    written: set[int] = set()
    for o, op in enumerate(sg.operators):
        for i in op.inputs:
            if i >= 0 and i not in ready:
                raise ModelFormatError(f"{source}: {where} operator {o} ({op.opcode}) reads tensor {i}, which no "
                                       "earlier operator writes and which is neither an input nor a constant "
                                       "(corrupt file?)")
        for i in op.outputs:
            if i < 0:
                continue
            if i in written or i in ready:
                what = "another operator's output" if i in written else "an input or a constant"
                raise ModelFormatError(f"{source}: {where} operator {o} ({op.opcode}) writes tensor {i}, which is "
                                       f"{what} (corrupt file?)")
            written.add(i)
        ready.update(i for i in op.outputs if i >= 0)
    for i in sg.outputs:
        if i not in ready:
            raise ModelFormatError(f"{source}: {where} output tensor {i} is never written (corrupt file?)")


def check_subgraph_calls(source: str, subgraphs: list[SubgraphInfo]) -> None:
    """IF, WHILE and CALL_ONCE name other subgraphs: each must exist, and no subgraph may end up calling itself
    (the interpreter would recurse until the stack runs out)."""
    calls: dict[int, set[int]] = {}
    for g, sg in enumerate(subgraphs):
        for o, op in enumerate(sg.operators):
            for key, value in op.options:
                if key in SUBGRAPH_OPTIONS:
                    if not 0 <= value < len(subgraphs):
                        raise ModelFormatError(f"{source}: subgraph {g} operator {o} ({op.opcode}) runs subgraph "
                                               f"{value}, but the model has {len(subgraphs)} (corrupt file?)")
                    calls.setdefault(g, set()).add(value)
    state: dict[int, int] = {}  # 1: on the current path, 2: done

    def visit(g: int, path: list[int]) -> None:
        state[g] = 1
        for callee in sorted(calls.get(g, ())):
            if state.get(callee) == 1:
                cycle = path[path.index(callee):] + [callee] if callee in path else [g, callee]
                raise ModelFormatError(f"{source}: subgraphs call each other in a cycle "
                                       f"({' -> '.join(map(str, cycle))}); TFLite cannot run recursion")
            if state.get(callee) is None:
                visit(callee, path + [callee])
        state[g] = 2

    for g in range(len(subgraphs)):
        if state.get(g) is None:
            visit(g, [g])
