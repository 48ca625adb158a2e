"""The XNNPACK CPU delegate: TFLite's default, with a thread count and optional fp16 inference."""

from __future__ import annotations

from typing import Mapping

from edgert.delegates.base import Binding, DelegatePlugin, OpTable, Probe, parse_bool
from edgert.errors import DelegateError, DelegateUnavailableError
from edgert.tflite.records import FlatModel, OperatorInfo, SubgraphInfo

# tensorflow/lite/delegates/xnnpack/README.md, "Supported operators" (float32, and int8/uint8 quantized through
# the QS8/QU8 paths; float16 weights come in through DEQUANTIZE).
_QUANTIZED = frozenset({"float32", "float16", "int8", "uint8", "int32"})
_FLOAT = frozenset({"float32", "float16", "int32"})
TABLE = OpTable({
    **{op: _QUANTIZED for op in (
        "ADD", "CONCATENATION", "CONV_2D", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "ELU",
        "FULLY_CONNECTED", "LEAKY_RELU", "LOGISTIC", "MAX_POOL_2D", "MEAN", "MUL", "PAD", "PADV2", "QUANTIZE",
        "RESHAPE", "RESIZE_BILINEAR", "SLICE", "SPACE_TO_DEPTH", "SPLIT", "SQUARED_DIFFERENCE", "STRIDED_SLICE",
        "SUB", "TANH", "TRANSPOSE", "TRANSPOSE_CONV")},
    # float only: XNNPACK has no QS8/QU8 kernel for these (an int8 SOFTMAX stays on the TFLite CPU kernels).
    **{op: _FLOAT for op in (
        "ABS", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CEIL", "COS", "DIV", "EXP", "FLOOR", "GELU", "HARD_SWISH", "LOG",
        "MAXIMUM", "MINIMUM", "NEG", "PRELU", "RELU", "RELU6", "RELU_N1_TO_1", "RESIZE_NEAREST_NEIGHBOR", "ROUND",
        "RSQRT", "SIN", "SOFTMAX", "SQRT", "SQUARE", "SUM")},
})
# XNNPACK delegate flags (tensorflow/lite/delegates/xnnpack/xnnpack_delegate.h): QS8 | QU8 | FORCE_FP16.
_FLAGS_FP16 = 0x1 | 0x2 | 0x4


class XnnpackDelegate(DelegatePlugin):
    name = "xnnpack"
    aliases = ("cpu",)
    summary = "CPU through XNNPACK, TFLite's default delegate"
    options = {
        "threads": "CPU threads (default: the runtime's choice, or --threads)",
        "fp16": "true: run float models in half precision where the CPU supports it (LiteRT CompiledModel)",
    }
    source = "tensorflow/lite/delegates/xnnpack/README.md (Supported operators)"

    def probe(self) -> Probe:
        from edgert.runtime.backend import get_backend

        try:
            backend = get_backend()
        except Exception as exc:  # BackendUnavailableError carries the install hint
            return Probe(False, str(exc))
        return Probe(True, library=f"{backend.name} {backend.version}")

    def validate(self, options: Mapping[str, str]) -> None:
        self._threads(options, None)
        parse_bool(self.name, "fp16", options.get("fp16", "false"))

    @staticmethod
    def _threads(options: Mapping[str, str], threads: int | None) -> int | None:
        if "threads" in options:
            try:
                threads = int(options["threads"])
            except ValueError:
                raise DelegateError(f"xnnpack option threads={options['threads']!r} is not a whole number") from None
            if threads < 1:
                raise DelegateError(f"xnnpack option threads must be at least 1, got {threads}")
        return threads

    def bind(self, model: FlatModel, options: Mapping[str, str], threads: int | None) -> Binding:
        threads = self._threads(options, threads)
        if not parse_bool(self.name, "fp16", options.get("fp16", "false")):
            return Binding("interpreter", detail=f"threads={threads or 'default'}", threads=threads)
        try:
            from ai_edge_litert.compiled_model import CpuOptions, HardwareAccelerator, Options
        except ImportError:
            raise DelegateUnavailableError("xnnpack fp16 needs ai-edge-litert's CompiledModel; "
                                           "run `pip install ai-edge-litert`") from None
        opts = Options(hardware_accelerators=HardwareAccelerator.CPU,
                       cpu_options=CpuOptions(num_threads=threads or 0, xnnpack_flags=_FLAGS_FP16))
        return Binding("compiled_model", compiled_options=opts, detail=f"fp16, threads={threads or 'default'}",
                       threads=threads)

    def check_operator(self, graph: SubgraphInfo, op: OperatorInfo) -> str | None:
        return TABLE.reason(graph, op, self.name)
