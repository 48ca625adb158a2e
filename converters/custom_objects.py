"""Layers a loader does not know by itself: those that ship inside Keras's own applications (ConvNeXt's
`LayerScale`), and the user's, from a Python file given with `--custom-objects`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import inspect
import pkgutil
import sys
import types
from pathlib import Path

from edgert.errors import InputDataError, brief


def _layer_classes(package, base) -> dict[str, type]:
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.endswith("_test"):
            continue
        try:
            module = importlib.import_module(f"{package.__name__}.{info.name}")
        except Exception:  # an application module that fails to import has no layer to offer
            continue
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, base) and obj.__module__ == module.__name__:
                found[name] = obj
    return found


@functools.cache
def tf_keras_application_layers() -> dict[str, type]:
    """The layer classes tf_keras's applications define for themselves (ConvNeXt's `LayerScale`,
    `StochasticDepth`, Inception-ResNet's `CustomScaleLayer`), which `load_model` does not know by name."""
    from edgert.converters._tf import import_tf

    _, tf_keras = import_tf()
    import tf_keras.src.applications as applications

    return _layer_classes(applications, tf_keras.layers.Layer)


@functools.cache
def keras3_application_layers() -> dict[str, type]:
    """The same for Keras 3's applications (a Keras 3 `.h5` of ConvNeXt needs them)."""
    from edgert.converters._tf import import_keras3

    keras = import_keras3()
    import keras.src.applications as applications

    return _layer_classes(applications, keras.layers.Layer)


def resolve_custom_objects(given: str | Path | dict | None, keras3: bool = False) -> dict[str, object]:
    """Custom objects as the converters take them: none, a dict by name, or a Python file to load.

    `keras3`: the model was written by Keras 3, so the file's `tf.keras` is Keras 3, as it would be in a process
    that loads the model without tf_keras."""
    if given is None or isinstance(given, dict):
        return dict(given or {})
    from edgert.converters._tf import import_keras3

    import_keras3()  # the user's file imports keras: on the TensorFlow backend, beside tf_keras
    if not keras3:
        return load_custom_objects(given)
    with tf_keras_is_keras3():
        return load_custom_objects(given)


# The parts of `tf.keras` a user's file imports as modules (`from tensorflow.keras.layers import Dense`).
_KERAS_MODULES = ("activations", "applications", "backend", "callbacks", "constraints", "initializers", "layers",
                  "losses", "metrics", "models", "ops", "optimizers", "regularizers", "saving", "utils")


@contextlib.contextmanager
def tf_keras_is_keras3():
    """While a user's file is imported: `import tensorflow as tf` gives a TensorFlow whose `tf.keras` is Keras 3.

    edgert runs tf_keras (Keras 2) beside Keras 3 in one process, with `TF_USE_LEGACY_KERAS=1`, so `tf.keras` is
    tf_keras there; code written for a Keras 3 model (`L = tf.keras.layers`) would build Keras 2 layers inside a
    Keras 3 model. The file keeps the `tensorflow` it imported, so its functions see Keras 3 when they run too.
    Everything but `keras` is TensorFlow's own."""
    import keras
    import tensorflow

    class _TensorFlow(types.ModuleType):
        def __getattr__(self, name):
            return getattr(tensorflow, name)

    proxy = _TensorFlow("tensorflow", tensorflow.__doc__)
    proxy.__dict__.update({k: getattr(tensorflow, k) for k in ("__path__", "__spec__", "__file__", "__version__")
                           if hasattr(tensorflow, k)})
    proxy.keras = keras
    replaced = {"tensorflow": proxy, "tensorflow.keras": keras,
                **{f"tensorflow.keras.{m}": getattr(keras, m) for m in _KERAS_MODULES if hasattr(keras, m)}}
    saved = {name: sys.modules.get(name) for name in replaced}
    sys.modules.update(replaced)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


# Libraries whose classes and functions every loader knows already: never passed on as the user's own (a Keras 3
# `Dense` imported by the file must not replace tf_keras's when a tf_keras model loads).
_KNOWN_LIBRARIES = {"keras", "tf_keras", "tensorflow", "tensorflow_model_optimization", "numpy", "builtins", "jax",
                    "torch", "typing", "abc", "functools", "collections", "dataclasses", "math", "enum"}


@functools.cache
def _keras_builtin_names() -> frozenset[str]:
    """Names Keras resolves by itself (activations, layers, initializers, losses, ...), in Keras 3 and tf_keras."""
    names: set[str] = set()
    for package in ("keras", "tf_keras"):
        try:
            root = importlib.import_module(package)
        except ImportError:
            continue
        for part in ("activations", "layers", "initializers", "regularizers", "constraints", "losses", "metrics",
                     "optimizers"):
            names.update(n for n in dir(getattr(root, part, None)) if not n.startswith("_"))
    return frozenset(names)


def import_user_file(p: Path, what: str) -> types.ModuleType:
    """Import the user's Python file `p` as a module, its folder on `sys.path` while it imports (its imports of
    modules beside it resolve as `python FILE.py` finds them).

    Raises:
        InputDataError: it fails to import: its error and the file's line, one line, never a traceback.
    """
    name = f"edgert_user_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(p.resolve().parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # its own bug, a missing import, even sys.exit: one line, never a traceback
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        where = ""
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == str(p):
                where = f" (line {tb.tb_lineno})"
            tb = tb.tb_next
        raise InputDataError(f"{what} {p} failed to import{where}: {type(exc).__name__}: {brief(exc, 200)}") from None
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def load_custom_objects(path: str | Path) -> dict[str, object]:
    """Import the user's Python file and return the custom objects it provides.

    The file registers its layers the usual way (`@keras.saving.register_keras_serializable()`, or tf_keras's
    `get_custom_objects()[name] = cls`), which loaders find by themselves. Every class and function the file holds
    at module level, whether it defines or imports it (from its own package, say), is returned under that name, and
    a module-level `custom_objects` or `CUSTOM_OBJECTS` dict adds names of its own choosing. Keras's and
    TensorFlow's own objects are left out, and so is an imported one named like a Keras built-in (`softmax` from
    scipy), which would otherwise replace the built-in wherever the model uses it; one the file defines is kept.

    Raises:
        InputDataError: the file is missing, not Python, or fails to import (its error, one line).
    """
    p = Path(path)
    if not p.is_file():
        raise InputDataError(f"--custom-objects {p}: no such file")
    if p.suffix != ".py":
        raise InputDataError(f"--custom-objects {p}: give a Python file (.py) that defines or registers the layers")
    module = import_user_file(p, "--custom-objects")
    name = module.__name__
    objects: dict[str, object] = {}
    builtin = _keras_builtin_names()
    for key, value in vars(module).items():
        if key.startswith("_") or not (inspect.isclass(value) or inspect.isfunction(value)):
            continue
        origin = getattr(value, "__module__", None) or "builtins"
        if origin.split(".")[0] in _KNOWN_LIBRARIES:
            continue
        if origin != name and (key in builtin or value.__name__ in builtin):
            continue  # an imported helper (scipy's `softmax`) must not replace the Keras built-in of that name
        objects[key] = value
        objects.setdefault(value.__name__, value)  # imported under another name: the model knows the class's own
    for key in ("custom_objects", "CUSTOM_OBJECTS"):
        given = getattr(module, key, None)
        if isinstance(given, dict):
            objects.update({str(k): v for k, v in given.items()})
    return objects
