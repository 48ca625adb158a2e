"""What a model file is, read from the file itself: its format, which Keras wrote it, its config, and the layers that
would run Python code stored in it. Never guessed from the extension; no TensorFlow is imported here.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgert.errors import ModelFormatError, brief

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
TF_KERAS, KERAS3, SAVED_MODEL = "tf_keras", "keras3", "saved_model"
# Layers whose config carries Python bytecode or source that loading runs.
_CODE_LAYERS = {"Lambda"}
_CODE_OBJECTS = {"__lambda__"}


@dataclass(frozen=True)
class KerasFile:
    """A model file as found on disk.

    `writer` is `tf_keras` (Keras 2: tf.keras before TF 2.16, or tf_keras), `keras3`, or `saved_model` (a graph,
    which loads without Keras). `keras_version` is what the file records, if anything.
    """

    path: Path
    format: str  # "h5", "keras" or "saved_model"
    writer: str
    keras_version: str | None
    config: dict | None

    @property
    def label(self) -> str:
        """What wrote the file, as it says: `Keras 2.0.5 .h5` (standalone Keras 2, and the `keras` package that was
        tf.keras from TF 2.6 to 2.15), `tf.keras 2.2.4-tf .h5` (TensorFlow's own copy), `tf_keras 2.21.0 .h5` (a
        Keras 2 file from 2.16 on, when only tf_keras wrote them), `Keras 3.15.1 .keras`."""
        if self.writer == SAVED_MODEL:
            return "SavedModel"
        version = self.keras_version
        if self.writer != TF_KERAS:
            keras = "Keras"
        elif version and version.endswith("-tf"):
            keras = "tf.keras"
        elif version and version_tuple(version)[:2] >= (2, 16):
            keras = "tf_keras"
        else:
            keras = "Keras" if version else "Keras 2"
        return f"{keras} {version or '(version not recorded)'} .{self.format}"

    @property
    def code_layers(self) -> tuple[str, ...]:
        """Layers (`name (Class)`) whose stored config holds Python code that loading would run."""
        return tuple(_code_layers(self.config)) if self.config else ()


def _code_layers(config, layer: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(config, dict):
        name = config.get("config", {}).get("name") if isinstance(config.get("config"), dict) else None
        name = config.get("name") or name
        cls = config.get("class_name")
        if cls in _CODE_LAYERS:
            found.append(f"{name or 'unnamed'} ({cls})")
            return found
        if cls in _CODE_OBJECTS:
            found.append(f"{layer or 'unnamed'} (a Python lambda in its config)")
            return found
        inner = layer if cls in (None, "Functional", "Sequential", "Model") else (name or layer)
        for value in config.values():
            found += _code_layers(value, inner)
    elif isinstance(config, list):
        for value in config:
            found += _code_layers(value, layer)
    return found


def _new_style_nodes(config) -> bool:
    """Keras 3 writes a layer's inbound nodes as {"args": ..., "kwargs": ...}; Keras 2 as nested lists."""
    layers = (config or {}).get("config", {}).get("layers", []) if isinstance(config, dict) else []
    for layer in layers:
        nodes = layer.get("inbound_nodes") if isinstance(layer, dict) else None
        if nodes:
            return isinstance(nodes[0], dict)
    return False


def _writer(version: str | None, config) -> str:
    """Keras 2 (tf.keras, tf_keras) or Keras 3 and later, by the recorded version, else by how nodes are written."""
    major = version_tuple(version)[:1]
    if major:
        return KERAS3 if major[0] >= 3 else TF_KERAS
    return KERAS3 if _new_style_nodes(config) else TF_KERAS


def read_keras_file(path: str | Path) -> KerasFile:
    """Identify a `.h5`/`.hdf5`/`.keras` file or a SavedModel directory by its contents.

    Raises:
        ModelFormatError: missing, of another format, damaged, or holding weights only.
    """
    p = Path(path)
    if not p.exists():
        raise ModelFormatError(f"{p}: no such file or directory")
    if p.is_dir():
        if not (p / "saved_model.pb").exists():
            raise ModelFormatError(f"{p} is a directory without saved_model.pb; give a SavedModel directory, "
                                   "a .h5 or a .keras file")
        return KerasFile(p, "saved_model", SAVED_MODEL, None, None)
    if p.suffix.lower() == ".tflite":
        raise ModelFormatError(f"{p} is already a TFLite model; convert the Keras model it came from")
    try:
        with p.open("rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelFormatError(f"{p}: cannot read ({exc.strerror})") from None
    if head == HDF5_SIGNATURE:
        return _read_h5(p)
    if p.suffix.lower() in (".pt", ".pth", ".ckpt"):  # torch.save writes zip files: say what to do with them
        raise ModelFormatError(f"{p} holds PyTorch weights, not a model: give the module as FILE.py:FACTORY (a "
                               f"function that returns it) with --weights {p.name}")
    if zipfile.is_zipfile(p):
        return _read_keras_zip(p)
    if p.suffix.lower() in (".h5", ".hdf5"):
        raise ModelFormatError(f"{p} is not an HDF5 file; give a Keras model saved with model.save('x.h5')")
    if p.suffix.lower() == ".keras":
        raise ModelFormatError(f"{p} is not a .keras archive (not a zip file); re-save it with model.save('x.keras')")
    raise ModelFormatError(f"{p}: unsupported model format {p.suffix or '(no suffix)'}; edgert converts .h5, "
                           ".keras, SavedModel directories, .onnx files and PyTorch modules (FILE.py:FACTORY)")


def _text(value) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _read_h5(p: Path) -> KerasFile:
    try:
        import h5py  # ships with TensorFlow, which converting needs anyway
    except ImportError as exc:
        from edgert.converters._tf import missing_extra

        raise missing_extra(exc) from None

    try:
        with h5py.File(p, "r") as f:
            raw_config = _text(f.attrs.get("model_config"))
            version = _text(f.attrs.get("keras_version"))
    except OSError as exc:
        raise ModelFormatError(f"{p} is a damaged HDF5 file ({brief(exc, 160)})") from None
    if raw_config is None:
        raise ModelFormatError(f"{p} holds no model config (weights only, as save_weights() writes); save the "
                               "whole model with model.save('x.h5')")
    try:
        config = json.loads(raw_config)
    except ValueError:
        raise ModelFormatError(f"{p}: the model config stored in the file is not valid JSON (damaged file?)") from None
    return KerasFile(p, "h5", _writer(version, config), version, config)


def _read_keras_zip(p: Path) -> KerasFile:
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
            if "config.json" not in names:
                raise ModelFormatError(f"{p} has no config.json; it is not a Keras model archive")
            config = json.loads(z.read("config.json"))
            metadata = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise ModelFormatError(f"{p} is a damaged .keras archive ({brief(exc, 160)})") from None
    except ValueError:
        raise ModelFormatError(f"{p}: config.json or metadata.json in the archive is not valid JSON") from None
    version = _text(metadata.get("keras_version")) if isinstance(metadata, dict) else None
    return KerasFile(p, "keras", _writer(version, config), version, config)


def version_tuple(version: str | None) -> tuple[int, ...]:
    parts = []
    for piece in (version or "").split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def newer_than_installed(file_version: str | None, installed: str) -> bool:
    """True when the file was written by a later Keras (major.minor) than the one installed."""
    return version_tuple(file_version)[:2] > version_tuple(installed)[:2]
