"""Loading TFLite external delegate libraries (`tflite_plugin_create_delegate`) with errors that name the fix."""

from __future__ import annotations

import ctypes
import os
from typing import Mapping

from edgert.errors import DelegateError, DelegateUnavailableError

ENTRY_POINTS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")
# ELF, Mach-O (32/64-bit, both byte orders, universal) and PE headers.
_MAGIC = (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xfe\xed\xfa\xcf", b"\xca\xfe\xba\xbe", b"MZ")


def check_library_file(path: str) -> None:
    """Refuse a path that is missing or is not a shared library, before the dynamic loader sees it.

    Raises:
        DelegateError: with what the file is and what to pass instead.
    """
    if not os.path.exists(path):
        raise DelegateError(f"delegate library {path} does not exist; pass the path of the delegate's .so")
    if not os.path.isfile(path):
        raise DelegateError(f"delegate library {path} is not a file; pass the path of the delegate's .so")
    with open(path, "rb") as f:
        head = f.read(4)
    if not any(head.startswith(m) for m in _MAGIC):
        raise DelegateError(f"{path} is not a shared library (it starts with {head!r}); "
                            "pass a TFLite external delegate .so/.dylib/.dll")


def open_library(library: str) -> ctypes.CDLL:
    """dlopen `library` (a path or a name the loader searches), with the loader's message on failure.

    Raises:
        DelegateUnavailableError: the loader cannot open it (missing, wrong architecture, missing dependency).
    """
    try:
        return ctypes.CDLL(library)
    except OSError as exc:
        raise DelegateUnavailableError(f"cannot load {library}: {' '.join(str(exc).split())}") from None


def check_entry_points(library: str) -> None:
    """Raises DelegateError when `library` lacks the TFLite external-delegate functions."""
    lib = open_library(library)
    missing = [name for name in ENTRY_POINTS if not hasattr(lib, name)]
    if missing:
        raise DelegateError(
            f"{library} is not a TFLite external delegate: it lacks {', '.join(missing)} "
            "(see tensorflow/lite/delegates/external/external_delegate_interface.h)")


def load_external(library: str, options: Mapping[str, str], what: str):
    """Create the delegate through the backend's `load_delegate`, turning its failures into one-line errors."""
    from edgert.backend import get_backend

    check_entry_points(library)
    try:
        return get_backend().load_delegate(library, dict(options))
    except (ValueError, RuntimeError, OSError) as exc:
        native = " ".join(str(exc).split()).replace(f"Failed to load delegate from {library}", "").strip()
        raise DelegateUnavailableError(
            f"{library} failed to create its delegate" + (f": {native}" if native else "")) from None
