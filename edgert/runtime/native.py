"""Capture what native libraries write straight to file descriptor 2 (TFLite, LiteRT, TensorFlow start-up)."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Iterator


@dataclass
class NativeLog:
    """The text native code wrote while captured (empty when `EDGERT_VERBOSE=1` let it through)."""

    text: str = ""
    lines: list[str] = field(default_factory=list)


@contextlib.contextmanager
def native_log_captured() -> Iterator[NativeLog]:
    """Redirect fd 2 to a temporary file for the duration; the text is kept on the yielded `NativeLog`.

    Native loggers write before (or without) any Python logging, so no log level silences them; their text is
    still useful (a GPU delegate names the operators it refused), so it is kept rather than thrown away.
    `EDGERT_VERBOSE=1` lets everything through to the terminal instead.
    """
    log = NativeLog()
    if os.environ.get("EDGERT_VERBOSE") == "1":
        yield log
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with _sink() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 2)
        try:
            yield log
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            log.text = sink.read().decode("utf-8", "replace")
            log.lines = log.text.splitlines()


def _sink():
    """An anonymous file for the captured text: in memory on Linux (no tempfile import at start-up, which a board
    pays on every command), a temporary file elsewhere."""
    if hasattr(os, "memfd_create"):
        try:
            return os.fdopen(os.memfd_create("edgert-native-log", getattr(os, "MFD_CLOEXEC", 0)), "w+b")
        except OSError:  # a kernel or seccomp policy without memfd
            pass
    import tempfile

    return tempfile.TemporaryFile()
