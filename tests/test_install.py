"""What a runtime-only install (no [convert] extra) does: the runtime works, and every converter entry point says in
one line which extra it needs instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

HIDE = """
import sys

HIDDEN = {hidden!r}

class Hide:
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {{fullname!r}}", name=fullname)

sys.meta_path.insert(0, Hide())
from edgert.cli import main
sys.argv = ["edgert", *sys.argv[1:]]
main()
"""
CONVERT_STACK = ("tensorflow", "tf_keras", "keras", "h5py", "tensorflow_model_optimization", "tqdm")


def edgert_without(hidden, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE.format(hidden=tuple(hidden)), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("which", ["h5", "keras", "saved_model"])
def test_convert_without_the_convert_extra_is_one_line(which, h5_path, keras_digits, tmp_path):
    if which == "h5":
        model = h5_path
    elif which == "keras":
        model = tmp_path / "digits.keras"
        keras_digits.save(model)
    else:
        model = tmp_path / "saved"
        keras_digits.export(str(model))
    done = edgert_without(CONVERT_STACK, "convert", model, "-o", tmp_path / "out.tflite")
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: conversion needs the [convert] extra: pip install 'edgert[convert]'")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("out.tflite*"))


def test_the_runtime_works_without_the_convert_extra(int8_tflite, h5_path, tmp_path):
    done = edgert_without(CONVERT_STACK, "run", int8_tflite, "--json")
    assert done.returncode == 0, done.stderr[-1500:]
    assert '"outputs"' in done.stdout
    done = edgert_without(CONVERT_STACK, "optimize", h5_path, "--train-data", tmp_path / "t.npz", "--eval-data",
                          tmp_path / "e.npz")
    assert done.returncode == 1 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert "conversion needs the [convert] extra" in done.stderr

