"""Layers a loader does not know by itself: those that ship inside Keras's own applications (ConvNeXt's
`LayerScale`), and the user's, from a Python file given with `--custom-objects`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import pkgutil
import sys
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


def resolve_custom_objects(given: str | Path | dict | None) -> dict[str, object]:
    """Custom objects as the converters take them: none, a dict by name, or a Python file to load."""
    if given is None or isinstance(given, dict):
        return dict(given or {})
    from edgert.converters._tf import import_keras3

    import_keras3()  # the user's file imports keras: on the TensorFlow backend, beside tf_keras
    return load_custom_objects(given)


def load_custom_objects(path: str | Path) -> dict[str, object]:
    """Import the user's Python file and return the custom objects it provides.

    The file registers its layers the usual way (`@keras.saving.register_keras_serializable()`, or tf_keras's
    `get_custom_objects()[name] = cls`), which loaders find by themselves; a module-level `custom_objects` or
    `CUSTOM_OBJECTS` dict, and every Keras layer class the file defines, are returned by name as well.

    Raises:
        InputDataError: the file is missing, not Python, or fails to import (its error, one line).
    """
    p = Path(path)
    if not p.is_file():
        raise InputDataError(f"--custom-objects {p}: no such file")
    if p.suffix != ".py":
        raise InputDataError(f"--custom-objects {p}: give a Python file (.py) that defines or registers the layers")
    name = f"edgert_custom_objects_{abs(hash(str(p.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
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
        raise InputDataError(f"--custom-objects {p} failed to import{where}: {type(exc).__name__}: "
                             f"{brief(exc, 200)}") from None
    objects: dict[str, object] = {}
    for value in vars(module).values():
        if inspect.isclass(value) and value.__module__ == name and _is_layer_class(value):
            objects[value.__name__] = value
    for key in ("custom_objects", "CUSTOM_OBJECTS"):
        given = getattr(module, key, None)
        if isinstance(given, dict):
            objects.update({str(k): v for k, v in given.items()})
    return objects


def _is_layer_class(cls: type) -> bool:
    return any(base.__module__.split(".")[0] in ("keras", "tf_keras") and base.__name__ in ("Layer", "Model")
               for base in cls.__mro__[1:])
