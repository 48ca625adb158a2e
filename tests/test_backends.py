"""The runtime does not depend on which interpreter package is installed: the operator table edgert carries is the
schema's own, and `inspect`, `run` and `check` give the same answers on TensorFlow's interpreter with ai_edge_litert
unimportable as they do on ai_edge_litert."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgert
from edgert.tflite._builtin_operators import BuiltinOperator

HIDE_LITERT = """
import sys

class Hide:
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "ai_edge_litert" or fullname.startswith("ai_edge_litert."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)

sys.meta_path.insert(0, Hide())
from edgert.cli import main
sys.argv = ["edgert", *sys.argv[1:]]
main()
"""


def _class_block(path: Path) -> str:
    """`class BuiltinOperator(object):` and its indented lines, as flatc wrote them."""
    lines = path.read_text().splitlines()
    start = lines.index("class BuiltinOperator(object):")
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return "\n".join(lines[start:end])


@pytest.mark.parametrize("package", ["ai_edge_litert", "tensorflow.lite.python"])
def test_the_carried_operator_table_is_the_schemas_own(package):
    from edgert.converters._tf import import_tf

    import_tf()  # TensorFlow with Keras 2 behind tf.keras, as the rest of the suite needs it
    module = pytest.importorskip(f"{package}.schema_py_generated")
    ours = Path(edgert.__file__).parent / "tflite" / "_builtin_operators.py"
    assert _class_block(ours) == _class_block(Path(module.__file__))
    assert BuiltinOperator.CONV_2D == 3 and BuiltinOperator.STABLEHLO_CASE == 209


def edgert_without_litert(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE_LITERT, *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_inspect_run_and_check_agree_without_ai_edge_litert(int8_tflite, float_tflite, mixed_tflite, tmp_path,
                                                            digits):
    from click.testing import CliRunner

    from edgert.cli import cli

    np.save(tmp_path / "x.npy", digits.x_test[:4])
    for model in (int8_tflite, float_tflite, mixed_tflite):
        here = json.loads(CliRunner().invoke(cli, ["inspect", str(model), "--json"]).output)
        done = edgert_without_litert("inspect", model, "--json")
        assert done.returncode == 0, done.stderr[-1500:]
        there = json.loads(done.stdout)
        assert there["backend"].startswith("tensorflow") and here["backend"].startswith("ai_edge_litert")
        for key in ("inputs", "outputs", "operators", "quantization", "custom_operators", "tensor_count"):
            assert here[key] == there[key], key
        assert "BUILTIN_" not in json.dumps(there["operators"])

        here = CliRunner().invoke(cli, ["check", str(model), "--json"]).output
        done = edgert_without_litert("check", model, "--json")
        assert done.returncode in (0, 1) and json.loads(done.stdout) == json.loads(here)

    for model in (int8_tflite, float_tflite):
        np.save(tmp_path / "mine.npy", edgert.load(model).run(digits.x_test[:4])[0])
        done = edgert_without_litert("run", model, "--input", tmp_path / "x.npy", "-o", tmp_path / "theirs.npy",
                                     "--force")
        assert done.returncode == 0, done.stderr[-1500:]
        assert re.search(r"ran in [\d.]+ ms on tensorflow", done.stdout)
        np.testing.assert_array_equal(np.load(tmp_path / "theirs.npy"), np.load(tmp_path / "mine.npy"))


def test_without_any_interpreter_the_error_says_install_one(int8_tflite):
    hide_all = HIDE_LITERT.replace('fullname == "ai_edge_litert" or fullname.startswith("ai_edge_litert.")',
                                   'fullname.split(".")[0] in ("ai_edge_litert", "tflite_runtime", "tensorflow")')
    done = subprocess.run([sys.executable, "-c", hide_all, "run", str(int8_tflite)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "no TFLite interpreter is installed" in done.stderr and "pip install ai-edge-litert" in done.stderr
    assert done.stderr.count("\n") == 1
