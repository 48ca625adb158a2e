"""Deploy bundles: contents, checksums, determinism, running one with a bare Python, and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgert
from edgert.deploy import bundle
from edgert.measure.bench import random_inputs
from edgert.cli import cli
from edgert.errors import BundleError, DeviceProfileError, ModelFormatError, OutputExistsError
from tests.fleet import SYSTEM_PYTHON


@pytest.fixture
def model(float_tflite, tmp_path):
    """The float digits model with its recipe and report beside it, in a folder of its own."""
    target = tmp_path / "digits.tflite"
    for suffix in ("", ".recipe.json", ".report.json"):
        shutil.copy(str(float_tflite) + suffix, str(target) + suffix)
    return target


def test_a_bundle_holds_the_model_its_recipe_report_and_runtime(model, tmp_path):
    made = bundle.make_bundle(model, "rpi5", tmp_path / "out.edgert")
    m = made.manifest
    with zipfile.ZipFile(made.path) as z:
        names = set(z.namelist())
        assert {"manifest.json", "__main__.py", "run", "model/digits.tflite", "model/digits.tflite.recipe.json",
                "model/digits.tflite.report.json", "edgert/runtime/model.py", "edgert/delegates/xnnpack.py",
                "edgert/devices/profiles/rpi5.toml", "edgert-0.1.0.dist-info/entry_points.txt"} <= names
        assert not any(n.startswith("edgert/converters") for n in names)  # no TensorFlow code on the board
        for f in m.files:  # every file's checksum and size, as the manifest says
            data = z.read(f.path)
            assert hashlib.sha256(data).hexdigest() == f.sha256 and len(data) == f.size
        assert z.read("model/digits.tflite") == model.read_bytes()
        assert z.getinfo("run").external_attr >> 16 & 0o111
        assert "[edgert.delegates]" in z.read("edgert-0.1.0.dist-info/entry_points.txt").decode()
    assert m.device == "rpi5" and m.delegates == ("xnnpack",) and m.python_min == (3, 10)
    assert "ai-edge-litert>=2.3" in m.requirements and "numpy>=1.23" in m.requirements
    assert m.recipe == json.loads((Path(str(model) + ".recipe.json")).read_text())
    assert m.model_sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert [i["shape"] for i in m.inputs] == [list(s.shape) for s in edgert.inspect_model(model).inputs]
    assert made.sha256 == hashlib.sha256(Path(made.path).read_bytes()).hexdigest()
    assert bundle.verify(made.path) == bundle.read_manifest(made.path) == m


def test_the_same_inputs_make_the_same_bytes(model, tmp_path):
    a = bundle.make_bundle(model, "rpi5", tmp_path / "a.edgert")
    b = bundle.make_bundle(model, "rpi5", tmp_path / "b.edgert")
    assert a.sha256 == b.sha256 and a.manifest.version == b.manifest.version
    c = bundle.make_bundle(model, "coral-devboard", tmp_path / "c.edgert")
    assert c.manifest.version != a.manifest.version  # the version covers the whole manifest, the device included
    assert c.sha256 != a.sha256 and c.manifest.delegates == ("edgetpu:pci", "xnnpack")


def test_without_a_device_the_board_decides(model, tmp_path):
    m = bundle.make_bundle(model, None, tmp_path / "any.edgert").manifest
    assert m.device is None and m.delegates == ("auto",)


def test_a_bundle_runs_as_a_zip_application(model, tmp_path):
    made = bundle.make_bundle(model, "x86-64", tmp_path / "digits.edgert")
    env = {**os.environ, "EDGERT_CACHE_DIR": str(tmp_path / "cache")}
    verified = subprocess.run([sys.executable, made.path, "verify"], capture_output=True, text=True, env=env)
    assert verified.returncode == 0 and f"version {made.manifest.version}" in verified.stdout
    ran = subprocess.run([sys.executable, made.path, "run", "--json"], capture_output=True, text=True, env=env)
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    assert out["inputs"] == "seeded random"
    assert out["delegation"]["requested"] == ["gpu", "xnnpack"]  # the profile's order
    m = edgert.load(model)
    expected = m.run(random_inputs(m.inputs))[0]
    got = np.array(next(iter(out["outputs"].values()))["values"], np.float32)
    np.testing.assert_array_equal(got, expected)
    # The edgert that ran is the bundle's own copy (unpacked once into the cache), not the one installed here.
    where = subprocess.run([sys.executable, "-c", "import edgert, sys; print(edgert.__file__)"],
                           capture_output=True, text=True, cwd=next((tmp_path / "cache" / "bundles").iterdir()))
    assert str(tmp_path / "cache" / "bundles") in where.stdout


def test_the_bundle_needs_only_the_standard_library_to_verify_itself(model, tmp_path):
    made = bundle.make_bundle(model, "rpi5", tmp_path / "d.edgert")
    python = SYSTEM_PYTHON
    done = subprocess.run([python, "-I", made.path, "verify"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr


def test_a_bundle_for_any_board_runs_as_a_zip(model, tmp_path):
    """Without --device the bundle detects the board from its profiles, which it reads from inside the zip."""
    made = bundle.make_bundle(model, None, tmp_path / "any.edgert")
    env = {**os.environ, "EDGERT_CACHE_DIR": str(tmp_path / "cache")}
    ran = subprocess.run([sys.executable, made.path, "run", "--json"], capture_output=True, text=True, env=env)
    assert ran.returncode == 0, ran.stderr


def test_a_python_without_the_runtime_gets_one_line_naming_what_to_install(model, tmp_path):
    """A board's bare system Python (no numpy, click or interpreter) verifies the bundle but cannot run it: one
    line that names what is missing and the pip command, not a traceback."""
    made = bundle.make_bundle(model, "rpi5", tmp_path / "d.edgert")
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "python"), made.path, "run"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"{venv}/bin/python lacks numpy, click, ai-edge-litert (or tflite-runtime)" in line
    assert "-m pip install 'numpy>=1.23' 'click>=8.1' 'ai-edge-litert>=2.3'" in line


def test_a_damaged_bundle_is_refused(model, tmp_path):
    made = bundle.make_bundle(model, "rpi5", tmp_path / "d.edgert")
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(made.path) as z:
        z.extractall(unpacked)
    assert bundle.verify(unpacked).version == made.manifest.version
    weights = unpacked / "model" / "digits.tflite"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model/digits.tflite does not match its checksum"):
        bundle.verify(unpacked)
    (unpacked / "edgert" / "runtime" / "model.py").unlink()
    with pytest.raises(BundleError, match="edgert/runtime/model.py is missing"):
        bundle.verify(unpacked)
    done = subprocess.run([sys.executable, str(unpacked), "run"], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.startswith("Error: ") and "Traceback" not in done.stderr


@pytest.mark.parametrize("content, message", [(b"", "not an edgert bundle"), (b"PK\x03\x04junk", "not an edgert bundle")])
def test_what_is_not_a_bundle(tmp_path, content, message):
    path = tmp_path / "x.edgert"
    path.write_bytes(content)
    with pytest.raises(BundleError, match=message):
        bundle.read_manifest(path)
    with zipfile.ZipFile(tmp_path / "y.edgert", "w") as z:
        z.writestr("manifest.json", json.dumps({"format": 99}))
    with pytest.raises(BundleError, match="bundle format 99 is not 1"):
        bundle.read_manifest(tmp_path / "y.edgert")


def test_bad_input_is_refused_before_anything_is_written(model, tmp_path):
    out = tmp_path / "out.edgert"
    not_a_model = tmp_path / "notes.tflite"
    not_a_model.write_text("hello")
    with pytest.raises(ModelFormatError):
        bundle.make_bundle(not_a_model, "rpi5", out)
    with pytest.raises(DeviceProfileError, match="did you mean 'rpi4' or 'rpi5'"):
        bundle.make_bundle(model, "rpi", out)
    with pytest.raises(BundleError, match="runs models inside an app"):
        bundle.make_bundle(model, "android", out)
    with pytest.raises(BundleError, match="ends in .edgert"):
        bundle.make_bundle(model, "rpi5", tmp_path / "out.zip")
    assert not out.exists() and not list(tmp_path.glob(".*part"))
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="--force"):
        bundle.make_bundle(model, "rpi5", out)
    assert out.read_bytes() == b"keep me"
    assert bundle.make_bundle(model, "rpi5", out, force=True).size_bytes == out.stat().st_size


def test_cli_bundle(model, tmp_path):
    runner = CliRunner()
    out = tmp_path / "digits.edgert"
    done = runner.invoke(cli, ["bundle", str(model), "--device", "rpi5", "-o", str(out)])
    assert done.exit_code == 0 and "wrote" in done.output and "python3" in done.output
    again = runner.invoke(cli, ["bundle", str(model), "--device", "rpi5", "-o", str(out)])
    assert again.exit_code == 1 and again.output.count("\n") == 1 and "--force" in again.output
    data = json.loads(runner.invoke(cli, ["bundle", str(model), "-o", str(out), "--force", "--json"]).output)
    assert data["manifest"]["delegates"] == ["auto"] and data["size_bytes"] == out.stat().st_size


def test_the_version_covers_the_whole_manifest(int8_tflite, tmp_path):
    """Two bundles of the same files for different boards differ in their manifests, so in their versions."""
    generic = bundle.make_bundle(int8_tflite, None, tmp_path / "generic.edgert")
    pi = bundle.make_bundle(int8_tflite, "rpi5", tmp_path / "pi.edgert")
    assert generic.manifest.version != pi.manifest.version
    again = bundle.make_bundle(int8_tflite, "rpi5", tmp_path / "again.edgert")
    assert again.manifest.version == pi.manifest.version and again.sha256 == pi.sha256
