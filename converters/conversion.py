"""`convert`: a Keras model or SavedModel to a TFLite flatbuffer, float32, dynamic-range or full-integer int8."""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgert.converters.calibration import load_calibration_data
from edgert.converters.sources import check_source, open_model
from edgert.errors import ConversionError, InputDataError
from edgert.files import check_output_path, write_bytes_atomic
from edgert.info import TensorSpec, describe

FULL_INTEGER_HINT = ("weights only were quantized (dynamic range); full-integer models, as the Edge TPU and NNAPI "
                     "int8 need, require --calibration-data")


class QuantMode(str, enum.Enum):
    FLOAT32 = "float32"
    DYNAMIC = "dynamic"  # int8 weights, float activations
    INT8 = "int8"  # full integer: int8 weights and activations, calibrated

    @property
    def suffix(self) -> str:
        return {"float32": "", "dynamic": "_dynamic", "int8": "_int8"}[self.value]


@dataclass(frozen=True)
class ConversionResult:
    """What `convert` produced."""

    source_path: str
    output_path: str
    mode: QuantMode
    source_size_bytes: int
    output_size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    calibration_samples: int
    duration_s: float
    notes: tuple[str, ...] = field(default=())

    @property
    def size_ratio(self) -> float:
        """Source size divided by output size (4.0 means four times smaller)."""
        return self.source_size_bytes / self.output_size_bytes

    def to_dict(self) -> dict:
        return {
            "source_path": self.source_path, "output_path": self.output_path, "mode": self.mode.value,
            "source_size_bytes": self.source_size_bytes, "output_size_bytes": self.output_size_bytes,
            "size_ratio": round(self.size_ratio, 3),
            "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs],
            "calibration_samples": self.calibration_samples, "duration_s": round(self.duration_s, 3),
            "notes": list(self.notes),
        }


def default_output_path(model_path: str | os.PathLike, mode: QuantMode) -> Path:
    p = Path(model_path)
    stem = p.name if p.is_dir() else p.stem
    return p.parent / f"{stem.rstrip('/')}{mode.suffix}.tflite"


def convert(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    *,
    int8: bool = False,
    calibration_data: str | os.PathLike | None = None,
    calibration_samples: int = 200,
    float_io: bool = False,
    image_range: tuple[float, float] = (0.0, 255.0),
    force: bool = False,
) -> ConversionResult:
    """Convert a Keras model (`.h5`, `.keras` from tf_keras) or a SavedModel directory to `.tflite`.

    Args:
        model_path: the model to convert.
        output_path: where to write; default `<stem>.tflite`, `<stem>_dynamic.tflite` or `<stem>_int8.tflite`
            beside the input.
        int8: quantize to int8: full integer with `calibration_data`, weights only (dynamic range) without.
        calibration_data: `.npy`, `.npz` or a folder of images (see `load_calibration_data`).
        calibration_samples: at most this many calibration samples are used.
        float_io: for full-integer models, keep float32 inputs and outputs (quantize inside the model).
        image_range: the value range calibration images are scaled to.
        force: overwrite an existing output.

    Raises:
        ModelFormatError, InputDataError, OutputExistsError, ConversionError: each with a one-line message.
    """
    started = time.perf_counter()
    if calibration_data is not None and not int8:
        raise InputDataError("--calibration-data is only used with --int8; add --int8 or drop the data")
    if float_io and calibration_data is None:
        raise InputDataError("--float-io applies to full-integer models; use it with --int8 --calibration-data")
    mode = QuantMode.INT8 if calibration_data is not None else QuantMode.DYNAMIC if int8 else QuantMode.FLOAT32
    check_source(model_path)
    out = check_output_path(output_path or default_output_path(model_path, mode), force=force)

    source = open_model(model_path)
    samples = (load_calibration_data(calibration_data, source.inputs, calibration_samples, image_range)
               if mode is QuantMode.INT8 else None)

    from edgert.converters._tf import import_tf, native_log_captured

    tf, _ = import_tf()
    converter = source.converter(tf)
    notes = []
    if mode is not QuantMode.FLOAT32:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode is QuantMode.DYNAMIC:
        notes.append(FULL_INTEGER_HINT)
    if mode is QuantMode.INT8:
        n_samples = len(samples[0])

        def representative_dataset():
            for i in range(n_samples):
                yield [a[i:i + 1] for a in samples]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not float_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        with native_log_captured():
            flatbuffer = converter.convert()
    except Exception as exc:  # the MLIR converter raises ConverterError, ValueError and RuntimeError alike
        message = " ".join(str(exc).split())
        if mode is QuantMode.INT8 and ("TFLITE_BUILTINS_INT8" in message or "quantiz" in message.lower()):
            raise ConversionError(f"full-integer conversion failed: {message[:300]}; an operator has no int8 "
                                  "kernel: try --int8 without --calibration-data (dynamic range)") from None
        raise ConversionError(f"conversion of {model_path} failed: {message[:300]}") from None

    info = describe(flatbuffer, str(out))  # never write a model the runtime could not read back
    write_bytes_atomic(out, flatbuffer)
    return ConversionResult(
        source_path=str(model_path), output_path=str(out), mode=mode, source_size_bytes=source.size_bytes,
        output_size_bytes=len(flatbuffer), inputs=info.inputs, outputs=info.outputs,
        calibration_samples=len(samples[0]) if samples else 0, duration_s=time.perf_counter() - started,
        notes=tuple(notes))
