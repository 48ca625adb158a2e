"""Skips for what a test needs: on a developer's machine a missing tool is a reason to skip, but under CI (CI=true,
which .ci/run sets) a tool the project installs itself (`make install`'s packages, tests/ensure_tools.sh's system
tools, root for mounts) is a failure, so that a skip can never hide a broken feature there. Tools the project does not
install (an accelerator, a GPU, systemd) stay skips everywhere."""

from __future__ import annotations

import importlib
import os

import pytest

CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """A tool the project installs is absent: skip here, fail under CI."""
    if CI:
        pytest.fail(f"{reason}; under CI the project installs it (make install, tests/ensure_tools.sh), so its absence "
                    "is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def module(name: str, reason: str | None = None):
    """`pytest.importorskip` for a package `make install` installs: the module, or a skip (a failure under CI)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        missing(reason or f"{name} is not installed (`make install` installs it)")


def root(what: str) -> None:
    """Tests that mount file systems or take the network away need root, which CI has."""
    if os.geteuid() != 0:
        missing(f"{what} needs root")
