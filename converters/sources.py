"""Opening Keras models (.h5, .keras, SavedModel directories) with the Keras that wrote them, with checks that name
what is wrong: unknown layers, stored Python code, files from a newer Keras.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgert.converters.keras_files import KERAS3, SAVED_MODEL, TF_KERAS, KerasFile, newer_than_installed, \
    read_keras_file, version_tuple
from edgert.converters.recipe import Quantization
from edgert.converters.signature import DEFAULT_KEY, IONames, keras_names, saved_model_names
from edgert.errors import InputDataError, ModelFormatError, brief

TRUST_HINT = "pass --trust-model if you trust where the file came from"


@dataclass(frozen=True)
class InputShape:
    """One model input as the converter sees it; `shape` excludes the batch dimension."""

    name: str
    shape: tuple[int, ...]
    # The shape the source framework takes where the .tflite takes it in the other layout (channel-first
    # PyTorch/ONNX against channel-last TFLite): arrays of that shape are transposed for the user.
    source_shape: tuple[int, ...] | None = None


@dataclass
class SourceModel:
    """A loaded model ready for conversion.

    `framework` says what runs it: `tf_keras` (a Keras 2 model object), `keras3` (a Keras 3 model on the TensorFlow
    backend), `saved_model` (converted from the directory; `keras_model` is None), or `torch` and `onnx` (kind
    `foreign`: see `converters.foreign`; `path` is then the SavedModel onnx2tf wrote, if any, and `origin` the
    user's file).
    """

    path: Path
    kind: str  # "keras" (a model object in keras_model) or "saved_model"
    inputs: tuple[InputShape, ...]
    keras_model: Any = None
    framework: str = TF_KERAS
    file: KerasFile | None = None
    notes: tuple[str, ...] = ()  # how it was loaded, when that is worth knowing
    names: IONames | None = None  # the names its author gave its inputs and outputs
    signature: str = DEFAULT_KEY  # the SavedModel signature converted
    function: Any = None  # that signature, loaded (SavedModel only)
    custom_objects: dict = field(default_factory=dict)  # the user's objects, as the model's Keras took them
    described: str | None = None  # what wrote a foreign source: "ONNX opset 17 .onnx"
    origin: Path | None = None  # the user's file, where `path` is an intermediate
    size: int | None = None  # bytes, where the files say nothing (a PyTorch module's parameters)

    @property
    def size_bytes(self) -> int:
        if self.size is not None:
            return self.size
        path = self.origin or self.path
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size

    @property
    def label(self) -> str:
        """What wrote the model, from the file itself: `Keras 3.15.1 .keras`, `tf_keras 2.21.0 .h5`, `SavedModel`."""
        return self.described or (self.file.label if self.file else self.framework)


def check_source(path: str | os.PathLike, trust_model: bool = False) -> KerasFile:
    """Cheap checks of a model path before TensorFlow loads: format, writer, stored Python code.

    Raises:
        ModelFormatError: missing path, unsupported format, a damaged file, or (without `trust_model`) layers that
            would run Python code stored in the file.
    """
    found = read_keras_file(path)
    code = found.code_layers
    if code and not trust_model:
        more = f" and {len(code) - 1} more" if len(code) > 1 else ""
        raise ModelFormatError(f"{found.path}: layer {code[0]}{more} holds Python code that loading the model would "
                               f"run; {TRUST_HINT}")
    return found


def _keras_inputs(model, names: IONames) -> tuple[InputShape, ...]:
    """The model's inputs under the names its signature will carry (`keras_names`)."""
    return tuple(InputShape(name, tuple(t.shape[1:])) for name, t in zip(names.inputs, model.inputs))


def _subclassed(model) -> bool:
    """A Keras 3 model subclassed from `keras.Model` with its own `call`: no graph of layers, no `inputs`."""
    try:
        return not model.inputs
    except AttributeError:
        return True


def _as_functional(keras, model, path: Path):
    """A subclassed Keras 3 model as a functional model that calls it on inputs of the shape it was built with, so
    that it converts like any other. Names are what Keras's exporter gives such a model: `args_0, ...` for the
    inputs (the model names none), the keys of a dict of outputs, else `output_0, ...`.

    Raises:
        ModelFormatError: the model was saved without being built, so its input shape is unknown.
    """
    config = model.get_build_config() or {}
    shape = config.get("input_shape")
    if shape is None:
        raise ModelFormatError(f"{path}: the subclassed model {type(model).__name__} was saved without being built, "
                               "so its input shape is unknown; call model.build((None, ...)) (or run it once) "
                               "before saving")
    shapes = shape if shape and isinstance(shape[0], (list, tuple)) else [shape]
    inputs = [keras.Input(tuple(s[1:]), name=f"args_{i}") for i, s in enumerate(shapes)]
    outputs = model(inputs[0] if len(inputs) == 1 else inputs)
    if not isinstance(outputs, dict):  # named as Keras's exporter names them; a dict keeps its keys
        outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        outputs = {f"output_{i}": o for i, o in enumerate(outputs)}
    wrapped = keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs, name=model.name)
    return wrapped, (f"{type(model).__name__} is a subclassed model: converted as called on its build shape "
                     f"{tuple(shapes[0])}")


