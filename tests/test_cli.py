"""The CLI: formatting over the library, one-line errors, and the installed `edgert` script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgert
from edgert.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


def _one_line_error(result, fragment):
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert fragment in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert f"edgert {edgert.__version__}" in result.output and "ai_edge_litert" in result.output


def test_inspect(runner, int8_tflite):
    result = runner.invoke(cli, ["inspect", str(int8_tflite)])
    assert result.exit_code == 0, result.output
    assert "full integer (int8)" in result.output
    assert "CONV_2D" in result.output and "custom operators: none" in result.output
    as_json = json.loads(runner.invoke(cli, ["inspect", str(int8_tflite), "--json"]).output)
    assert as_json["inputs"][0]["dtype"] == "int8" and as_json["operators"]["CONV_2D"] == 2
    assert as_json["backend"].startswith("ai_edge_litert")


def test_inspect_names_custom_ops(runner, custom_op_tflite):
    result = runner.invoke(cli, ["inspect", str(custom_op_tflite)])
    assert result.exit_code == 0 and "custom operators: Igamma" in result.output


def test_run_saves_outputs(runner, int8_tflite, digits, tmp_path):
    np.save(tmp_path / "x.npy", digits.x_test[:6])
    out = tmp_path / "y.npy"
    result = runner.invoke(cli, ["run", str(int8_tflite), "-i", str(tmp_path / "x.npy"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    expected = edgert.load(int8_tflite).run(digits.x_test[:6])[0]
    np.testing.assert_array_equal(np.load(out), expected)
    assert f"argmax per row: {expected.argmax(1).tolist()}" in result.output
    again = runner.invoke(cli, ["run", str(int8_tflite), "-i", str(tmp_path / "x.npy"), "-o", str(out)])
    _one_line_error(again, "pass --force")
    raw = json.loads(runner.invoke(cli, ["run", str(int8_tflite), "-i", str(tmp_path / "x.npy"), "--raw",
                                         "--json"]).output)
    (values,) = raw["outputs"].values()
    assert values["dtype"] == "int8"


def test_run_two_inputs_from_npz(runner, two_input_tflite, tmp_path):
    model = edgert.load(two_input_tflite)
    arrays = {s.name: np.ones(s.shape, np.float32) for s in model.inputs}
    np.savez(tmp_path / "in.npz", **arrays)
    result = runner.invoke(cli, ["run", str(two_input_tflite), "-i", str(tmp_path / "in.npz"), "--json"])
    assert result.exit_code == 0, result.output
    (out,) = json.loads(result.output)["outputs"].values()
    assert out["values"] == [[8.0]]  # 2 * 3 + 2
    np.savez(tmp_path / "wrong.npz", q=np.ones((1, 3), np.float32))
    _one_line_error(runner.invoke(cli, ["run", str(two_input_tflite), "-i", str(tmp_path / "wrong.npz")]),
                    "one array per input name")


def test_convert(runner, h5_path, calibration_npy, tmp_path):
    out = tmp_path / "cli_int8.tflite"
    result = runner.invoke(cli, ["convert", str(h5_path), "--int8", "--calibration-data", str(calibration_npy),
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and "int8 (calibrated on 200 samples)" in result.output
    assert "scale=0.00392157 zero_point=-128" in result.output
    dynamic = runner.invoke(cli, ["convert", str(h5_path), "--int8", "-o", str(tmp_path / "d.tflite"), "--json"])
    assert dynamic.exit_code == 0
    doc = json.loads(dynamic.output)
    assert doc["mode"] == "dynamic" and "--calibration-data" in doc["notes"][0]


@pytest.mark.parametrize("args, fragment", [
    (["convert", "{tmp}/missing.h5"], "no such file"),
    (["convert", "{h5}", "--int8", "--calibration-data", "{tmp}/nope.npy", "-o", "{tmp}/o.tflite"], "no such file"),
    (["convert", "{h5}", "-o", "{tmp}/missing_dir/o.tflite"], "does not exist"),
    (["convert", "{h5}", "--image-range", "1", "-o", "{tmp}/o.tflite"], "LOW,HIGH"),
    (["run", "{tmp}/missing.tflite", "-i", "{tmp}/x.npy"], "no such file"),
    (["run", "{int8}", "-i", "{tmp}/missing.npy"], "no such file"),
    (["run", "{int8}", "-i", "{tmp}/bad_shape.npy"], "expects shape (1, 8, 8, 1)"),
    (["run", "{int8}", "-i", "{tmp}/bad_shape.npy", "-o", "{tmp}/y.csv"], "use a .npy or .npz"),
    (["inspect", "{tmp}/text.tflite"], "not a TFLite model"),
    (["inspect", "{custom}", "--bogus"], "No such option"),
])
def test_bad_input_is_one_line(runner, tmp_path, h5_path, int8_tflite, custom_op_tflite, args, fragment):
    (tmp_path / "text.tflite").write_text("hello")
    np.save(tmp_path / "bad_shape.npy", np.zeros((3, 3), np.float32))
    before = sorted(os.listdir(tmp_path))
    subs = {"tmp": tmp_path, "h5": h5_path, "int8": int8_tflite, "custom": custom_op_tflite}
    result = runner.invoke(cli, [a.format(**subs) for a in args])
    assert result.exit_code != 0
    assert fragment in result.output, result.output
    assert "Traceback" not in result.output
    assert sorted(os.listdir(tmp_path)) == before


def test_run_custom_op_model_names_the_op(runner, custom_op_tflite, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((1, 4), np.float32))
    _one_line_error(runner.invoke(cli, ["run", str(custom_op_tflite), "-i", str(tmp_path / "x.npy")]),
                    "custom operator(s) Igamma")


def _installed_script() -> str:
    script = Path(sys.executable).parent / "edgert"
    return str(script) if script.exists() else shutil.which("edgert")


def test_installed_script_end_to_end(int8_tflite, digits, tmp_path):
    script = _installed_script()
    assert script, "the edgert console script is not installed"
    np.save(tmp_path / "x.npy", digits.x_test[:3])
    ok = subprocess.run([script, "run", str(int8_tflite), "-i", str(tmp_path / "x.npy"), "--json"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["outputs"]
    bad = subprocess.run([script, "convert", str(tmp_path / "x.npy")], capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip() == f"Error: {tmp_path / 'x.npy'}: unsupported model format .npy; " \
                                 "edgert converts .h5, .keras, SavedModel directories, .onnx files and PyTorch modules " \
                                 "(FILE.py:FACTORY)"


def test_convert_with_stages_prints_the_report(runner, h5_path, tmp_path, digits):
    np.savez(tmp_path / "train.npz", x=digits.x_train, y=digits.y_train)
    np.savez(tmp_path / "test.npz", x=digits.x_test, y=digits.y_test)
    out = tmp_path / "p.tflite"
    result = runner.invoke(cli, ["convert", str(h5_path), "--prune", "0.5", "--int8", "--epochs", "2",
                                 "--train-data", str(tmp_path / "train.npz"), "--eval-data", str(tmp_path / "test.npz"),
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "recipe      prune50_int8" in result.output and "on 449 samples, drop" in result.output
    assert "  prune " in result.output and "0.50" in result.output
    recipe = json.loads((tmp_path / "p.tflite.recipe.json").read_text())
    assert recipe["prune"]["sparsity"] == 0.5 and recipe["train"]["epochs"] == 2
    again = runner.invoke(cli, ["convert", str(h5_path), "--recipe", str(tmp_path / "p.tflite.recipe.json"),
                                "--train-data", str(tmp_path / "train.npz"), "-o", str(tmp_path / "q.tflite"),
                                "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["recipe"]["name"] == "prune50_int8"


@pytest.mark.parametrize("args, fragment", [
    (["--prune", "1.5"], "between 0 and 1"),
    (["--prune", "0.5", "--prune-structure", "two:four"], "M:N"),
    (["--int16x8", "--float16"], "--float16 and --int16x8 conflict"),
    (["--qat"], "--qat need(s) training data"),
    (["--preset", "int9"], "unknown preset 'int9'"),
    (["--preset", "int8", "--prune", "0.5"], "drop --prune"),
    (["--recipe", "{tmp}/none.json"], "no such file"),
    (["--recipe", "{tmp}/bad.json"], "unknown key(s) colour"),
    (["--cluster", "1"], "at least 2 clusters"),
    (["--distill-from", "{tmp}/teacher.h5", "--train-data", "{tmp}/t.npz"], "no such file"),
    (["--float16", "--calibration-data", "{tmp}/c.npy"], "only used with --int8, --int16x8 or --edgetpu"),
])
def test_convert_bad_options_are_one_line(runner, h5_path, tmp_path, args, fragment):
    (tmp_path / "bad.json").write_text('{"colour": "red"}')
    np.save(tmp_path / "c.npy", np.zeros((2, 8, 8, 1), np.float32))
    before = sorted(os.listdir(tmp_path))
    result = runner.invoke(cli, ["convert", str(h5_path), "-o", str(tmp_path / "o.tflite")]
                           + [a.format(tmp=tmp_path) for a in args])
    _one_line_error(result, fragment)
    assert sorted(os.listdir(tmp_path)) == before


def test_ctrl_c_in_a_stage_says_how_far_it_got_and_writes_nothing(runner, h5_path, tmp_path, digits, monkeypatch):
    import edgert.converters.prune as prune_module

    np.savez(tmp_path / "train.npz", x=digits.x_train, y=digits.y_train)

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prune_module, "prune", interrupted)
    out = tmp_path / "p.tflite"
    result = runner.invoke(cli, ["convert", str(h5_path), "--prune", "0.5", "--epochs", "1",
                                 "--train-data", str(tmp_path / "train.npz"), "-o", str(out)])
    assert result.exit_code == 130
    assert "interrupted while pruning; nothing was written" in result.output
    assert not list(tmp_path.glob("p.tflite*")) and not list(tmp_path.glob(".p.tflite*"))


def test_ctrl_c_while_writing_the_report_removes_the_model(runner, h5_path, tmp_path, monkeypatch):
    from edgert.converters import ConvertRecipe

    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ConvertRecipe, "save", interrupted)
    result = runner.invoke(cli, ["convert", str(h5_path), "-o", str(tmp_path / "m.tflite")])
    assert result.exit_code == 130 and "interrupted while writing the outputs" in result.output
    assert not list(tmp_path.glob("m.tflite*")) and not list(tmp_path.glob(".m.tflite*"))  # whole or absent


@pytest.mark.slow
def test_sigint_and_sigterm_during_a_real_conversion(h5_path, tmp_path, digits):
    import signal
    import time

    np.savez(tmp_path / "train.npz", x=digits.x_train, y=digits.y_train)
    script = str(Path(sys.executable).parent / "edgert")
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / f"{sig.name}.tflite"
        # SIGINT as a terminal delivers it: a test run started in the background by a non-interactive shell
        # inherits SIGINT ignored (POSIX), and Python keeps an ignored SIGINT ignored.
        proc = subprocess.Popen([script, "convert", str(h5_path), "--prune", "0.5", "--epochs", "200",
                                 "--train-data", str(tmp_path / "train.npz"), "-o", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        time.sleep(12)  # usually into the pruning epochs; any step (a slow import included) must answer the same
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr[-500:]
        assert "interrupted while" in stderr and "nothing was written" in stderr and "Traceback" not in stderr
        assert not list(tmp_path.glob(f"{sig.name}.tflite*")) and not list(tmp_path.glob(f".{sig.name}*"))


def _all_commands():
    from edgert.cli import COMMANDS

    for name in COMMANDS:
        command = cli.get_command(None, name)
        yield [name], command
        for sub in getattr(command, "commands", {}):
            yield [name, sub], command.commands[sub]


@pytest.mark.parametrize("path", [p for p, _ in _all_commands()], ids=lambda p: " ".join(p))
def test_every_command_help_ends_with_examples(path):
    out = CliRunner().invoke(cli, [*path, "--help"])
    assert out.exit_code == 0, out.output
    tail = out.output.rstrip("\n").split("Examples:")[-1].splitlines()
    examples = [line.strip() for line in tail if line.strip()]
    assert "Examples:" in out.output and 1 <= len(examples) <= 3, out.output
    assert all(e.split()[0] in ("edgert", "python3") or "edgert" in e for e in examples)


def test_top_level_summaries_are_whole_in_80_columns():
    out = CliRunner().invoke(cli, ["--help"], terminal_width=80)
    lines = out.output.split("Commands:")[1].splitlines()
    from edgert.cli import COMMANDS

    for name, (_, _, summary) in COMMANDS.items():
        assert any(line.strip() == f"{name}{line.strip()[len(name):]}" and summary in line for line in lines), name
    assert all(len(line) <= 80 for line in lines)


@pytest.mark.parametrize("args", [["run", "--frobnicate"], ["convert"], ["bench"], ["nosuchcommand"],
                                  ["devices", "show"]])
def test_usage_errors_are_one_line(args):
    out = CliRunner().invoke(cli, args)
    assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
    assert out.output.startswith("Error: ") and "--help` lists the options" in out.output


def test_name_means_one_thing(int8_tflite, tmp_path):
    """--name is a model's name on a board (bundle, deploy); the metadata's is --display-name."""
    out = CliRunner().invoke(cli, ["metadata", "write", str(int8_tflite), "--display-name", "Digits", "-o",
                                   str(tmp_path / "m.tflite"), "--json"])
    assert out.exit_code == 0, out.output and json.loads(out.output)["metadata"]["name"] == "Digits"
    assert CliRunner().invoke(cli, ["metadata", "write", str(int8_tflite), "--name", "x"]).exit_code == 2


def test_export_android_has_json(int8_tflite, tmp_path):
    out = CliRunner().invoke(cli, ["export", "android", str(int8_tflite), "--package", "com.example.digits", "-o",
                                   str(tmp_path / "android"), "--json"])
    assert out.exit_code == 0, out.output
    done = json.loads(out.output)
    assert done["class_name"] == "DigitsInt8Classifier" and done["call"] == "classify(bitmap)"
    assert (tmp_path / "android" / done["kotlin_source"]).is_file()


def test_hints_quote_paths_with_spaces(runner, int8_tflite, tmp_path):
    """A path a hint tells the user to paste must survive the shell."""
    folder = tmp_path / "my models"
    folder.mkdir()
    model = folder / "digits int8.tflite"
    shutil.copy(int8_tflite, model)
    result = runner.invoke(cli, ["bundle", str(model)])
    assert result.exit_code == 0, result.output
    hint = next(line for line in result.output.splitlines() if "run it:" in line)
    assert f"python3 '{folder / 'digits int8.edgert'}' [verify" in hint


def test_run_inputs_that_are_not_numpy_files_are_one_line(int8_tflite, tmp_path):
    """A text file named .npy is 'not a .npy file' (numpy alone would call it pickled data); a damaged .npz is
    'not a readable .npz file'; neither is a traceback."""
    (tmp_path / "x.npy").write_text("1,2,3\n")
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 not a zip")
    for name, message in (("x.npy", "is not a .npy file (no NumPy header); save arrays with numpy.save"),
                          ("x.npz", "is not a readable .npz file")):
        out = CliRunner().invoke(cli, ["run", str(int8_tflite), "--input", str(tmp_path / name)])
        assert out.exit_code == 1 and message in out.output and out.output.count("\n") == 1, out.output
