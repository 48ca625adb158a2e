"""`convert`: a Keras model or SavedModel through a recipe's stages to a TFLite flatbuffer, with a report."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import numpy as np

from edgert.converters.recipe import (
    ChannelPruneConfig,
    ClusterConfig,
    ConvertRecipe,
    DistillConfig,
    PruneConfig,
    PruneSchedule,
    Quantization,
    RecipeError,
    TrainConfig,
)
from edgert.converters.agreement import Agreement
from edgert.converters.foreign import ForeignOptions
from edgert.converters.measure import Background, interleaved_p50, seeded_samples, tflite_accuracy
from edgert.converters.results import ConversionResult, StageReport
from edgert.converters.sources import check_source, open_model
from edgert.errors import ConversionError, InputDataError, ModelFormatError, brief
from edgert.files import atomic_path, check_output_path, write_bytes_atomic
from edgert.tflite.info import describe

DROP_WARNING = 5.0  # accuracy points lost that earn a warning line
# The modes an ONNX source is quantized in by ai-edge-quantizer (as a PyTorch module is), on the float .tflite: its
# int8 keeps a YOLO head's detections where TensorFlow's loses half. Dynamic range stays with TensorFlow's converter,
# whose hybrid kernels run at 0.6x float here where the quantizer's weight-only model runs at float's speed; float16,
# the Edge TPU and --float-io stay there too.
QUANTIZER_MODES = (Quantization.INT8, Quantization.INT16X8)
FULL_INTEGER_HINT = ("weights only were quantized (dynamic range); full-integer models, as the Edge TPU and NNAPI "
                     "int8 need, require --calibration-data")


def default_output_path(model_path: str | os.PathLike, mode: Quantization) -> Path:
    from edgert.converters.foreign import parse_source

    foreign = parse_source(model_path)
    p = foreign[1] if foreign else Path(model_path)
    stem = p.name if p.is_dir() else p.stem
    return p.parent / f"{stem}{mode.suffix}.tflite"


def recipe_from_options(*, int8=False, dynamic=False, float16=False, int16x8=False, edgetpu=False,
                        prune=None, prune_schedule=None, prune_structure=None,
                        prune_policy=None, cluster=None, distill_from=None, distill_temperature=4.0,
                        distill_alpha=0.1, qat=False, float_io=False, calibration_samples=200, epochs=None,
                        batch_size=32, learning_rate=None, seed=0, prune_channels=None,
                        prune_channels_criterion=None, prune_channels_policy=None, min_channels=None,
                        channel_multiple=None, keep_float=(), int16=()) -> ConvertRecipe:
    """The recipe that command-line style options describe; conflicting options are named in the error."""
    chosen = [name for name, on in (("--dynamic", dynamic), ("--float16", float16), ("--int8", int8),
                                    ("--int16x8", int16x8), ("--edgetpu", edgetpu)) if on]
    if len(chosen) > 1:
        raise RecipeError(f"{' and '.join(chosen)} conflict: choose one post-training quantization")
    if chosen:
        quantization = Quantization(chosen[0].lstrip("-"))
    else:
        quantization = Quantization.INT8 if qat else Quantization.FLOAT32
    if prune is None and any(v is not None for v in (prune_schedule, prune_structure, prune_policy)):
        raise RecipeError("--prune-schedule, --prune-structure and --prune-policy need --prune SPARSITY")
    channel_options = {"criterion": prune_channels_criterion, "policy": prune_channels_policy,
                       "min_channels": min_channels, "multiple": channel_multiple}
    if prune_channels is None and any(v is not None for v in channel_options.values()):
        raise RecipeError("--prune-channels-criterion, --prune-channels-policy, --min-channels and "
                          "--channel-multiple need --prune-channels FRACTION")
    return ConvertRecipe(
        prune_channels=ChannelPruneConfig(prune_channels, **{k: v for k, v in channel_options.items()
                                                              if v is not None})
        if prune_channels is not None else None,
        quantization=quantization,
        prune=PruneConfig(prune, PruneSchedule(prune_schedule or "polynomial"), prune_structure, prune_policy)
        if prune is not None else None,
        cluster=ClusterConfig(cluster) if cluster is not None else None,
        distill=DistillConfig(str(distill_from), distill_temperature, distill_alpha) if distill_from else None,
        qat=qat, float_io=float_io, calibration_samples=calibration_samples,
        train=TrainConfig(epochs, batch_size, learning_rate), seed=seed,
        keep_float=tuple(n.strip() for v in keep_float for n in v.split(",") if n.strip()),
        int16=tuple(n.strip() for v in int16 for n in v.split(",") if n.strip()))


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


class _Run:
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
        from edgert.converters.foreign import parse_source

        self.foreign_source = parse_source(model_path)
        if foreign is not None and self.foreign_source is None:
            raise InputDataError("--route, --layout, --input-shape and --weights are for PyTorch modules "
                                 "(FILE.py:FACTORY) and .onnx files")
        self.foreign = foreign or ForeignOptions()
        self.opened = None  # foreign.Opened, for a PyTorch or ONNX source
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

    def _open(self):
        """The source model: a Keras model or SavedModel, or a PyTorch or ONNX source through its route."""
        if self.foreign_source is None:
            return open_model(self.model_path, self.custom_objects, self.trust_model, self.signature)
        import tempfile

        from edgert.converters.foreign import open_foreign

        if self.custom_objects is not None or self.signature is not None:
            raise InputDataError("--custom-objects and --signature are for Keras models and SavedModels")
        kind, path, factory = self.foreign_source
        self._workdir = tempfile.TemporaryDirectory(prefix="edgert-foreign-")
        self.opened = open_foreign(kind, path, factory, self.foreign, self.mode, self.recipe.float_io,
                                   self.trust_model, Path(self._workdir.name), self.notes)
        return self.opened.source

    def execute(self) -> ConversionResult:
        recipe = self.recipe
        if self.foreign_source is None:
            check_source(self.model_path, self.trust_model)
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
        has_stages = bool(recipe.prune or recipe.cluster or recipe.distill or recipe.qat or recipe.prune_channels)
        if self.foreign_source is not None and (has_stages or any(
                self.paths[k] is not None for k in ("train", "val", "eval"))):
            raise InputDataError("pruning, clustering, distillation, QAT and --train/--val/--eval-data need a Keras "
                                 "model; a PyTorch or ONNX source supports post-training quantization only")

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
        reference = "the SavedModel" if model is None else "the Keras model"
        if self.opened is not None:
            reference = self.opened.reference_name
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
                if self.opened is None:
                    raise
                other = "litert-torch" if self.opened.route == "onnx" else "onnx"
                raise ConversionError(
                    f"the {self.mode.value} .tflite the {self.opened.route} route produced is rejected by the "
                    f"interpreter ({brief(str(exc).split(': ', 1)[-1], 160)}); nothing was written"
                    + (f": try --route {other}" if self.foreign_source[0] == "torch" else "")) from None
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
            route=self.opened.route if self.opened else None, mode_requested=self.fallback_from,
            layout=self.opened.layout if self.opened else (),
            warnings=tuple(warnings), channels=getattr(self, "channel_report", None), **result_extra)
        recipe.save(result.recipe_path)
        write_bytes_atomic(result.report_path, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
        return result

    def _named(self, flatbuffer: bytes, source, model) -> bytes:
        """The flatbuffer with a `serving_default` signature in the source model's own names."""
        from edgert.converters.signature import keras_names, write_signature

        self.step = "writing the signature"
        if self.opened is not None:
            current = self.opened.model_names
        else:
            current = keras_names(model) if model is not None else source.names
        named, note = write_signature(flatbuffer, current, source.names)
        if note:
            self.notes.append(note)
        moved = [s.name for s in source.inputs if s.source_shape is not None]
        if moved:
            from edgert.converters.foreign.layout import with_source_layout

            named = with_source_layout(named, moved)
        return named

    def _rebuild(self, model, custom):
        """tfmot needs tf_keras: the Keras 3 model is rebuilt there and checked against itself."""
        from edgert.converters.keras3 import rebuild_in_tf_keras

        self.step = "rebuilding the Keras 3 model in tf_keras"
        t0 = time.perf_counter()
        rebuilt, report = rebuild_in_tf_keras(model, custom)
        self._stage("rebuild", time.perf_counter() - t0, rebuilt, notes=(report.describe(),))
        return rebuilt

    def _to_flatbuffer(self, tf, source, model, mode, recipe, calibration, notes, tensorflow_int=False) -> bytes:
        """The source (or the model the stages made) converted in `mode` by its route, before naming
        (`tensorflow_int`: the onnx route's integer modes by TensorFlow's converter instead of ai-edge-quantizer)."""
        from edgert.converters.tflite import converter_for, to_tflite

        if self.opened is not None and self.opened.convert is not None:
            return self.opened.convert(mode, calibration, notes, recipe.keep_float, recipe.int16)
        if self.opened is not None and mode in QUANTIZER_MODES and not recipe.float_io and not tensorflow_int:
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
        # the Edge TPU needs batch 1: onnx2tf's SavedModel has it already (its shapes are fixed)
        fixed = mode is Quantization.EDGETPU and self.opened is None
        converter = converter_for(tf, source, model, batch=1 if fixed else None)
        # a SavedModel's calibration samples go by signature key (the converter's input order is its own)
        keys = (list(self.opened.model_names.inputs) if self.opened is not None
                else [s.name for s in source.inputs] if model is None else None)
        return to_tflite(tf, converter, mode, recipe, calibration, str(self.model_path), notes,
                         calibration_names=keys)

    def _layer_errors(self, tf, source, model, calibration, quantized: bytes) -> tuple:
        """Each quantized operator's error against float, worst first (see `explain`)."""
        from edgert.converters import explain
        from edgert.converters.tflite import converter_for

        if not calibration or not (self.fallback_from or self.mode).needs_calibration:  # the int8 model explained
            raise InputDataError("--explain measures a calibrated mode's layers: add --int8 (or --int16x8, --edgetpu) "
                                 "with --calibration-data")
        self.step = "measuring each layer's int8 error"
        if self.opened is not None and (self.opened.convert is not None or self.quantizer == "ai-edge-quantizer"):
            floating = self._named(self._to_flatbuffer(tf, source, model, Quantization.FLOAT32, ConvertRecipe(),
                                                       None, []), source, model)
            named = self._named(quantized, source, model)
            return tuple(explain.quantizer_layer_errors(floating, named, calibration, [s.name for s in source.inputs],
                                                        "serving_default"))
        converter = converter_for(tf, source, model)
        keys = (list(self.opened.model_names.inputs) if self.opened is not None
                else [s.name for s in source.inputs] if model is None else None)
        return tuple(explain.tf_layer_errors(tf, converter, calibration, keys))

    def _two_quantizers(self) -> bool:
        """Whether both ai-edge-quantizer and TensorFlow's converter quantize this model (the onnx route's int8 and
        int16x8, unless --int16, which only the former has, or --float-io, which only the latter has)."""
        return (self.opened is not None and self.opened.convert is None and self.mode in QUANTIZER_MODES
                and not self.recipe.float_io and not self.recipe.int16)

    def _better_quantizer(self, tf, source, model, reference_name, calibration, data, flatbuffer, unnamed,
                          agreement, tmp, notes_before):
        """The onnx route's integer model from TensorFlow's converter as well, measured on the same samples; the one
        that agrees better with the source is kept (written to `tmp`). Neither wins everywhere: TensorFlow's wrote
        ResNet-18 with an operator the interpreter refuses and loses YOLO boxes, ai-edge-quantizer gives PaddleOCR's
        classifier a worse cosine. Better: no warning, then more detections kept, then the worse output's mean
        cosine. Returns (flatbuffer, unnamed flatbuffer, agreement)."""
        self.step = f"converting to TFLite ({self.mode.value}) with TensorFlow's quantizer too"
        first_notes, self.notes[notes_before:] = self.notes[notes_before:], []
        try:
            other_unnamed = self._to_flatbuffer(tf, source, model, self.mode, self.recipe, calibration, self.notes,
                                                tensorflow_int=True)
            other = self._named(other_unnamed, source, model)
            describe(other, str(tmp))
            tmp.write_bytes(other)
            other_agreement = self._agreement(tf, tmp, source, model, reference_name, calibration, data)
        except Exception as exc:  # noqa: BLE001 - a second opinion that fails leaves the first as it was
            why = brief(str(exc).split(": ", 1)[-1], 160)
            self.notes[notes_before:] = first_notes + [
                f"{self.mode.value} by ai-edge-quantizer (TensorFlow's converter failed: {why})"]
            tmp.write_bytes(flatbuffer)
            return flatbuffer, unnamed, agreement

        def score(a):
            d = a.detections
            kept = min(d.recall, d.precision) if d is not None and d.reference > 0 else 1.0
            return (not a.warning, round(kept, 3), min((o.cosine for o in a.outputs), default=1.0))

        def measure(a):  # what decided, in the order `score` weighs it
            d = a.detections
            warned = "warned, " if a.warning else ""
            if d is not None and d.reference > 0:
                return f"{warned}{d.matched} of {d.reference} detections kept, {d.found} found"
            return f"{warned}cosine {min((o.cosine for o in a.outputs), default=1.0):.4f}"

        if score(other_agreement) > score(agreement):
            self.quantizer = "tensorflow"
            self.notes.append(f"{self.mode.value} by TensorFlow's converter: it agrees better with the source than "
                              f"ai-edge-quantizer ({measure(other_agreement)}, against {measure(agreement)})")
            return other, other_unnamed, other_agreement
        self.notes[notes_before:] = first_notes + [
            f"{self.mode.value} by ai-edge-quantizer: it agrees better with the source than TensorFlow's converter "
            f"({measure(agreement)}, against {measure(other_agreement)})"]
        tmp.write_bytes(flatbuffer)
        return flatbuffer, unnamed, agreement

    def _detections_lost(self, agreement) -> bool:
        from edgert.converters.agreement import MIN_DETECTION_AGREEMENT

        d = agreement.detections if agreement is not None else None
        return (self.mode in (Quantization.INT8, Quantization.EDGETPU) and d is not None and d.reference > 0
                and min(d.recall, d.precision) < MIN_DETECTION_AGREEMENT)

    def _dynamic_fallback(self, tf, source, model, reference_name, calibration, data, int8_model, int8_agreement,
                          tmp):
        """Full int8 lost a detector's detections: measure dynamic range (int8 weights, float activations) on the
        same samples, and the speed of each against float32. Where dynamic range keeps them and the user allows it
        (not --no-fallback, not --edgetpu, whose accelerator needs integer activations), it is written instead;
        otherwise the warning names it with its cost. Returns (flatbuffer, agreement)."""
        import dataclasses
        import tempfile

        from edgert.converters.agreement import MIN_DETECTION_AGREEMENT

        lost = int8_agreement.detections
        self.step = "measuring dynamic range, which keeps the activations in float"
        plain = dataclasses.replace(self.recipe, quantization=Quantization.DYNAMIC, keep_float=(), float_io=False)
        dynamic = self._named(self._to_flatbuffer(tf, source, model, Quantization.DYNAMIC, plain, None, []),
                              source, model)
        floating = self._named(self._to_flatbuffer(tf, source, model, Quantization.FLOAT32, ConvertRecipe(), None,
                                                   []), source, model)
        with tempfile.TemporaryDirectory(prefix="edgert-fallback-") as folder:
            paths = {"float32": Path(folder) / "float32.tflite", "dynamic": Path(folder) / "dynamic.tflite"}
            paths["float32"].write_bytes(floating)
            paths["dynamic"].write_bytes(dynamic)
            saved_mode, self.mode = self.mode, Quantization.DYNAMIC
            try:
                other = self._agreement(tf, paths["dynamic"], source, model, reference_name, calibration, data)
            finally:
                self.mode = saved_mode
            p50 = interleaved_p50({**paths, "int8": tmp})
        kept = other.detections
        speeds = (f"p50 here (1 thread): float32 {p50['float32']:.3f} ms, full int8 {p50['int8']:.3f} ms "
                  f"({p50['int8'] / p50['float32']:.2f}x), dynamic range {p50['dynamic']:.3f} ms "
                  f"({p50['dynamic'] / p50['float32']:.2f}x)")
        dynamic_ok = kept is not None and min(kept.recall, kept.precision) >= MIN_DETECTION_AGREEMENT
        if dynamic_ok and self.fallback and self.mode is Quantization.INT8:
            self.notes.append(f"full int8 kept {lost.matched} of {lost.reference} detections (recall "
                              f"{lost.recall:.2f}, precision {lost.precision:.2f}); dynamic range (int8 weights, float "
                              f"activations) keeps {kept.matched} of {kept.reference}, so that is the model written: "
                              f"{speeds}; --no-fallback keeps full int8")
            self.fallback_from = self.mode
            self.mode = Quantization.DYNAMIC
            self.recipe = plain
            tmp.write_bytes(dynamic)
            return dynamic, other
        offer = (f"; dynamic range (--dynamic: int8 weights, float activations) keeps {kept.matched} of "
                 f"{kept.reference} ({speeds})" if kept is not None else "")
        why = ("the Edge TPU needs integer activations" if self.mode is Quantization.EDGETPU
               else "--no-fallback" if dynamic_ok else "it does not keep them either")
        return int8_model, dataclasses.replace(int8_agreement, warning=int8_agreement.warning + offer
                                               + f"; full int8 was kept ({why})")

    def _keep_mixed_range_tail(self, tf, source, model, calibration):
        """Where an output mixes ranges one int8 scale cannot hold (boxes in pixels beside scores, as YOLO exports
        end), the recipe with the operators that join them kept in float (see `detectors`); the recipe as it was
        otherwise. The float model is converted once more to find them."""
        import dataclasses

        from edgert.converters import detectors

        self.step = "looking for outputs whose ranges one int8 scale cannot hold"
        samples = [a[:16] for a in calibration]
        mixed = detectors.mixed_range_outputs(
            {k: np.asarray(v) for k, v in self._reference(tf, source, model)(samples).items()})
        if not mixed:
            return self.recipe
        float_model = self._to_flatbuffer(tf, source, model, Quantization.FLOAT32, ConvertRecipe(), None, [])
        named = self._named(float_model, source, model)
        tail = detectors.float_tail(named, {s.name: a[:8] for s, a in zip(source.inputs, calibration)},
                                    list(mixed))
        if not tail:
            return self.recipe
        for name, found in mixed.items():
            self.notes.append(f"{found.describe(name)}; kept in float from where the ranges join to the output "
                              f"({len(tail)} operator(s): {', '.join(tail[:4])}{' ...' if len(tail) > 4 else ''}), "
                              "the rest int8, inputs and outputs float")
        self.recipe = dataclasses.replace(self.recipe, keep_float=tuple(dict.fromkeys(self.recipe.keep_float
                                                                                      + tuple(tail))))
        return self.recipe

    def _reference(self, tf, source, model):
        """The source model as a function of samples (one array per input, in the .tflite's layout) to its outputs
        by name: torch or onnxruntime for a foreign source, Keras for a Keras model, else the SavedModel."""
        if self.opened is not None:
            return self.opened.reference
        if model is not None:
            from edgert.converters.keras3 import call_model

            def reference(xs):
                # The final model's outputs, flattened, carry the source's names by position (write_signature).
                return dict(zip(source.names.outputs, call_model(model, xs)))
            return reference
        signature = source.function

        def reference(xs):
            outputs = signature(**{spec.name: tf.constant(x) for spec, x in zip(source.inputs, xs)})
            return {k: np.asarray(outputs[k]) for k in sorted(outputs)}
        return reference

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

    def _stage(self, name, seconds, model, *, quantized=(), kept_float=(), notes=(), clusters=False):
        from edgert.converters.training import clusters_by_layer, keras_size, sparsity_by_layer

        size = keras_size(model)
        self.stages.append(StageReport(
            name, seconds, size.params, size.size_bytes, size.gzip_bytes, sparsity_by_layer(model),
            clusters_by_layer(model) if clusters else {}, tuple(quantized), tuple(kept_float), tuple(notes)))
        self.notes.extend(notes)

    def _run_stages(self, model, data, probabilities, tf):
        recipe, train, val = self.recipe, data.get("train"), data.get("val")
        if recipe.prune_channels:
            model = self._prune_channels(model, train, probabilities)
        if recipe.distill:
            from edgert.converters.distill import distill
            from edgert.converters.sources import open_model as open_teacher
            from edgert.converters.training import outputs_are_probabilities

            self.step = "distilling"
            t0 = time.perf_counter()
            teacher = open_teacher(recipe.distill.teacher, self.custom_objects, self.trust_model).keras_model
            if teacher is None:
                raise InputDataError("--distill-from needs a Keras model (.h5 or .keras) as the teacher")
            model, notes = distill(model, teacher, recipe.distill, train, recipe.train, probabilities,
                                   outputs_are_probabilities(teacher, train.x), recipe.seed)
            self._stage("distill", time.perf_counter() - t0, model, notes=notes)
        if recipe.prune:
            from edgert.converters.prune import prune

            self.step = "pruning"
            t0 = time.perf_counter()
            model, notes = prune(model, recipe.prune, train, val, recipe.train, probabilities, recipe.seed)
            self._stage("prune", time.perf_counter() - t0, model, notes=notes)
        if recipe.cluster:
            from edgert.converters.cluster import cluster

            self.step = "clustering"
            t0 = time.perf_counter()
            model, notes = cluster(model, recipe.cluster, train, val, recipe.train, probabilities,
                                   preserve_sparsity=recipe.prune is not None)
            self._stage("cluster", time.perf_counter() - t0, model, notes=notes, clusters=True)
        if recipe.qat:
            from edgert.converters.qat import qat

            scheme = ("cluster_prune" if recipe.cluster and recipe.prune else "cluster" if recipe.cluster
                      else "prune" if recipe.prune else "default")
            self.step = "training for quantization (QAT)"
            t0 = time.perf_counter()
            model, quantized, kept_float, notes = qat(model, train, val, recipe.train, probabilities, scheme)
            self._stage("qat", time.perf_counter() - t0, model, quantized=quantized, kept_float=kept_float,
                        notes=notes, clusters=recipe.cluster is not None)
        return model

    def _sparse_if_faster(self, tf, source, model, dense: bytes) -> bytes:
        """A pruned float model, converted again with TFLite's sparse encoding (EXPERIMENTAL_SPARSITY), which
        XNNPACK can run as sparse inference where the weights fit its pattern: kept only when it measures faster
        here (p50 of single-thread runs, interleaved), and the note says which was kept and why."""
        import tempfile

        from edgert.converters.tflite import converter_for
        from edgert.runtime.native import native_log_captured

        self.step = "measuring the sparse encoding (XNNPACK sparse inference)"
        converter = converter_for(tf, source, model)
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
        try:
            with native_log_captured():
                sparse = converter.convert()
        except Exception as exc:  # noqa: BLE001 - the dense model stands; say why there is no sparse one
            self.notes.append(f"sparse encoding: the converter refused it ({brief(exc, 120)}); kept the dense model")
            return dense
        with tempfile.TemporaryDirectory(prefix="edgert-sparse-") as folder:
            timings = {}
            for label, data in (("dense", dense), ("sparse", sparse)):
                path = Path(folder) / f"{label}.tflite"
                path.write_bytes(data)
                timings[label] = path
            p50 = interleaved_p50(timings)
        ratio = p50["sparse"] / p50["dense"]
        keep = ratio < 0.95
        self.notes.append(f"sparse encoding (XNNPACK sparse inference): {p50['sparse']:.3f} vs {p50['dense']:.3f} ms "
                          f"p50 dense, {ratio:.2f}x; kept the {'sparse' if keep else 'dense'} model"
                          + ("" if keep else " (not faster here)"))
        return sparse if keep else dense

    def _channel_latency(self, tf, source, calibration, pruned: bytes) -> None:
        """The unpruned model converted the same way, and both timed here: the latency the channels saved."""
        import dataclasses
        import tempfile

        from edgert.converters.tflite import converter_for, to_tflite

        self.step = "measuring the unpruned model's latency"
        recipe = dataclasses.replace(self.recipe, prune_channels=None)
        converter = converter_for(tf, source, self.unpruned, batch=1 if self.mode is Quantization.EDGETPU else None)
        unpruned = to_tflite(tf, converter, self.mode, recipe, calibration, str(self.model_path), [])
        with tempfile.TemporaryDirectory(prefix="edgert-channels-") as folder:
            paths = {"before": Path(folder) / "before.tflite", "after": Path(folder) / "after.tflite"}
            paths["before"].write_bytes(unpruned)
            paths["after"].write_bytes(pruned)
            p50 = interleaved_p50(paths)
        report = self.channel_report
        report.latency_before_ms, report.latency_after_ms = p50["before"], p50["after"]
        self.notes.append(f"channels: p50 {p50['before']:.3f} -> {p50['after']:.3f} ms here (single thread, "
                          f"{p50['after'] / p50['before']:.2f}x)")

    def _prune_channels(self, model, train, probabilities):
        from edgert.converters.channels import prune_channels

        recipe = self.recipe
        self.step = "pruning channels"
        t0 = time.perf_counter()
        pruned, report = prune_channels(model, recipe.prune_channels, self._custom)
        self.channel_report, self.unpruned = report, model
        notes = [f"channels: {report.pruned_groups} of {report.groups} channel groups pruned; MACs "
                 f"{report.macs_ratio:.2f}x, parameters {report.params_ratio:.2f}x of the original"]
        if report.kept:
            notes.append("channels kept at " + "; ".join(f"{k} ({v})" for k, v in list(report.kept.items())[:5])
                         + (f" and {len(report.kept) - 5} more" if len(report.kept) > 5 else ""))
        if train is not None and recipe.distill is None:
            # recovery: distillation from the unpruned model, the strongest teacher there is for it
            from edgert.converters.distill import distill
            from edgert.converters.recipe import DistillConfig

            self.step = "fine-tuning the pruned channels (distilling from the original)"
            pruned, more = distill(pruned, model, DistillConfig("the original model"), train, recipe.train,
                                   probabilities, probabilities, recipe.seed)
            notes.extend(more)
        elif train is None:
            notes.append("no --train-data: the pruned model was not fine-tuned, so expect an accuracy drop")
        self._stage("channels", time.perf_counter() - t0, pruned, notes=notes)
        return pruned
