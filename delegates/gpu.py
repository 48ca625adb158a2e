"""The GPU: LiteRT's GPU accelerator (`CompiledModel`, WebGPU over Vulkan/Metal) or a classic GPU delegate library."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Mapping

from edgert.delegates.base import (
    Binding, DelegatePlugin, OpTable, Probe, activation, current_platform, parse_choice,
)
from edgert.delegates.library import load_external, probe_in_child
from edgert.errors import DelegateUnavailableError
from edgert.tflite.records import FlatModel, OperatorInfo, SubgraphInfo

# tensorflow/lite/tools/versioning/gpu_compatibility.cc, CheckGpuDelegateCompatibility (the operators with a
# case in its switch; everything else is "Not supported op"). The GPU computes in float16/float32; int8/uint8
# models are dequantized on load; int32/bool appear as indices, shapes and comparison results.
_TYPES = frozenset({"float32", "float16", "int8", "uint8", "int32", "bool"})
TABLE = OpTable({op: _TYPES for op in (
    "ABS", "ADD", "ADD_N", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CAST", "CEIL", "CONCATENATION", "CONV_2D", "COS",
    "CUMSUM", "DENSIFY", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DIV", "DYNAMIC_UPDATE_SLICE", "ELU",
    "EMBEDDING_LOOKUP", "EQUAL", "EXP", "FLOOR", "FLOOR_DIV", "FLOOR_MOD", "FULLY_CONNECTED", "GATHER", "GELU",
    "GREATER", "GREATER_EQUAL", "HARD_SWISH", "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOG", "LOGICAL_AND",
    "LOGISTIC", "LSTM", "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM", "MIRROR_PAD", "MUL", "NEG", "NOT_EQUAL",
    "ONE_HOT", "PACK", "PAD", "PADV2", "POW", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD",
    "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT",
    "SELECT_V2", "SIN", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQRT", "SQUARE",
    "SQUARED_DIFFERENCE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TILE", "TRANSPOSE", "TRANSPOSE_CONV")})
_ACTIVATIONS = {"NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH"}  # IsActivationSupported
_CONV_LIKE = {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D"}
_FUSED = _CONV_LIKE | {"ADD", "SUB", "MUL", "DIV", "FULLY_CONNECTED", "CONCATENATION"}

CLASSIC_LIBRARY = "libtensorflowlite_gpu_delegate.so"
# What LiteRT's Python wheel ships for the GPU (it tries the OpenCL one first where present).
LITERT_ACCELERATORS = ("libLiteRtGpuAccelerator.so", "libLiteRtWebGpuAccelerator.so")
# The TensorBuffer dtypes LiteRT's Python API can read and write (ai_edge_litert/tensor_buffer.py).
_BUFFER_TYPES = {"float32", "float16", "int32", "int8", "uint8", "bool"}


def _vulkan_loader() -> str | None:
    for name in ("libvulkan.so.1", "libvulkan.so", ctypes.util.find_library("vulkan")):
        if not name:
            continue
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return None


def _litert_probe() -> Probe:
    try:
        import ai_edge_litert
        import ai_edge_litert.compiled_model  # noqa: F401
    except ImportError as exc:
        return Probe(False, f"LiteRT GPU needs ai-edge-litert with CompiledModel ({exc})")
    folder = os.path.dirname(ai_edge_litert.__file__)
    found = [n for n in LITERT_ACCELERATORS if os.path.exists(os.path.join(folder, n))]
    if not found:
        return Probe(False, "this ai-edge-litert wheel ships no GPU accelerator library")
    here = current_platform()
    if here.os in ("linux", "android", "windows") and "libLiteRtGpuAccelerator.so" not in found:
        loader = _vulkan_loader()
        if loader is None:
            return Probe(False, f"{found[0]} needs a Vulkan loader (libvulkan.so.1) and a GPU driver; "
                                "install libvulkan1 and the GPU's Vulkan driver")
    return Probe(True, "usable if a GPU adapter is found when the model loads", os.path.join(folder, found[0]))


def _classic_library(options: Mapping[str, str]) -> str:
    return options.get("library") or os.environ.get("EDGERT_GPU_DELEGATE_LIB") or CLASSIC_LIBRARY


class GpuDelegate(DelegatePlugin):
    name = "gpu"
    aliases = ("webgpu",)
    platforms = ("linux", "android", "darwin", "windows")
    summary = "GPU through LiteRT's accelerator (WebGPU on Vulkan/Metal) or a classic GPU delegate library"
    options = {
        "precision": "fp16 (default: faster, allows half-precision) or fp32 (enforce full precision)",
        "backend": "auto (default: LiteRT, then classic), litert, or classic",
        "library": f"classic delegate library (default $EDGERT_GPU_DELEGATE_LIB or {CLASSIC_LIBRARY})",
    }
    source = "tensorflow/lite/tools/versioning/gpu_compatibility.cc (CheckGpuDelegateCompatibility)"

    def probe(self) -> Probe:
        litert = _litert_probe()
        if litert.usable:
            return litert
        classic = _classic_library({})
        try:
            probe_in_child(classic, create=False)  # a library that crashes at load takes down a child, not us
            return Probe(True, library=classic)
        except DelegateUnavailableError as exc:
            if "crashed" in str(exc) or "hung" in str(exc):
                return Probe(False, f"{litert.reason}; {exc}")
            return Probe(False, f"{litert.reason}; no classic {CLASSIC_LIBRARY} either")

    def validate(self, options: Mapping[str, str]) -> None:
        parse_choice(self.name, "precision", options.get("precision", "fp16"), ("fp16", "fp32"))
        parse_choice(self.name, "backend", options.get("backend", "auto"), ("auto", "litert", "classic"))

    def bind(self, model: FlatModel, options: Mapping[str, str], threads: int | None) -> Binding:
        precision = parse_choice(self.name, "precision", options.get("precision", "fp16"), ("fp16", "fp32"))
        backend = parse_choice(self.name, "backend", options.get("backend", "auto"), ("auto", "litert", "classic"))
        reasons = []
        if backend in ("auto", "litert"):
            probe = _litert_probe()
            graph = model.subgraphs[0]
            odd = [graph.tensors[i] for i in (*graph.inputs, *graph.outputs)
                   if graph.tensors[i].dtype not in _BUFFER_TYPES]
            if probe.usable and not odd:
                from ai_edge_litert.compiled_model import CpuOptions, GpuOptions, HardwareAccelerator, Options

                opts = Options(hardware_accelerators=HardwareAccelerator.GPU | HardwareAccelerator.CPU,
                               gpu_options=GpuOptions(enforce_f32=precision == "fp32"),
                               cpu_options=CpuOptions(num_threads=threads or 0))
                return Binding("compiled_model", compiled_options=opts, detail=f"LiteRT GPU, precision {precision}",
                               threads=threads)
            reasons.append(probe.reason if not probe.usable else
                           f"LiteRT cannot pass {odd[0].dtype} tensor '{odd[0].name}' in or out of a compiled model")
        if backend in ("auto", "classic"):
            library = _classic_library(options)
            try:
                delegate = load_external(library, {}, "gpu")
                return Binding("interpreter", delegates=(delegate,), detail=f"{library}, precision {precision}",
                               threads=threads)
            except DelegateUnavailableError as exc:
                reasons.append(str(exc))
        raise DelegateUnavailableError("; ".join(reasons))

    def check_operator(self, graph: SubgraphInfo, op: OperatorInfo) -> str | None:
        reason = TABLE.reason(graph, op, "the GPU delegate", static_shapes=True)
        if reason:
            return reason
        if op.opcode in _FUSED and activation(op) not in _ACTIVATIONS:
            return f"{op.opcode} with fused {activation(op)} activation is not supported on the GPU"
        if op.opcode in _CONV_LIKE:
            if op.option("stride_w") < 1 or op.option("stride_h") < 1:
                return f"{op.opcode} with stride {op.option('stride_h')}x{op.option('stride_w')} is not supported"
            if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D") and (
                    op.option("dilation_w", 1) < 1 or op.option("dilation_h", 1) < 1):
                return f"{op.opcode} with dilation below 1 is not supported"
        if op.opcode == "FULLY_CONNECTED" and op.option("weights_format") != 0:
            return "FULLY_CONNECTED with shuffled weights is not supported on the GPU"
        if op.opcode == "ADD_N" and len(op.inputs) != 2:
            return "ADD_N with other than 2 inputs is not supported on the GPU"
        return None
