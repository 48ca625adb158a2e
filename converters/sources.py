"""Opening Keras models (.h5, .keras, SavedModel directories) with checks that name what is wrong."""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgert.errors import ModelFormatError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")


@dataclass(frozen=True)
class InputShape:
    """One model input as the converter sees it; `shape` excludes the batch dimension."""

    name: str
    shape: tuple[int, ...]


@dataclass
class SourceModel:
    """A loaded model ready for conversion: a tf_keras model, or the path of a SavedModel."""

    path: Path
    kind: str  # "keras" or "saved_model"
    inputs: tuple[InputShape, ...]
    keras_model: Any = None

    @property
    def size_bytes(self) -> int:
        if self.path.is_dir():
            return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return self.path.stat().st_size


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:240]


def _check_keras_file(p: Path) -> str:
    """Cheap format checks before TensorFlow is asked to open the file; returns the saving Keras version."""
    with p.open("rb") as f:
        head = f.read(8)
    if p.suffix in (".h5", ".hdf5"):
        if head != HDF5_SIGNATURE:
            raise ModelFormatError(f"{p} is not an HDF5 file; give a Keras model saved with model.save('x.h5')")
        import h5py  # ships with TensorFlow, which converting needs anyway

        try:
            with h5py.File(p, "r") as f:
                has_config = "model_config" in f.attrs
        except OSError as exc:
            raise ModelFormatError(f"{p} is a damaged HDF5 file ({_first_line(exc)})") from None
        if not has_config:
            raise ModelFormatError(f"{p} holds no model config (weights only, as save_weights() writes); save the "
                                   "whole model with model.save('x.h5')")
        return "2"
    if not zipfile.is_zipfile(p):
        raise ModelFormatError(f"{p} is not a .keras archive (not a zip file); re-save it with model.save('x.keras')")
    with zipfile.ZipFile(p) as z:
        names = set(z.namelist())
        if "config.json" not in names:
            raise ModelFormatError(f"{p} has no config.json; it is not a Keras model archive")
        try:
            version = str(json.loads(z.read("metadata.json")).get("keras_version", ""))
        except (KeyError, ValueError):
            version = ""
    return version


def _keras_inputs(model) -> tuple[InputShape, ...]:
    return tuple(InputShape(t.name.split(":")[0], tuple(t.shape[1:])) for t in model.inputs)


def _saved_model_inputs(tf, path: Path) -> tuple[InputShape, ...]:
    loaded = tf.saved_model.load(str(path))
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ModelFormatError(f"{path} has no 'serving_default' signature; export the model with one")
    _, specs = signature.structured_input_signature
    return tuple(InputShape(name, tuple(spec.shape[1:])) for name, spec in sorted(specs.items()))


def check_source(path: str | os.PathLike) -> str:
    """Cheap checks of a model path before TensorFlow loads; returns "keras", "keras3" or "saved_model".

    Raises:
        ModelFormatError: missing path, unsupported format, or a file whose header is not what its suffix says.
    """
    p = Path(path)
    if not p.exists():
        raise ModelFormatError(f"{p}: no such file or directory")
    if p.is_dir():
        if not (p / "saved_model.pb").exists():
            raise ModelFormatError(f"{p} is a directory without saved_model.pb; give a SavedModel directory, "
                                   "a .h5 or a .keras file")
        return "saved_model"
    if p.suffix.lower() == ".tflite":
        raise ModelFormatError(f"{p} is already a TFLite model; convert the Keras model it came from")
    if p.suffix.lower() not in KERAS_SUFFIXES:
        raise ModelFormatError(f"{p}: unsupported model format {p.suffix or '(no suffix)'}; "
                               "edgert converts .h5, .keras and SavedModel directories")
    return "keras3" if _check_keras_file(p).startswith("3") else "keras"


def open_model(path: str | os.PathLike) -> SourceModel:
    """Load a Keras model or SavedModel for conversion.

    Raises:
        ModelFormatError: missing path, unsupported format, unreadable file, or an input shape with unknown
            dimensions other than the batch dimension.
    """
    from edgert.converters._tf import import_tf

    p = Path(path)
    kind = check_source(p)
    tf, tf_keras = import_tf()
    try:
        if kind == "keras3":
            from edgert.converters.keras3 import rebuild_in_tf_keras

            model = rebuild_in_tf_keras(p)
            inputs, kind = _keras_inputs(model), "keras"
        elif kind == "keras":
            model = tf_keras.models.load_model(str(p), compile=False)
            inputs = _keras_inputs(model)
        else:
            model = None
            inputs = _saved_model_inputs(tf, p)
    except ModelFormatError:
        raise
    except Exception as exc:  # h5py, zip, deserialisation and graph errors all mean "cannot read this model"
        raise ModelFormatError(f"{p}: cannot load the model ({_first_line(exc)})") from None

    for spec in inputs:
        if any(d is None or d < 0 for d in spec.shape):
            shape = "(None, " + ", ".join("None" if d is None or d < 0 else str(d) for d in spec.shape) + ")"
            raise ModelFormatError(
                f"{p}: input '{spec.name}' has shape {shape} with unknown dimensions besides the batch; "
                "rebuild the model with a fixed input shape (e.g. Input(shape=(224, 224, 3))) and save it again")
    return SourceModel(p, kind, inputs, model)
