"""Outputs that cannot be written: on a real read-only mount and a real full disk (tests run as root, so permission
bits prove nothing), every command that writes says so in one line, before any work starts, and leaves nothing."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from edgert.cli import cli
from edgert.errors import OutputNotWritableError
from edgert.files import check_output_path, make_output_dir
from tests import needs


def _mount(where, options: str):
    where.mkdir()
    if os.geteuid() != 0:
        needs.missing("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        needs.missing(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def readonly(tmp_path):
    where = tmp_path / "read only"  # a space, as users' folders have
    _mount(where, "ro,size=1m")
    yield where
    subprocess.run(["umount", str(where)], check=True)


@pytest.fixture
def full_disk(tmp_path):
    where = tmp_path / "small"
    _mount(where, "size=16k")
    yield where
    subprocess.run(["umount", str(where)], check=True)


def one_line(out, *needles: str) -> None:
    assert out.exit_code != 0, out.output
    assert "Traceback" not in out.output and out.output.count("\n") == 1, out.output
    for needle in needles:
        assert needle in out.output, out.output


def test_the_library_refuses_a_read_only_folder_before_work(readonly):
    with pytest.raises(OutputNotWritableError, match="read-only file system"):
        check_output_path(readonly / "m.tflite")
    with pytest.raises(OutputNotWritableError, match="read-only file system"):
        make_output_dir(readonly / "sub")


def test_convert_refuses_before_converting(h5_path, readonly, monkeypatch):
    from edgert.converters import sources

    def never(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(sources, "open_model", never)  # what every Keras file and SavedModel is loaded through
    out = CliRunner().invoke(cli, ["convert", str(h5_path), "-o", str(readonly / "m.tflite")])
    one_line(out, f"cannot write {readonly}: read-only file system")


@pytest.mark.parametrize("command", ["run", "bench", "bundle", "metadata", "android"])
def test_runtime_commands_refuse_a_read_only_output(command, int8_tflite, readonly, tmp_path, digits):
    np.save(tmp_path / "x.npy", digits.x_test[:2])
    args = {
        "run": ["run", str(int8_tflite), "--input", str(tmp_path / "x.npy"), "-o", str(readonly / "y.npy")],
        "bench": ["bench", str(int8_tflite), "--runs", "3", "--plot", str(readonly / "bench.png")],
        "bundle": ["bundle", str(int8_tflite), "-o", str(readonly / "m.edgert")],
        "metadata": ["metadata", "write", str(int8_tflite), "-o", str(readonly / "m.tflite")],
        "android": ["export", "android", str(int8_tflite), "--package", "com.example.digits", "-o",
                    str(readonly / "android")],
    }[command]
    out = CliRunner().invoke(cli, args)
    one_line(out, "read-only file system")
    if command == "bench":
        assert "p50" not in out.output  # refused before measuring


@pytest.mark.slow
def test_optimize_refuses_a_read_only_output(h5_path, readonly, tmp_path, digits):
    np.savez(tmp_path / "train.npz", x=digits.x_train[:64], y=digits.y_train[:64])
    np.savez(tmp_path / "test.npz", x=digits.x_test[:64], y=digits.y_test[:64])
    out = CliRunner().invoke(cli, ["optimize", str(h5_path), "--train-data", str(tmp_path / "train.npz"),
                                   "--eval-data", str(tmp_path / "test.npz"), "-o", str(readonly / "opt")])
    one_line(out, "read-only file system")


def test_a_full_disk_is_one_line_and_leaves_nothing(h5_path, float_tflite, full_disk, tmp_path, digits):
    out = CliRunner().invoke(cli, ["convert", str(h5_path), "-o", str(full_disk / "m.tflite")])
    one_line(out, "disk full")
    assert os.listdir(full_disk) == []
    np.save(tmp_path / "x.npy", np.repeat(digits.x_test, 20, axis=0))  # outputs larger than the disk
    out = CliRunner().invoke(cli, ["run", str(float_tflite), "--input", str(tmp_path / "x.npy"), "-o",
                                   str(full_disk / "y.npy")])
    one_line(out, "disk full")
    assert os.listdir(full_disk) == []
