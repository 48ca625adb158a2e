"""The TFLite interpreter package edgert runs models with, chosen once per process."""

from __future__ import annotations

import functools
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

from edgert.errors import BackendUnavailableError

# Preference order: the maintained LiteRT wheel, the legacy runtime wheel, then TensorFlow itself (heavy, last).
BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow")
_MODULES = {
    "ai_edge_litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite_runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    # The implementation module: `tensorflow.lite` names the API module or an internal package depending on how
    # TensorFlow was first imported in the process.
    "tensorflow": ("tensorflow.lite.python.interpreter", "tensorflow"),
}


@dataclass(frozen=True)
class Backend:
    """An importable interpreter implementation."""

    name: str
    version: str
    interpreter_class: Callable[..., Any]
    load_delegate: Callable[..., Any]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


def _import(name: str) -> Backend:
    module_name, dist = _MODULES[name]
    if name == "tensorflow" and "tensorflow" not in sys.modules:
        # The converters need Keras 2 behind tf.keras, which TensorFlow reads at import: keep them usable here.
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    module = importlib.import_module(module_name)
    interpreter_class, load_delegate = module.Interpreter, module.load_delegate
    return Backend(name, _dist_version(dist), interpreter_class, load_delegate)


def _dist_version(dist: str) -> str:
    """The installed version of `dist` from its `.dist-info` folder name: importlib.metadata would cost tens of
    milliseconds of imports on every command, which a board feels."""
    prefix = dist.replace("-", "_").lower() + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.lower().startswith(prefix) and name.endswith(".dist-info"):
                return name[len(prefix):-len(".dist-info")]
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


@functools.cache
def get_backend() -> Backend:
    """Return the interpreter backend, honouring `EDGERT_BACKEND` (one of `BACKENDS`).

    Raises:
        BackendUnavailableError: no interpreter package can be imported (or the requested one cannot).
    """
    wanted = os.environ.get("EDGERT_BACKEND", "").strip()
    if wanted:
        if wanted not in _MODULES:
            raise BackendUnavailableError(
                f"EDGERT_BACKEND={wanted!r} is not a backend; use one of {', '.join(BACKENDS)}")
        candidates = (wanted,)
    else:
        candidates = BACKENDS
    failures = []
    for name in candidates:
        try:
            return _import(name)
        except ImportError as exc:
            failures.append(f"{name}: {exc}")
    raise BackendUnavailableError(
        "no TFLite interpreter is installed (" + "; ".join(failures) + "); run `pip install ai-edge-litert`")
