"""The post-training step: a TFLiteConverter for the source model (tf_keras, Keras 3 or SavedModel), set up for
the quantization mode, run with the native log captured; and `edgetpu_compiler` where it exists."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgert.converters.recipe import ConvertRecipe, Quantization
from edgert.errors import ConversionError, InputDataError, brief
from edgert.files import check_output_path, shown, write_bytes_atomic

EDGETPU_COMPILER = "edgetpu_compiler"


def converter_for(tf, source, model, *, batch: int | None = None):
    """A TFLiteConverter for `model` (a tf_keras or Keras 3 model object) or, without one, the SavedModel at
    `source.path` (its `source.signature`); `batch` fixes the batch dimension (the Edge TPU needs static shapes).

    A traced model returns its outputs in a dict by name, so that the `.tflite` can carry them (see
    `signature.write_signature`)."""
    from edgert.converters.keras3 import is_keras3_model
    from edgert.converters.signature import keras_names, named_call

    if model is None:
        if batch is not None:
            raise InputDataError("--edgetpu needs a Keras model (.h5 or .keras) to fix its batch size to 1")
        return tf.lite.TFLiteConverter.from_saved_model(str(source.path), signature_keys=[source.signature])
    if not is_keras3_model(model) and batch is None:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    names = keras_names(model)
    specs = [tf.TensorSpec((batch, *tuple(t.shape)[1:]), t.dtype, name=name)
             for t, name in zip(model.inputs, names.inputs)]
    traced = tf.function(named_call(model, names)).get_concrete_function(*specs)
    if not is_keras3_model(model):
        return tf.lite.TFLiteConverter.from_concrete_functions([traced], model)
    # Without a trackable object the converter freezes the function's variables into constants itself; given
    # one, it exports a SavedModel first and takes three times as long (MobileNetV2: 3.1 s against 8.4 s
    # here). absl calls this path deprecated in a warning, silenced.
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        return tf.lite.TFLiteConverter.from_concrete_functions([traced])
    finally:
        absl.setLevel(level)


def to_tflite(tf, converter, mode: Quantization, recipe: ConvertRecipe, calibration: list[np.ndarray] | None,
              what: str, notes: list[str] | None = None, float_fallback: bool = False,
              calibration_names: list[str] | None = None) -> bytes:
    """Set `converter` up for `mode` and convert; calibration samples drive full-integer modes. With
    `calibration_names` (a SavedModel's signature keys, one per calibration array) each sample is fed by name, so
    the order the converter gives the inputs does not matter.

    int16x8 has no kernel for some operators (HARD_SWISH, for one): the conversion is then repeated with those
    operators left in float, as TensorFlow's int16x8 guide does, and `notes` says which.

    Raises:
        ConversionError: the converter failed (one line; an operator without an integer kernel says so).
    """
    from edgert.converters.training import terminal

    with terminal() as term:  # the converter's native chatter is captured; the progress bar writes here
        return _convert(tf, converter, mode, recipe, calibration, what, notes, float_fallback, term,
                        calibration_names)


def _convert(tf, converter, mode, recipe, calibration, what, notes, float_fallback, progress_file,
             calibration_names=None) -> bytes:
    from edgert.runtime.native import native_log_captured

    if mode is not Quantization.FLOAT32 or recipe.qat:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode is Quantization.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    if calibration is not None:
        from edgert.converters.training import progress_bar

        n_samples = len(calibration[0])

        def representative_dataset():
            with progress_bar(n_samples, "calibrating", file=progress_file) as bar:
                for i in range(n_samples):
                    if calibration_names:
                        yield {n: a[i:i + 1] for n, a in zip(calibration_names, calibration)}
                    else:
                        yield [a[i:i + 1] for a in calibration]
                    bar.update(1)

        converter.representative_dataset = representative_dataset
    if mode in (Quantization.INT8, Quantization.EDGETPU):
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not recipe.float_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    elif mode is Quantization.INT16X8:
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
            *([tf.lite.OpsSet.TFLITE_BUILTINS] if float_fallback else [])]
        if not recipe.float_io:
            converter.inference_input_type = tf.int16
            converter.inference_output_type = tf.int16
    try:
        with native_log_captured():
            if recipe.keep_float:
                if calibration is None:
                    raise ConversionError("keep_float needs calibration data (--calibration-data or --train-data)")
                # Selective quantization: TFLite's quantization debugger leaves the denylisted operators in float
                # and quantizes the rest (its inputs and outputs stay float).
                converter.inference_input_type = converter.inference_output_type = tf.float32
                options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(recipe.keep_float))
                debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=converter.representative_dataset, debug_options=options)
                return debugger.get_nondebug_quantized_model()
            return converter.convert()
    except ConversionError:
        raise
    except Exception as exc:  # the MLIR converter raises ConverterError, ValueError and RuntimeError alike
        message = brief(exc, 300)
        unsupported = re.search(r"16x8-bit not yet supported for op: '(\w+)'", message)
        if mode is Quantization.INT16X8 and unsupported and not float_fallback:
            if notes is not None:
                notes.append(f"int16x8 has no kernel for {unsupported.group(1)} (and perhaps other operators): "
                             "those run in float, the rest in int16x8")
            return _convert(tf, converter, mode, recipe, calibration, what, notes, True, progress_file,
                            calibration_names)
        if mode.needs_calibration and ("TFLITE_BUILTINS_INT8" in message or "quantiz" in message.lower()):
            raise ConversionError(f"full-integer conversion failed: {message}; an operator has no integer kernel: "
                                  "try --dynamic or --float16") from None
        raise ConversionError(f"conversion of {what} failed: {message}") from None


def edgetpu_compile(out: Path, force: bool, notes: list[str]) -> str | None:
    """Run `edgetpu_compiler` on `out` where it is installed; the outcome goes into `notes`. Returns the compiled
    model's path, or None."""
    from edgert.tflite.info import describe

    compiler = shutil.which(EDGETPU_COMPILER)
    if compiler is None:
        notes.append(f"{EDGETPU_COMPILER} is not on PATH (Coral ships it for x86-64 Linux only); "
                     f"{out} is ready for it: run `{EDGETPU_COMPILER} {shown(out)}` on such a machine")
        return None
    target = out.with_name(out.stem + "_edgetpu.tflite")
    check_output_path(target, force=force)
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([compiler, "-s", "-o", tmp, str(out)], capture_output=True, text=True)
        produced = Path(tmp) / target.name
        if run.returncode != 0 or not produced.exists():
            tail = " ".join((run.stdout + run.stderr).split())[-300:]
            notes.append(f"{EDGETPU_COMPILER} failed (exit {run.returncode}): {tail}")
            return None
        write_bytes_atomic(target, produced.read_bytes())
    compiled = describe(target.read_bytes(), str(target))
    on_tpu = dict(compiled.operators).get("edgetpu-custom-op", 0)
    notes.append(f"compiled for the Edge TPU: {target} ({on_tpu} edgetpu-custom-op node(s), "
                 f"{compiled.operator_count - on_tpu} op(s) left on the CPU)")
    return str(target)
