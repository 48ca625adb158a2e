"""Output files written atomically, never overwriting without being asked, and checked for writability before any
work starts."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

from edgert.errors import OutputExistsError, OutputNotWritableError

# errno -> what to tell the user; the ones that mean "this place cannot take the output".
_WRITE_ERRORS = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                 errno.EPERM: "permission denied", errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
                 errno.EFBIG: "file too large for the file system"}
_WHILE_WRITING = {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def shown(path: str | os.PathLike) -> str:
    """A path as a user can paste it back into a shell (quoted when it holds spaces or other specials)."""
    import shlex

    return shlex.quote(str(path))


def not_writable(path: str | os.PathLike, exc: OSError) -> OutputNotWritableError:
    reason = _WRITE_ERRORS.get(exc.errno) or exc.strerror or type(exc).__name__
    return OutputNotWritableError(f"cannot write {path}: {reason}; choose another output location")


def check_writable_dir(directory: str | os.PathLike) -> Path:
    """Prove that a file can be created in `directory` by creating (and removing) one: permission bits prove
    nothing for root, and only the attempt shows a read-only mount.

    Raises:
        OutputNotWritableError: the directory cannot take a file (read-only, no permission, full disk).
    """
    import tempfile

    d = Path(directory) if str(directory) else Path(".")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgert-write-test-", dir=d)
    except OSError as exc:
        raise not_writable(d, exc) from None
    os.close(fd)
    os.unlink(probe)
    return d


def make_output_dir(directory: str | os.PathLike) -> Path:
    """Create `directory` (and its parents) for outputs and check that it takes files.

    Raises:
        OutputNotWritableError: it cannot be created or written.
    """
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise not_writable(d, exc) from None
    return check_writable_dir(d)


def check_output_path(path: str | os.PathLike, *, force: bool = False) -> Path:
    """Refuse an output path whose directory is missing or not writable, or which exists unless `force`: checked
    before any work starts, so nothing is computed only to be lost.

    Raises:
        OutputDirectoryError: the directory the file would go into does not exist.
        OutputExistsError: the file exists and `force` is false, or the path is a directory.
        OutputNotWritableError: the directory cannot take the file (read-only, permission, full disk).
    """
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputDirectoryError(f"output directory {parent} does not exist; create it or choose another -o path")
    if p.is_dir():
        raise OutputExistsError(f"{p} is a directory; give a file path with -o")
    if p.exists() and not force:
        raise OutputExistsError(f"{p} exists; pass --force to overwrite it or choose another -o path")
    check_writable_dir(parent)
    return p


class OutputDirectoryError(OutputExistsError):
    """The directory an output should go into does not exist."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    An exception or Ctrl-C inside the block removes the temporary file, so no half-written output remains.
    """
    import tempfile

    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent if str(p.parent) else ".")
    except OSError as exc:
        raise not_writable(p.parent, exc) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, p)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and (exc.errno in _WHILE_WRITING or _disk_is_full(p.parent)):
            # The disk filled up while writing (numpy reports a short write without an errno).
            full = exc if exc.errno in _WHILE_WRITING else OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise not_writable(p, full) from None
        raise


def _disk_is_full(directory: Path) -> bool:
    try:
        st = os.statvfs(directory if str(directory) else ".")
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024 or st.f_favail == 0


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