def _saved_model_signature(tf, path: Path, key: str | None):
    """The SavedModel's signature `key` (default: `serving_default`, or the only one there is), loaded."""
    loaded = tf.saved_model.load(str(path))
    keys = sorted(loaded.signatures.keys())
    if key is None:
        key = DEFAULT_KEY if DEFAULT_KEY in keys or len(keys) != 1 else keys[0]
    if key not in keys:
        if not keys:
            raise ModelFormatError(f"{path} has no signature; export the model with one (tf.saved_model.save(..., "
                                   "signatures=...))")
        raise InputDataError(f"{path} has no signature '{key}'; it has {', '.join(keys)}: choose one with "
                             "--signature NAME")
    signature = loaded.signatures[key]
    signature._edgert_keep = loaded  # the loaded object owns the variables the function reads
    return key, signature


def _saved_model_inputs(signature) -> tuple[InputShape, ...]:
    _, specs = signature.structured_input_signature
    return tuple(InputShape(name, tuple(spec.shape[1:])) for name, spec in sorted(specs.items()))


_UNKNOWN = (re.compile(r"Unknown (?:layer|object|activation|loss|metric|initializer|regularizer|constraint)"
                       r"(?: type)?:? '?([\w.>]+)'?"),
            re.compile(r"Could not locate (?:class|function) '([\w.>]+)'"),
            re.compile(r"Could not deserialize class '([\w.>]+)'"))


def _load_error(found: KerasFile, installed: str, exc: Exception) -> ModelFormatError:
    """One line for a loader's exception: an unknown class, stored code, a newer Keras, or the loader's words."""
    p, text = found.path, " ".join(str(exc).split())
    keras = "tf_keras" if found.writer == TF_KERAS else "Keras"
    if newer_than_installed(found.keras_version, installed):
        return ModelFormatError(f"{p} was saved by {keras} {found.keras_version}, newer than the {keras} {installed} "
                                f"installed here, which cannot read it ({brief(exc, 120)}); upgrade it (pip install -U "
                                f"{'tf-keras' if found.writer == TF_KERAS else 'keras'}) or re-save the model with "
                                f"{keras} {installed}")
    if "safe_mode" in text or "lambda" in text.lower() and "deserializ" in text.lower():
        return ModelFormatError(f"{p} stores Python code (a lambda) that loading would run; {TRUST_HINT}")
    for pattern in _UNKNOWN:
        match = pattern.search(text)
        if match:
            name = match.group(1).split(">")[-1]
            return ModelFormatError(f"{p}: {keras} does not know the class '{name}' used in the model; give it with "
                                    f"--custom-objects FILE.py, a file that defines or imports it (or lists it in a "
                                    f"module-level custom_objects dict, {{'{name}': {name}}})")
    return ModelFormatError(f"{p}: cannot load the model with {keras} {installed} ({brief(exc, 240)})")


