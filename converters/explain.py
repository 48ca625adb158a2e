"""Which layers lose the most in int8: the error of each quantized operator's output against the same operator run
in float, from the quantizer's own tools (TensorFlow's QuantizationDebugger on the TFLite converter's route,
ai-edge-quantizer's validation on the litert-torch route). The names it prints are what `--keep-float` (and, on the
litert-torch route, `--int16`) take."""

from __future__ import annotations

import csv
import io
from typing import NamedTuple, Sequence

import numpy as np


class LayerError(NamedTuple):
    """One quantized operator's output against float: `error` is its RMSE in units of its quantization step (TF's
    debugger), or its noise relative to its signal (1 / SNR, ai-edge-quantizer); larger is worse."""

    name: str  # the operator's output tensor name
    op: str
    error: float
    measure: str

    def to_dict(self) -> dict:
        return self._asdict()


def tf_layer_errors(tf, converter, calibration: Sequence[np.ndarray], names: Sequence[str] | None = None,
                    samples: int = 32) -> list[LayerError]:
    """Every quantized operator's RMSE over its scale (TFLite's QuantizationDebugger on `converter`, set up for
    int8 as `to_tflite` sets it up), worst first. `names` feed the samples by input name where the converter takes
    them so (a SavedModel's signature keys)."""
    from edgert.runtime.native import native_log_captured

    n = min(samples, len(calibration[0]))

    def dataset():
        for i in range(n):
            yield [a[i:i + 1] for a in calibration]

    def representative():
        for i in range(n):
            yield ({k: a[i:i + 1] for k, a in zip(names, calibration)} if names
                   else [a[i:i + 1] for a in calibration])

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.float32
    with native_log_captured():
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)  # one row per quantized operator, with its scale and output tensor name
    out = []
    for row in csv.DictReader(io.StringIO(dump.getvalue())):
        try:
            mse, scale = float(row["mean_squared_error"]), float(row["scale"])
        except (KeyError, TypeError, ValueError):
            continue
        if scale > 0 and row.get("tensor_name"):
            out.append(LayerError(row["tensor_name"], row.get("op_name", ""), mse ** 0.5 / scale,
                                  "RMSE / scale"))
    return sorted(out, key=lambda e: -e.error)


def quantizer_layer_errors(float_model: bytes, quantized_model: bytes, calibration: Sequence[np.ndarray],
                           input_names: Sequence[str], signature_key: str, samples: int = 16) -> list[LayerError]:
    """Every tensor of the quantized model against the float one (ai-edge-quantizer's `compare_model`, SNR), worst
    first, as 1 / SNR."""
    from ai_edge_quantizer import model_validator
    from ai_edge_quantizer.utils import validation_utils

    from edgert.tflite.flatbuffer import parse

    import warnings

    n = min(samples, len(calibration[0]))
    data = {signature_key: [{k: a[i:i + 1] for k, a in zip(input_names, calibration)} for i in range(n)]}
    with warnings.catch_warnings():  # the interpreter's "preserve all tensors is for debugging": which this is
        warnings.simplefilter("ignore")
        result = model_validator.compare_model(float_model, quantized_model, data,
                                               [validation_utils.ValidationErrorMetric.SNR], use_xnnpack=True)
    per_tensor = result.get_signature_comparison_result(signature_key)
    graph = parse(float_model, "the float model").subgraphs[0]
    producers = {graph.tensors[t].name: op.opcode for op in graph.operators for t in op.outputs if t >= 0}
    out = []
    for group in (per_tensor.intermediate_tensors, per_tensor.output_tensors):
        for name, metrics in group.items():
            snr = metrics.get("snr")
            if snr is not None and np.isfinite(snr) and name in producers:
                out.append(LayerError(name, producers[name], 1.0 / max(snr, 1e-9), "1 / SNR"))
    return sorted(out, key=lambda e: -e.error)
