"""Android's Neural Networks API through a TFLite external delegate library wrapping the NNAPI delegate."""

from __future__ import annotations

import os
from typing import Mapping

from edgert.delegates.base import Binding, DelegatePlugin, OpTable, Probe, parse_choice
from edgert.delegates.library import load_external, open_library
from edgert.errors import DelegateUnavailableError
from edgert.tflite.records import FlatModel, OperatorInfo, SubgraphInfo

NNAPI_RUNTIME = "libneuralnetworks.so"
DELEGATE_LIBRARY = "libtensorflowlite_nnapi_delegate.so"
PREFERENCES = ("low_power", "fast_single_answer", "sustained_speed")

# tensorflow/lite/delegates/nnapi/nnapi_delegate_kernel.cc, NNAPIDelegateKernel::Validate (operators it maps to
# an NNAPI operation; int8 needs Android 11 / NNAPI feature level 4).
_TYPES = frozenset({"float32", "float16", "int8", "uint8", "int32", "bool"})
TABLE = OpTable({op: _TYPES for op in (
    "ABS", "ADD", "ARG_MAX", "ARG_MIN", "AVERAGE_POOL_2D", "BATCH_MATMUL", "BATCH_TO_SPACE_ND", "CAST",
    "CONCATENATION", "CONV_2D", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "DIV", "ELU", "EQUAL", "EXP",
    "EXPAND_DIMS", "FILL", "FLOOR", "FULLY_CONNECTED", "GATHER", "GREATER", "GREATER_EQUAL", "HARD_SWISH",
    "L2_NORMALIZATION", "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOCAL_RESPONSE_NORMALIZATION", "LOG", "LOGICAL_AND",
    "LOGICAL_NOT", "LOGICAL_OR", "LOGISTIC", "LSTM", "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM", "MIRROR_PAD",
    "MUL", "NEG", "NOT_EQUAL", "PACK", "PAD", "PADV2", "POW", "PRELU", "QUANTIZE", "REDUCE_ANY", "REDUCE_MAX",
    "REDUCE_MIN", "REDUCE_PROD", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "REVERSE_V2", "RNN", "RSQRT", "SELECT", "SELECT_V2", "SIN", "SLICE", "SOFTMAX",
    "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQRT", "SQUARED_DIFFERENCE", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "SVDF", "TANH", "TILE", "TOPK_V2", "TRANSPOSE", "TRANSPOSE_CONV", "UNPACK")})


class NnapiDelegate(DelegatePlugin):
    name = "nnapi"
    aliases = ("android",)
    platforms = ("android",)
    summary = "Android NNAPI (DSP/NPU/GPU drivers chosen by the phone)"
    options = {
        "execution_preference": "low_power, fast_single_answer (default) or sustained_speed",
        "accelerator_name": "an NNAPI device name (e.g. qti-dsp) instead of letting NNAPI choose",
        "library": f"the NNAPI external delegate library (default $EDGERT_NNAPI_DELEGATE_LIB or {DELEGATE_LIBRARY})",
    }
    source = "tensorflow/lite/delegates/nnapi/nnapi_delegate_kernel.cc (NNAPIDelegateKernel::Validate)"

    @staticmethod
    def _library(options: Mapping[str, str]) -> str:
        return options.get("library") or os.environ.get("EDGERT_NNAPI_DELEGATE_LIB") or DELEGATE_LIBRARY

    def probe(self) -> Probe:
        try:
            open_library(NNAPI_RUNTIME)
            open_library(self._library({}))
        except DelegateUnavailableError as exc:
            return Probe(False, str(exc))
        return Probe(True, library=self._library({}))

    def validate(self, options: Mapping[str, str]) -> None:
        parse_choice(self.name, "execution_preference", options.get("execution_preference", "fast_single_answer"),
                     PREFERENCES)

    def bind(self, model: FlatModel, options: Mapping[str, str], threads: int | None) -> Binding:
        native = {"execution_preference": parse_choice(
            self.name, "execution_preference", options.get("execution_preference", "fast_single_answer"),
            PREFERENCES)}
        if options.get("accelerator_name"):
            native["accelerator_name"] = options["accelerator_name"]
        library = self._library(options)
        delegate = load_external(library, native, self.name)
        detail = ", ".join(f"{k}={v}" for k, v in native.items())
        return Binding("interpreter", delegates=(delegate,), detail=f"{library} {detail}", threads=threads)

    def check_operator(self, graph: SubgraphInfo, op: OperatorInfo) -> str | None:
        return TABLE.reason(graph, op, "NNAPI", static_shapes=True)
