"""Reading sysfs/procfs through one root, `EDGERT_SYSFS_ROOT` (default `/`), so tests and containers can redirect it."""

from __future__ import annotations

import glob as _glob
import os

from edgert.errors import SensorError


def root() -> str:
    return os.environ.get("EDGERT_SYSFS_ROOT", "/")


def path(absolute: str) -> str:
    """`/sys/class/hwmon` under the configured root."""
    return os.path.join(root(), absolute.lstrip("/"))


def glob(pattern: str) -> list[str]:
    """Sorted matches of an absolute pattern under the root (real paths, with the root prefix)."""
    return sorted(_glob.glob(path(pattern)))


def read_text(file: str, default: str | None = None) -> str | None:
    """The stripped content of a file (a path already under the root), or `default` when it cannot be read."""
    try:
        with open(file) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return default


def read_number(file: str) -> float:
    """A sysfs attribute holding one number.

    Raises:
        SensorError: the file is gone, unreadable, or holds something other than a number (quoted in the message).
    """
    try:
        # os.open/os.read rather than open(): three system calls and no file object. This runs 100 times a second
        # beside a model, and every call that releases the GIL can make the inference thread wait for it back.
        fd = os.open(file, os.O_RDONLY)
        try:
            text = os.read(fd, 128).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
    except PermissionError:
        raise SensorError(f"{file} is not readable by this user (run as root or grant read access)") from None
    except OSError as exc:
        raise SensorError(f"{file} cannot be read ({exc.strerror or exc})") from None
    try:
        return float(int(text))
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise SensorError(f"{file} holds {text[:40]!r}, not a number") from None
