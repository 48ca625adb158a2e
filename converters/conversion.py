"""`convert`: a Keras model or SavedModel through a recipe's stages to a TFLite flatbuffer, with a report."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import numpy as np

from edgert.converters.agreement import Agreement
from edgert.converters.foreign import ForeignOptions
from edgert.converters.int8_choices import Int8Choices
from edgert.converters.measure import Background, seeded_samples, tflite_accuracy
from edgert.converters.recipe import ConvertRecipe, Quantization
from edgert.converters.results import ConversionResult, StageReport
from edgert.converters.kinds import kind_of
from edgert.converters.sources import check_source
from edgert.converters.stages import Stages
from edgert.errors import ConversionError, InputDataError, ModelFormatError, brief
from edgert.files import atomic_path, check_output_path, write_bytes_atomic
from edgert.tflite.info import describe

DROP_WARNING = 5.0  # accuracy points lost that earn a warning line
FULL_INTEGER_HINT = ("weights only were quantized (dynamic range); full-integer models, as the Edge TPU and NNAPI "
                     "int8 need, require --calibration-data")


def default_output_path(model_path: str | os.PathLike, mode: Quantization) -> Path:
    p = kind_of(model_path).path
    stem = p.name if p.is_dir() else p.stem
    return p.parent / f"{stem}{mode.suffix}.tflite"


def convert(
    model_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    *,
    int8: bool = False,
    calibration_data: str | os.PathLike | None = None,
    calibration_samples: int = 200,
    float_io: bool = False,
    image_range: tuple[float, float] | None = None,
    force: bool = False,
    recipe: ConvertRecipe | None = None,
    train_data: str | os.PathLike | None = None,
    val_data: str | os.PathLike | None = None,
    eval_data: str | os.PathLike | None = None,
    custom_objects: str | os.PathLike | dict | None = None,
    trust_model: bool = False,
    force_range: bool = False,
    signature: str | None = None,
    foreign: ForeignOptions | None = None,
    fallback: bool = True,
    explain: bool = False,
) -> ConversionResult:
    """Convert a Keras model (`.h5`, `.keras`, from tf_keras or Keras 3), a SavedModel directory, an ONNX file
    (`model.onnx`) or a PyTorch module (`net.py:make_model`, a function returning it) to `.tflite`.

    The simple form takes `int8`, `calibration_data` and `float_io`; `recipe` describes anything more (pruning,
    clustering, distillation, QAT, every post-training mode) and then replaces those three.

    Args:
        model_path: the model to convert.
        output_path: where to write; default `<stem><suffix>.tflite` beside the input (`_int8`, `_float16`, ...).
        int8: quantize to int8: full integer with calibration data, weights only (dynamic range) without.
        calibration_data: `.npy`, `.npz` or a folder of images (see `load_calibration_data`); without it the
            training data's inputs calibrate, if given.
        train_data, val_data, eval_data: `.npz` (`x`, `y`) or image folders with one sub-folder per class.
            Training data drives fine-tuning; evaluation data measures the original and the final `.tflite`
            (run through the edgert runtime).
        force: overwrite the output (and its `.recipe.json` and `.report.json`) if they exist.
        custom_objects: a Python file (or a dict by name) with the model's own layers; see
            `custom_objects.load_custom_objects`.
        trust_model: allow loading layers that run Python code stored in the model (Lambda).
        image_range: the range image folders are scaled to; by default the range the model states through a
            leading Rescaling or Normalization layer (an image folder for a model that states none is refused).
        force_range: accept calibration arrays whose range disagrees with the training or evaluation data or the
            range the model states (refused otherwise: int8 silently loses the model's accuracy).
        signature: the SavedModel signature to convert, where it has several (default `serving_default`). The
            `.tflite` always carries it as `serving_default`, with the source's own input and output names.
        foreign: for an ONNX file or a PyTorch module, the route, layout, input shapes and weights (see
            `converters.foreign.ForeignOptions`); post-training modes only, checked against torch or onnxruntime.
        fallback: where full int8 loses a detector's detections (fewer than 95% kept, decoded and matched against
            the source's on the calibration samples) and dynamic range keeps them, write the dynamic-range model
            instead (`mode_requested` then says int8). False keeps full int8 and only warns.
        explain: for a calibrated mode, measure each quantized operator's error against float with the quantizer's
            own tools (`layer_errors`, worst first): the names `recipe.keep_float` and `recipe.int16` take.

    After converting, the `.tflite` is run through the edgert runtime beside the model it came from on a few
    samples (calibration data when given, else seeded random inputs); `agreement` reports how closely they agree
    and `warnings` says when that is poorly.

    Raises:
        ModelFormatError, InputDataError, RecipeError, OutputExistsError, ConversionError: one-line messages.
    """
    started = time.perf_counter()
    if recipe is None:
        if float_io and calibration_data is None:
            raise InputDataError("--float-io applies to full-integer models; use it with --int8 --calibration-data")
        recipe = ConvertRecipe(Quantization.INT8 if int8 else Quantization.FLOAT32, float_io=float_io,
                               calibration_samples=calibration_samples)
    run = _Run(recipe, model_path, output_path, calibration_data, train_data, val_data, eval_data, image_range,
               force, started, custom_objects, trust_model, force_range, signature, foreign, fallback, explain)
    try:
        return run.execute()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: say how far it got; nothing half-written is left
        raise ConversionInterrupted(run.step, tuple(run.stages)) from None
    except ImportError as exc:  # a converter dependency missing on a runtime-only install
        from edgert.converters._tf import missing_extra

        raise missing_extra(exc) from None
    finally:
        run.cleanup()


class ConversionInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during `convert`: the step it stopped in and the stages that finished. No output file
    was written, or the ones written are removed."""

    def __init__(self, step: str, finished: tuple[StageReport, ...]):
        super().__init__(step)
        self.step = step
        self.finished = finished

    def describe(self) -> str:
        done = ", ".join(f"{s.stage} ({s.seconds:.1f} s)" for s in self.finished if s.stage != "original")
        return (f"interrupted while {self.step}" + (f"; finished: {done}" if done else "")
                + "; nothing was written")


class _Run(Int8Choices, Stages):
    """One conversion: checks everything cheap first, then the stages, then writes all outputs."""

    def __init__(self, recipe, model_path, output_path, calibration_data, train_data, val_data, eval_data,
                 image_range, force, started, custom_objects=None, trust_model=False, force_range=False,
                 signature=None, foreign=None, fallback=True, explain=False):
        self.recipe, self.model_path, self.image_range, self.force, self.started = (
            recipe, Path(model_path), image_range, force, started)
        self.custom_objects, self.trust_model, self.force_range = custom_objects, trust_model, force_range
        self.signature = signature
        self.fallback, self.fallback_from = fallback, None  # the mode asked for, when another was written
        self.explain = explain
        self.kind = kind_of(model_path)  # what the path is; every kind answers the same questions (kinds.py)
        self.foreign = foreign
        self.opened = None  # the loaded source (sources.Opened), once `execute` has opened it
        self._workdir = None
        self.declared = None  # the input range the model states (ranges.Declared), once it is loaded
        self.paths = {"calibration": calibration_data, "train": train_data, "val": val_data, "eval": eval_data}
        self.notes: list[str] = []
        self.stages: list[StageReport] = []
        self.step = "checking the inputs"  # what an interruption stopped
        self.mode = recipe.quantization
        if self.mode is Quantization.INT8 and calibration_data is None and train_data is None and not recipe.qat:
            self.mode = Quantization.DYNAMIC  # full integer needs representative data
            self.notes.append(FULL_INTEGER_HINT)
        self.output_path = output_path

    def _check_outputs(self) -> Path:
        out = check_output_path(self.output_path or default_output_path(self.model_path, self.mode), force=self.force)
        for side in (".recipe.json", ".report.json"):
            check_output_path(str(out) + side, force=self.force)
        return out

    def cleanup(self) -> None:
        if self._workdir is not None:
            self._workdir.cleanup()

    def _scratch(self) -> Path:
        """A folder for a route's intermediate files, removed by `cleanup`."""
        import tempfile

        self._workdir = tempfile.TemporaryDirectory(prefix="edgert-foreign-")
        return Path(self._workdir.name)

    def _open(self):
        """The source, loaded through its kind: a Keras model or SavedModel, or a PyTorch or ONNX source through
        its route."""
        self.opened = self.kind.open(options=self.foreign, mode=self.mode, float_io=self.recipe.float_io,
                                     custom_objects=self.custom_objects, trust_model=self.trust_model,
                                     signature=self.signature, workdir=self._scratch, notes=self.notes)
        return self.opened.source

    def execute(self) -> ConversionResult:
        recipe = self.recipe
        has_stages = bool(recipe.prune or recipe.cluster or recipe.distill or recipe.qat or recipe.prune_channels)
        self.kind.check(trust_model=self.trust_model, foreign_options=self.foreign is not None,
                        keras_options=self.custom_objects is not None or self.signature is not None,
                        stages=has_stages, training_data=any(self.paths[k] is not None for k in ("train", "val", "eval")))
        out = self._check_outputs()
        missing = [o for o in recipe.needs_training_data if self.paths["train"] is None]
        if missing:
            raise InputDataError(f"{', '.join(missing)} need(s) training data: add --train-data FILE.npz|DIR")
        if self.mode.needs_calibration and self.mode is not Quantization.INT8 and \
                self.paths["calibration"] is None and self.paths["train"] is None:
            raise InputDataError(f"--{self.mode.value} needs representative data: add --calibration-data "
                                 "(or --train-data)")
        if self.paths["calibration"] is not None and not recipe.quantization.needs_calibration and not recipe.qat:
            raise InputDataError(f"--calibration-data is only used with --int8, --int16x8 or --edgetpu, not "
                                 f"{recipe.quantization.value}; add one of them or drop the data")
        if self.paths["val"] is not None and self.paths["train"] is None:
            raise InputDataError("--val-data is used while fine-tuning; add --train-data or drop it")
        if recipe.distill:
            check_source(recipe.distill.teacher, self.trust_model)

        self.step = "loading the model"
        source = self._open()
        custom = self._custom = source.custom_objects
        self.notes.extend(source.notes)
        if has_stages and source.kind != "keras":
            raise InputDataError("pruning, clustering, distillation and QAT need a Keras model (.h5 or .keras); "
                                 "a SavedModel directory supports post-training quantization only")
        from edgert.converters.ranges import declared_range

        self.declared = declared_range(source.keras_model)
        if self.image_range is None and self.declared is not None:
            self.image_range = self.declared.value_range
        self.step = "loading the data"
        data = self._load_data(source)
        calibration = self._calibration(source, data)

        from edgert.converters._tf import import_tf

        tf, _ = import_tf()
        model = source.keras_model
        result_extra = {}
        if "eval" in data:
            result_extra["eval_samples"] = len(data["eval"])
            if model is not None:
                from edgert.converters.training import keras_accuracy

                # Measured now: tfmot wraps the original layers, so fine-tuning changes them in place.
                self.step = "measuring the original's accuracy"
                result_extra["accuracy_source"] = keras_accuracy(model, data["eval"])
            else:
                self.notes.append("the original's accuracy is measured for Keras models only")
        if model is not None and has_stages:
            self._stage("original", 0.0, model)
        reference = self.opened.reference_name(model)
        if has_stages:
            from edgert.converters.training import outputs_are_probabilities, seed_everything

            seed_everything(recipe.seed)
            if source.framework == "keras3":
                model = self._rebuild(model, custom)
            if "train" in data:
                probe = data["train"].x
            else:
                probe = calibration[0] if calibration else np.zeros((2, *source.inputs[0].shape), np.float32)
            probabilities = outputs_are_probabilities(model, probe)
            model = self._run_stages(model, data, probabilities, tf)
            reference = f"the Keras model after {self.stages[-1].stage}"

        if calibration and self.mode in (Quantization.INT8, Quantization.EDGETPU) and not recipe.qat:
            recipe = self._keep_mixed_range_tail(tf, source, model, calibration)
        self.step = f"converting to TFLite ({self.mode.value})"
        self.quantizer = "ai-edge-quantizer" if self._two_quantizers() else None
        notes_before = len(self.notes)
        flatbuffer = unnamed = self._to_flatbuffer(tf, source, model, self.mode, recipe, calibration, self.notes)
        if recipe.prune is not None and self.mode is Quantization.FLOAT32 and not recipe.qat:
            flatbuffer = self._sparse_if_faster(tf, source, model, flatbuffer)
        flatbuffer = self._named(flatbuffer, source, model)
        if getattr(self, "channel_report", None) is not None:
            self._channel_latency(tf, source, calibration, flatbuffer)
        info = describe(flatbuffer, str(out))  # never write a model the runtime could not read back
        # zlib releases the GIL: the compressed size (seconds for a 100 MB model) is measured beside the checks.
        gzipped = Background(lambda: len(gzip.compress(flatbuffer, 6)))
        result_extra["output_gzip_bytes"] = gzipped
        self.step = "checking the .tflite against the model"
        with atomic_path(out) as tmp:
            tmp.write_bytes(flatbuffer)
            try:
                result_extra["agreement"] = self._agreement(tf, tmp, source, model, reference, calibration, data)
                if self.quantizer is not None:
                    flatbuffer, unnamed, result_extra["agreement"] = self._better_quantizer(
                        tf, source, model, reference, calibration, data, flatbuffer, unnamed,
                        result_extra["agreement"], tmp, notes_before)
                    info = describe(flatbuffer, str(out))
                    gzipped = Background(lambda: len(gzip.compress(flatbuffer, 6)))
                    result_extra["output_gzip_bytes"] = gzipped
                if self._detections_lost(result_extra["agreement"]):
                    flatbuffer, result_extra["agreement"] = self._dynamic_fallback(
                        tf, source, model, reference, calibration, data, flatbuffer, result_extra["agreement"], tmp)
                    if self.mode is Quantization.DYNAMIC:
                        info = describe(flatbuffer, str(out))
                        gzipped = Background(lambda: len(gzip.compress(flatbuffer, 6)))
                        result_extra["output_gzip_bytes"] = gzipped
            except ModelFormatError as exc:
                rejected = self.opened.rejected(self.mode, brief(str(exc).split(": ", 1)[-1], 160))
                if rejected is None:
                    raise
                raise ConversionError(rejected) from None
            if "eval" in data:
                self.step = "measuring the .tflite's accuracy"
                result_extra["accuracy_tflite"] = tflite_accuracy(tmp, data["eval"])
            if self.explain:
                result_extra["layer_errors"] = self._layer_errors(tf, source, model, calibration, unnamed)
        try:
            return self._finish(out, source, flatbuffer, info, calibration, result_extra)
        except BaseException:
            # The model is in place but its recipe and report are not: remove it, so a set is whole or absent.
            for path in (out, Path(str(out) + ".recipe.json"), Path(str(out) + ".report.json")):
                path.unlink(missing_ok=True)
            raise

    def _finish(self, out, source, flatbuffer, info, calibration, result_extra) -> ConversionResult:
        from edgert.converters.tflite import edgetpu_compile

        recipe = self.recipe
        self.step = "compiling for the Edge TPU" if self.mode is Quantization.EDGETPU else "writing the outputs"
        edgetpu_output = edgetpu_compile(out, self.force, self.notes) if self.mode is Quantization.EDGETPU else None
        result_extra["output_gzip_bytes"] = result_extra["output_gzip_bytes"].result()
        agreement = result_extra.get("agreement")
        warnings = [agreement.warning] if agreement is not None and agreement.warning else []
        source_acc, tflite_acc = result_extra.get("accuracy_source"), result_extra.get("accuracy_tflite")
        if source_acc is not None and tflite_acc is not None and (source_acc - tflite_acc) * 100 > DROP_WARNING:
            suspect = ("the calibration data's range first (it must be the range the model saw in training: "
                       "--image-range for image folders)" if calibration is not None else
                       "the recipe's stages (more fine-tuning epochs, or a milder sparsity)")
            warnings.append(f"the .tflite is {(source_acc - tflite_acc) * 100:.1f} points less accurate than the "
                            f"original ({source_acc:.2%} -> {tflite_acc:.2%}); check {suspect}")
        result = ConversionResult(
            source_path=str(self.model_path), output_path=str(out), mode=self.mode,
            source_size_bytes=source.size_bytes, output_size_bytes=len(flatbuffer),
            inputs=info.inputs, outputs=info.outputs,
            calibration_samples=len(calibration[0]) if calibration else 0,
            duration_s=time.perf_counter() - self.started, recipe=recipe, stages=tuple(self.stages),
            edgetpu_output=edgetpu_output, notes=tuple(self.notes), source_format=source.label,
            route=self.opened.route, mode_requested=self.fallback_from, layout=self.opened.layout,
            warnings=tuple(warnings), channels=getattr(self, "channel_report", None), **result_extra)
        recipe.save(result.recipe_path)
        write_bytes_atomic(result.report_path, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
        return result

    def _named(self, flatbuffer: bytes, source, model) -> bytes:
        """The flatbuffer with a `serving_default` signature in the source model's own names."""
        from edgert.converters.signature import write_signature

        self.step = "writing the signature"
        named, note = write_signature(flatbuffer, self.opened.converted_names(model), source.names)
        if note:
            self.notes.append(note)
        moved = [s.name for s in source.inputs if s.source_shape is not None]
        if moved:
            from edgert.converters.foreign.layout import with_source_layout

            named = with_source_layout(named, moved)
        return named

    def _to_flatbuffer(self, tf, source, model, mode, recipe, calibration, notes, tensorflow_int=False) -> bytes:
        """The source (or the model the stages made) converted in `mode` by its route, before naming
        (`tensorflow_int`: the onnx route's integer modes by TensorFlow's converter instead of ai-edge-quantizer)."""
        from edgert.converters.tflite import converter_for, to_tflite

        if self.opened.convert is not None:
            return self.opened.convert(mode, calibration, notes, recipe.keep_float, recipe.int16)
        if self.opened.takes_quantizer(mode, recipe.float_io) and not tensorflow_int:
            # the onnx route's SavedModel: TensorFlow's converter in float (it keeps onnx2tf's graph as it is),
            # then the quantizer the litert-torch route uses (`_better_quantizer` measures TensorFlow's too)
            from edgert.converters.foreign.litert_route import quantize

            floating = self._to_flatbuffer(tf, source, model, Quantization.FLOAT32, ConvertRecipe(), None, [])
            return quantize(floating, mode, calibration, len(source.inputs), notes, recipe.keep_float, recipe.int16,
                            input_names=list(self.opened.model_names.inputs))
        if recipe.int16:
            raise InputDataError("--int16 takes effect through ai-edge-quantizer, which quantizes PyTorch and ONNX "
                                 "sources; on TensorFlow's converter (Keras models, SavedModels, --float-io) keep "
                                 "those layers in float with --keep-float")
        converter = converter_for(tf, source, model, batch=self.opened.fixed_batch(mode))
        return to_tflite(tf, converter, mode, recipe, calibration, str(self.model_path), notes,
                         calibration_names=self.opened.calibration_keys(model))

    def _layer_errors(self, tf, source, model, calibration, quantized: bytes) -> tuple:
        """Each quantized operator's error against float, worst first (see `explain`)."""
        from edgert.converters import explain
        from edgert.converters.tflite import converter_for

        if not calibration or not (self.fallback_from or self.mode).needs_calibration:  # the int8 model explained
            raise InputDataError("--explain measures a calibrated mode's layers: add --int8 (or --int16x8, --edgetpu) "
                                 "with --calibration-data")
        self.step = "measuring each layer's int8 error"
        if self.opened.convert is not None or self.quantizer == "ai-edge-quantizer":
            floating = self._named(self._to_flatbuffer(tf, source, model, Quantization.FLOAT32, ConvertRecipe(),
                                                       None, []), source, model)
            named = self._named(quantized, source, model)
            return tuple(explain.quantizer_layer_errors(floating, named, calibration, [s.name for s in source.inputs],
                                                        "serving_default"))
        converter = converter_for(tf, source, model)
        return tuple(explain.tf_layer_errors(tf, converter, calibration, self.opened.calibration_keys(model)))

    def _reference(self, tf, source, model):
        """The source as a function of samples to its outputs by name (`Opened.reference`)."""
        return self.opened.reference(tf, model)

    def _agreement(self, tf, tflite_path, source, model, reference_name, calibration, data) -> Agreement:
        from edgert.converters import agreement

        n = agreement.SAMPLES
        if calibration:
            samples, what = list(calibration), "calibration samples"  # a detector is compared on more
        elif "eval" in data:
            samples, what = [data["eval"].x[:n]], "evaluation samples"
        else:
            samples, what = seeded_samples(source.inputs, n), "seeded random inputs"
        reference = self._reference(tf, source, model)
        return agreement.measure(self.mode.value, str(tflite_path), reference, reference_name, samples, what,
                                 [s.name for s in source.inputs])

    # -- data ------------------------------------------------------------------------------------------------

    def _load_data(self, source) -> dict:
        from edgert.converters.data import load_labelled_data

        wanted = {k: v for k, v in self.paths.items() if k in ("train", "val", "eval") and v is not None}
        if not wanted:
            return {}
        if len(source.inputs) != 1:
            raise InputDataError("--train-data/--val-data/--eval-data support single-input models only")
        num_classes = self._num_classes(source)
        return {k: load_labelled_data(v, source.inputs[0], num_classes, f"--{k}-data", self.image_range)
                for k, v in wanted.items()}

    @staticmethod
    def _num_classes(source) -> int:
        if source.keras_model is not None:
            shape = source.keras_model.output_shape
        else:
            shape = next(iter(source.function.structured_outputs.values())).shape
        if isinstance(shape, list) or len(shape) != 2 or shape[1] is None:
            raise InputDataError(f"labelled data needs a classifier with one (batch, classes) output; "
                                 f"the model outputs {shape}")
        return int(shape[1])

    def _calibration(self, source, data) -> list[np.ndarray] | None:
        if not self.mode.needs_calibration and not (self.recipe.qat and self.mode is Quantization.INT8):
            return None
        n = self.recipe.calibration_samples
        train = data.get("train")
        if self.paths["calibration"] is not None:
            from edgert.converters.calibration import load_calibration_arrays
            from edgert.converters.ranges import Span, check_calibration_range, declared_span

            arrays, dtypes = load_calibration_arrays(self.paths["calibration"], source.inputs, n, self.image_range,
                                                     self.notes)
            if not self.force_range:
                references = [Span.of(f"the {'training' if k == 'train' else 'evaluation'} data", d.x, d.stored_dtype)
                              for k, d in data.items() if k in ("train", "eval")] + declared_span(self.declared)
                check_calibration_range(arrays, dtypes[0] if dtypes else None, references,
                                        str(self.paths["calibration"]))
            return arrays
        if train is not None:
            chosen = np.random.default_rng(0).permutation(len(train))[:n]
            self.notes.append(f"calibrated on {len(chosen)} training samples (no --calibration-data given)")
            return [train.x[np.sort(chosen)]]
        return None

    # -- stages ----------------------------------------------------------------------------------------------
