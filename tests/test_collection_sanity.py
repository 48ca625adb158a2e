"""The shipped Ansible collection (edgert.fleet) passes Ansible's own checks, `ansible-test sanity`, as a collection
published to Galaxy must: documentation equal to each module's argument_spec, pep8, pylint with Ansible's plugins,
imports, compile, yamllint and the rest. Its `tests/sanity/ignore-2.19.txt` records the one check that does not
apply (the GPLv3 header: the collection is Apache-2.0)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgert.fleet.inventory import collection_path
from tests import needs

needs.module("ansible_runner", "edgert[fleet] is not installed (pip install 'edgert[fleet]')")

GET_PIP = Path(__file__).parent / "ansible_sanity" / "get_pip.py"


@pytest.mark.slow
def test_ansible_test_sanity_passes_on_the_shipped_collection(tmp_path):
    ansible_test = Path(sys.executable).parent / "ansible-test"
    assert ansible_test.exists(), "ansible-test comes with ansible-core ([fleet])"
    # ansible-test fetches get-pip.py for each venv it makes unless its cache holds one: this machine reaches PyPI
    # only, so the cache gets the stand-in (a real get-pip.py already there is left alone).
    cache = Path.home() / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    for version in ("24_2",):
        if not (cache / f"get_pip_{version}.py").exists():
            shutil.copy(GET_PIP, cache / f"get_pip_{version}.py")
    # ansible-test runs inside ansible_collections/NAMESPACE/NAME and writes tests/output there: a copy, so that
    # nothing of it lands in the package.
    copy = tmp_path / "ansible_collections" / "edgert" / "fleet"
    shutil.copytree(collection_path() / "ansible_collections" / "edgert" / "fleet", copy,
                    ignore=shutil.ignore_patterns("__pycache__", "output"))
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    done = subprocess.run([str(ansible_test), "sanity", "--venv", "--python", python, "--color", "no"], cwd=copy,
                          capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "PATH": f"{ansible_test.parent}:{os.environ['PATH']}"})
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith(("ERROR", "FATAL"))]
    assert done.returncode == 0, "\n".join(errors) or (done.stdout + done.stderr)[-3000:]
    assert "Running sanity test \"validate-modules\"" in done.stdout and "Running sanity test \"pylint\"" in done.stdout
