"""The bad-input catalogue (tests/bad_inputs/make.py): every entry gives its one-line error through the CLI, and
nothing is written."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from edgert.cli import cli
from tests.bad_inputs import make


@pytest.fixture(scope="module")
def catalogue(float_tflite, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_inputs")
    return make.write(folder, open(float_tflite, "rb").read())


def _one_line_error(result, entry, path):
    assert result.exit_code == 1, f"{entry.name}: exit {result.exit_code}\n{result.output}"
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], f"{entry.name}: {result.output}"
    assert re.search(entry.error, errors[0]), f"{entry.name}: {errors[0]!r} does not match {entry.error!r}"
    assert str(path) in errors[0] or entry.kind == "array", errors[0]  # the message names the file


def test_the_catalogue_covers_what_the_issue_lists(catalogue):
    names = {entry.name for entry, _ in catalogue}
    assert {"empty.tflite", "random-bytes.tflite", "wrong-identifier.tflite", "huge-tensor.tflite",
            "negative-tensor-index.tflite", "cyclic-subgraph.tflite", "cyclic-two-subgraphs.tflite",
            "weights-only.h5", "no-config.keras", "object-dtype.npy"} <= names
    assert sum(n.startswith("truncated-at-") for n in names) >= 20  # every section boundary of the model


def test_every_bad_model_is_one_line_from_inspect_and_run(catalogue, tmp_path):
    runner = CliRunner()
    checked = 0
    for entry, path in catalogue:
        if entry.kind != "model":
            continue
        _one_line_error(runner.invoke(cli, ["inspect", str(path)]), entry, path)
        _one_line_error(runner.invoke(cli, ["run", str(path), "-o", str(tmp_path / "out.npz")]), entry, path)
        checked += 1
    assert checked >= 25 and not (tmp_path / "out.npz").exists()


@pytest.mark.slow
def test_bad_keras_files_are_one_line_from_convert(catalogue, tmp_path):
    runner = CliRunner()
    for entry, path in catalogue:
        if entry.kind == "keras":
            _one_line_error(runner.invoke(cli, ["convert", str(path), "-o", str(tmp_path / "m.tflite")]), entry, path)
    assert not list(tmp_path.iterdir())


def test_object_arrays_are_never_unpickled(catalogue, float_tflite, h5_path, tmp_path):
    runner = CliRunner()
    for entry, path in catalogue:
        if entry.kind != "array":
            continue
        _one_line_error(runner.invoke(cli, ["run", str(float_tflite), "--input", str(path)]), entry, path)
        _one_line_error(runner.invoke(cli, ["convert", str(h5_path), "--int8", "--calibration-data", str(path),
                                            "-o", str(tmp_path / "m.tflite")]), entry, path)
    assert not list(tmp_path.iterdir())