@contextlib.contextmanager
def _loadable(found: KerasFile):
    """The file under a name whose suffix says what it holds: both loaders choose their reader by the suffix, and
    edgert decides by the contents (a .keras archive renamed .h5 still loads)."""
    wanted = {"h5": (".h5", ".hdf5"), "keras": (".keras",)}.get(found.format)
    if wanted is None or found.path.suffix.lower() in wanted:
        yield str(found.path)
        return
    with tempfile.TemporaryDirectory(prefix="edgert-model-") as tmp:
        link = Path(tmp) / f"{found.path.stem or 'model'}{wanted[0]}"
        os.symlink(found.path.resolve(), link)
        yield str(link)


def open_model(path: str | os.PathLike, custom_objects: str | os.PathLike | dict[str, object] | None = None,
               trust_model: bool = False, signature: str | None = None) -> SourceModel:
    """Load a Keras model or SavedModel for conversion, with the Keras that wrote it.

    Files written by tf_keras (Keras 2) load in tf_keras; files written by Keras 3 load in Keras 3 on the TensorFlow
    backend (whichever backend they were trained on); SavedModel directories are converted as they are. Layers that
    Keras's own applications define (ConvNeXt's `LayerScale`) are known without being registered.

    Args:
        custom_objects: the user's layers and functions by name (see `custom_objects.load_custom_objects`).
        trust_model: allow layers that run Python code stored in the file (Lambda; `safe_mode=False`).

    Raises:
        ModelFormatError: missing path, unsupported format, unreadable file, a class the loader does not know,
            stored code without `trust_model`, a file from a newer Keras, or an input shape with unknown
            dimensions other than the batch dimension.
    """
    from edgert.converters._tf import import_keras3, import_tf

    from edgert.converters.custom_objects import resolve_custom_objects

    found = check_source(path, trust_model)
    p = found.path
    if signature is not None and found.writer != SAVED_MODEL:
        raise InputDataError(f"--signature chooses a SavedModel's signature; {p} is a Keras file")
    tf, tf_keras = import_tf()
    user = resolve_custom_objects(custom_objects, keras3=found.writer == KERAS3)
    notes: tuple[str, ...] = ()
    function = None
    if found.writer == KERAS3:
        keras = import_keras3()
        installed = keras.__version__
        if version_tuple(found.keras_version)[:1] > version_tuple(installed)[:1]:
            raise ModelFormatError(f"{p} was saved by Keras {found.keras_version}; this is Keras {installed}, which "
                                   "cannot read another major version: upgrade keras or re-save the model with Keras "
                                   f"{installed}")
    else:
        installed = tf_keras.__version__
    try:
        if found.writer == KERAS3:
            from edgert.converters.custom_objects import keras3_application_layers

            known = {**keras3_application_layers(), **user}
            try:
                with _loadable(found) as loadable:
                    model = keras.saving.load_model(loadable, compile=False, safe_mode=not trust_model,
                                                    custom_objects=known)
            except (TypeError, ValueError) as first:
                if found.format != "h5":
                    raise
                from edgert.converters.keras3 import load_repaired_h5

                try:
                    model, note = load_repaired_h5(p, known, not trust_model)
                except Exception:
                    raise first from None
                notes = (note,)
            if _subclassed(model):
                model, note = _as_functional(keras, model, p)
                notes += (note,)
            names = keras_names(model)
            inputs = _keras_inputs(model, names)
        elif found.writer == TF_KERAS:
            from edgert.converters.custom_objects import tf_keras_application_layers

            with _loadable(found) as loadable:
                model = tf_keras.models.load_model(loadable, compile=False, safe_mode=not trust_model,
                                                   custom_objects={**tf_keras_application_layers(), **user})
            names = keras_names(model)
            inputs = _keras_inputs(model, names)
        else:
            model = None
            signature, function = _saved_model_signature(tf, p, signature)
            names = saved_model_names(function)
            inputs = _saved_model_inputs(function)
    except (ModelFormatError, InputDataError):
        raise
    except Exception as exc:  # h5py, zip, deserialisation and graph errors all mean "cannot read this model"
        raise _load_error(found, installed, exc) from None

    for spec in inputs:
        if any(d is None or d < 0 for d in spec.shape):
            shape = "(None, " + ", ".join("None" if d is None or d < 0 else str(d) for d in spec.shape) + ")"
            raise ModelFormatError(
                f"{p}: input '{spec.name}' has shape {shape} with unknown dimensions besides the batch; "
                "rebuild the model with a fixed input shape (e.g. Input(shape=(224, 224, 3))) and save it again")
    kind = "saved_model" if found.writer == SAVED_MODEL else "keras"
    return SourceModel(p, kind, inputs, model, found.writer, found, notes, names, signature or DEFAULT_KEY,
                       function, user)


