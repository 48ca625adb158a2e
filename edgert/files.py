"""Output files written atomically, never overwriting without being asked."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from edgert.errors import OutputExistsError


def check_output_path(path: str | os.PathLike, *, force: bool = False) -> Path:
    """Refuse an output path whose directory is missing, or which exists unless `force`.

    Raises:
        OutputDirectoryError: the directory the file would go into does not exist.
        OutputExistsError: the file exists and `force` is false, or the path is a directory.
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputDirectoryError(f"output directory {parent} does not exist; create it or choose another -o path")
    if p.is_dir():
        raise OutputExistsError(f"{p} is a directory; give a file path with -o")
    if p.exists() and not force:
        raise OutputExistsError(f"{p} exists; pass --force to overwrite it or choose another -o path")
    return p


class OutputDirectoryError(OutputExistsError):
    """The directory an output should go into does not exist."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    An exception or Ctrl-C inside the block removes the temporary file, so no half-written output remains.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent if str(p.parent) else ".")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
