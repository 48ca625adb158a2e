"""Loading TFLite external delegate libraries (`tflite_plugin_create_delegate`) with errors that name the fix."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
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


# What the child process runs: dlopen the library and, when asked, create and destroy one delegate through the
# TFLite external-delegate C interface. It imports nothing but ctypes, so it starts in tens of milliseconds.
_CHILD = r"""
import ctypes, json, sys
path, create, options = sys.argv[1], sys.argv[2] == "1", json.loads(sys.argv[3])
def answer(**fields):
    print(json.dumps(fields), flush=True)
    sys.exit(0)
try:
    lib = ctypes.CDLL(path)
except OSError as exc:
    answer(status="dlopen", error=" ".join(str(exc).split()))
if not create:
    answer(status="ok")
missing = [n for n in __ENTRY_POINTS__ if not hasattr(lib, n)]
if missing:
    answer(status="missing", missing=missing)
errors = []
Report = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
report = Report(lambda m: errors.append(m.decode("utf-8", "replace") if m else ""))
create_delegate = lib.tflite_plugin_create_delegate
create_delegate.restype = ctypes.c_void_p
create_delegate.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p), ctypes.c_size_t, Report]
keys = (ctypes.c_char_p * max(1, len(options)))(*[k.encode() for k in options])
values = (ctypes.c_char_p * max(1, len(options)))(*[str(v).encode() for v in options.values()])
delegate = create_delegate(keys, values, len(options), report)
if not delegate:
    answer(status="create_failed", errors=errors)
lib.tflite_plugin_destroy_delegate.argtypes = [ctypes.c_void_p]
lib.tflite_plugin_destroy_delegate(delegate)
answer(status="ok")
""".replace("__ENTRY_POINTS__", repr(ENTRY_POINTS))

PROBE_TIMEOUT_S = 20.0
_cache_lock = threading.Lock()
_memory_cache: dict[str, dict] = {}


def _cache_file() -> Path:
    base = os.environ.get("EDGERT_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "edgert")
    return Path(base) / "delegate-probes.json"


def _cache_key(library: str, create: bool, options: Mapping[str, str]) -> str | None:
    """Library path, mtime and size, and what was asked; None for a bare name the loader searches for."""
    if os.sep not in library:
        return None
    try:
        st = os.stat(library)
    except OSError:
        return None
    return json.dumps([os.path.realpath(library), st.st_mtime_ns, st.st_size, create, sorted(options.items())])


def _cached(key: str) -> dict | None:
    with _cache_lock:
        if key in _memory_cache:
            return _memory_cache[key]
    try:
        return json.loads(_cache_file().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _remember(key: str, outcome: dict) -> None:
    with _cache_lock:
        _memory_cache[key] = outcome
        path = _cache_file()
        try:
            stored = json.loads(path.read_text()) if path.exists() else {}
            if not isinstance(stored, dict):
                stored = {}
        except (OSError, ValueError):
            stored = {}
        stored[key] = outcome
        with contextlib.suppress(OSError):  # a read-only home must not stop a delegate from loading
            path.parent.mkdir(parents=True, exist_ok=True)
            from edgert.files import write_bytes_atomic

            write_bytes_atomic(path, json.dumps(stored, indent=1).encode())


def forget_probes() -> None:
    """Drop the cached child-process probe results (this process's and the on-disk cache)."""
    with _cache_lock:
        _memory_cache.clear()
        with contextlib.suppress(FileNotFoundError):
            _cache_file().unlink()


def _run_child(library: str, create: bool, options: Mapping[str, str]) -> dict:
    try:
        done = subprocess.run([sys.executable, "-I", "-c", _CHILD, library, "1" if create else "0",
                               json.dumps(dict(options))], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"status": "hung"}
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return {"status": "crashed", "signal": name}
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = " ".join((done.stderr or done.stdout).split())[-200:]
        return {"status": "crashed", "signal": f"exit {done.returncode}", "output": tail}


def probe_in_child(library: str, options: Mapping[str, str] | None = None, create: bool = True) -> None:
    """Open `library` (and create one delegate with `options`) in a child process first, so that a library that
    crashes or hangs while loading takes down the child, not this process. Outcomes that belong to the file
    (it loads, it crashes, it is not a delegate) are cached per path, mtime and size, here and on disk
    (`EDGERT_CACHE_DIR`, default ~/.cache/edgert); a failure to create, which may depend on attached devices, is not.

    Raises:
        DelegateUnavailableError: it crashed (with its signal), hung, could not be opened, or refused to create.
        DelegateError: it lacks the TFLite external-delegate functions.
    """
    options = dict(options or {})
    key = _cache_key(library, create, options)
    outcome = _cached(key) if key else None
    if outcome is None:
        outcome = _run_child(library, create, options)
        if key and outcome.get("status") not in ("create_failed", "hung"):
            _remember(key, outcome)
    status = outcome.get("status")
    if status == "ok":
        return
    if status == "crashed":
        extra = f": {outcome['output']}" if outcome.get("output") else ""
        raise DelegateUnavailableError(
            f"{library} crashed while loading ({outcome.get('signal')}){extra}; edgert skipped it (probed in a "
            "child process); fix or remove the library")
    if status == "hung":
        raise DelegateUnavailableError(
            f"{library} hung while loading (no answer in {PROBE_TIMEOUT_S:g} s in a child process); edgert skipped it")
    if status == "dlopen":
        raise DelegateUnavailableError(f"cannot load {library}: {outcome.get('error')}")
    if status == "missing":
        raise DelegateError(
            f"{library} is not a TFLite external delegate: it lacks {', '.join(outcome.get('missing', []))} "
            "(see tensorflow/lite/delegates/external/external_delegate_interface.h)")
    if status == "create_failed":
        native = "; ".join(e for e in outcome.get("errors", []) if e)
        raise DelegateUnavailableError(f"{library} failed to create its delegate" + (f": {native}" if native else ""))
    raise DelegateUnavailableError(f"{library}: the probe answered {outcome!r}")


def load_external(library: str, options: Mapping[str, str], what: str):
    """Create the delegate through the backend's `load_delegate`, turning its failures into one-line errors.

    The library is tried in a child process first (`probe_in_child`): one that crashes there is never loaded here.
    """
    from edgert.runtime.backend import get_backend

    probe_in_child(library, options)  # also refuses a library without the external-delegate entry points
    try:
        return get_backend().load_delegate(library, dict(options))
    except (ValueError, RuntimeError, OSError) as exc:
        native = " ".join(str(exc).split()).replace(f"Failed to load delegate from {library}", "").strip()
        raise DelegateUnavailableError(
            f"{library} failed to create its delegate" + (f": {native}" if native else "")) from None