# The modes an ONNX source is quantized in by ai-edge-quantizer (as a PyTorch module is), on the float .tflite: its
# int8 keeps a YOLO head's detections where TensorFlow's loses half. Dynamic range stays with TensorFlow's converter,
# whose hybrid kernels run at 0.6x float here where the quantizer's weight-only model runs at float's speed; float16,
# the Edge TPU and --float-io stay there too.
QUANTIZER_MODES = (Quantization.INT8, Quantization.INT16X8)


@dataclass(frozen=True)
class Opened:
    """A source, loaded and ready to convert."""

    source: object  # a sources.SourceModel: names, input shapes, the Keras model or SavedModel the converter takes
    reference_fixed: Callable[[list[np.ndarray]], dict[str, np.ndarray]] | None = None  # torch, onnxruntime
    reference_label: str | None = None  # "PyTorch", "onnxruntime"; None: the Keras model or the SavedModel
    convert: Callable | None = None  # (mode, calibration, notes, keep_float, int16) -> flatbuffer: a route's own
    model_names: IONames | None = None  # the names the route's flatbuffer or SavedModel uses, position for position
    route: str | None = None  # "litert-torch" or "onnx"; None for Keras models and SavedModels
    layout: tuple[str, ...] = ()  # one line per input and output: its shape in the .tflite, and the source's
    other_route: str | None = None  # what to suggest when the interpreter rejects this route's .tflite

    def reference_name(self, model) -> str:
        """What the agreement compares with, for the report: the framework, else the model converted."""
        return self.reference_label or ("the SavedModel" if model is None else "the Keras model")

    def reference(self, tf, model) -> Callable[[list[np.ndarray]], dict[str, np.ndarray]]:
        """The source as a function of samples (one array per input, in the .tflite's layout) to its outputs by
        name: torch or onnxruntime for a foreign source, else `model` (the Keras model the stages made), else the
        SavedModel's signature."""
        if self.reference_fixed is not None:
            return self.reference_fixed
        source = self.source
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

    def converted_names(self, model) -> IONames:
        """The names TensorFlow's converter (or the route) gives the flatbuffer's inputs and outputs, position for
        position with the source's own (`source.names`), which the signature then carries."""
        if self.model_names is not None:
            return self.model_names
        return keras_names(model) if model is not None else self.source.names

    def calibration_keys(self, model) -> list[str] | None:
        """The names calibration samples go by (a SavedModel's converter orders inputs its own way), or None: in
        the model's order."""
        if self.model_names is not None:
            return list(self.model_names.inputs)
        return [s.name for s in self.source.inputs] if model is None else None

    def fixed_batch(self, mode: Quantization) -> int | None:
        """The batch TensorFlow's converter must fix: the Edge TPU needs 1 (onnx2tf's SavedModel has it already)."""
        return 1 if mode is Quantization.EDGETPU and self.route is None else None

    def quantizes_twice(self, mode: Quantization, float_io: bool, int16: tuple) -> bool:
        """Whether both ai-edge-quantizer and TensorFlow's converter quantize this source (the onnx route's int8
        and int16x8, unless --int16, which only the former has, or --float-io, which only the latter has)."""
        return self.takes_quantizer(mode, float_io) and not int16

    def takes_quantizer(self, mode: Quantization, float_io: bool) -> bool:
        """Whether ai-edge-quantizer quantizes the float .tflite of this source's SavedModel (the onnx route)."""
        return self.route is not None and self.convert is None and mode in QUANTIZER_MODES and not float_io

    def rejected(self, mode: Quantization, why: str) -> str | None:
        """The line for a route's .tflite the interpreter refuses (None: not a route's, the error stands)."""
        if self.route is None:
            return None
        return (f"the {mode.value} .tflite the {self.route} route produced is rejected by the interpreter ({why}); "
                "nothing was written" + (f": try --route {self.other_route}" if self.other_route else ""))
