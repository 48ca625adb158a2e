"""Conversion: each mode, each input format, and every bad input refused with nothing written."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import edgert
from edgert.converters import Quantization, convert, default_output_path
from edgert.errors import ConversionError, InputDataError, ModelFormatError, OutputExistsError
from tests import needs


def test_modes_and_result(converted, h5_path, calibration_npy):
    f32, dyn, i8 = converted["float32"], converted["dynamic"], converted["int8"]
    assert (f32.mode, dyn.mode, i8.mode) == (Quantization.FLOAT32, Quantization.DYNAMIC, Quantization.INT8)
    assert f32.output_size_bytes > dyn.output_size_bytes and f32.output_size_bytes > i8.output_size_bytes
    assert i8.calibration_samples == 200 and dyn.calibration_samples == 0
    assert i8.inputs[0].dtype == "int8" and i8.outputs[0].dtype == "int8"
    assert f32.inputs[0].dtype == "float32" and dyn.inputs[0].dtype == "float32"
    assert any("--calibration-data" in n for n in dyn.notes) and not i8.notes
    for result in converted.values():
        assert os.path.getsize(result.output_path) == result.output_size_bytes
        assert result.source_size_bytes == os.path.getsize(h5_path)
        assert json.loads(json.dumps(result.to_dict()))["mode"] == result.mode.value


def test_dynamic_model_runs_close_to_float(converted, digits):
    f32 = edgert.load(converted["float32"].output_path).run(digits.x_test)[0]
    dyn = edgert.load(converted["dynamic"].output_path).run(digits.x_test)[0]
    assert (f32.argmax(1) == dyn.argmax(1)).mean() >= 0.97


def test_default_output_paths(tmp_path):
    assert default_output_path(tmp_path / "m.h5", Quantization.INT8) == tmp_path / "m_int8.tflite"
    assert default_output_path(tmp_path / "m.keras", Quantization.FLOAT32) == tmp_path / "m.tflite"
    (tmp_path / "saved").mkdir()
    assert default_output_path(tmp_path / "saved", Quantization.DYNAMIC) == tmp_path / "saved_dynamic.tflite"


def test_float_io_int8(h5_path, calibration_npy, tmp_path, digits):
    result = convert(h5_path, tmp_path / "fio.tflite", int8=True, calibration_data=calibration_npy, float_io=True)
    assert result.inputs[0].dtype == "float32" and result.outputs[0].dtype == "float32"
    assert edgert.inspect_model(result.output_path).quantization == "full integer (int8), float I/O"
    assert edgert.load(result.output_path).run(digits.x_test[:2])[0].shape == (2, 10)


def test_keras_format_and_saved_model(keras_digits, tmp_path, digits):
    keras_path = tmp_path / "digits.keras"
    keras_digits.save(keras_path)
    saved = tmp_path / "saved_digits"
    keras_digits.save(saved, save_format="tf")
    expected = keras_digits.predict(digits.x_test[:4], verbose=0)
    for source in (keras_path, saved):
        result = convert(source)
        assert result.output_path == str(default_output_path(source, Quantization.FLOAT32))
        np.testing.assert_allclose(edgert.load(result.output_path).run(digits.x_test[:4])[0], expected, atol=1e-5)


def test_calibration_npz_and_sample_limit(h5_path, digits, tmp_path):
    npz = tmp_path / "calib.npz"
    np.savez(npz, x=digits.x_train[:50], y=digits.y_train[:50])
    result = convert(h5_path, tmp_path / "a.tflite", int8=True, calibration_data=npz, calibration_samples=20)
    assert result.calibration_samples == 20


def test_calibration_image_folder(h5_path, digits, tmp_path):
    tf = needs.module("tensorflow")
    folder = tmp_path / "images"
    (folder / "class_a").mkdir(parents=True)
    for i in range(12):
        pixels = (digits.x_train[i] * 255).astype(np.uint8)
        # 16x16 PNGs: the converter resizes them to the model's 8x8
        big = np.kron(pixels, np.ones((2, 2, 1), np.uint8))
        (folder / "class_a" / f"{i}.png").write_bytes(tf.io.encode_png(big).numpy())
    (folder / "README.txt").write_text("not an image, ignored")
    result = convert(h5_path, tmp_path / "img.tflite", int8=True, calibration_data=folder, image_range=(0.0, 1.0))
    assert result.calibration_samples == 12
    assert edgert.load(result.output_path).run(digits.x_test[:1])[0].shape == (1, 10)


# -- bad input: a one-line error and nothing written --------------------------------------------------------


@pytest.fixture
def workdir(tmp_path):
    d = tmp_path / "work"
    d.mkdir()
    return d


def _assert_nothing_written(directory, before):
    assert sorted(os.listdir(directory)) == sorted(before)


def test_missing_model(workdir):
    with pytest.raises(ModelFormatError, match="no such file"):
        convert(workdir / "nope.h5")
    _assert_nothing_written(workdir, [])


@pytest.mark.parametrize("name, content, message", [
    ("text.h5", b"just some text\n", "not an HDF5 file"),
    ("text.keras", b"just some text\n", "not a zip file"),
    ("model.onnx", b"\x08\x07", "is not a readable ONNX model"),
    ("weights.pt", b"PK\x05\x06" + bytes(18), "holds PyTorch weights, not a model: give the module as FILE.py:FACTORY"),
    ("model.tf", b"x", "unsupported model format .tf; edgert converts .h5, .keras, SavedModel directories, .onnx"),
    ("m.tflite", b"\x18\x00\x00\x00TFL3", "already a TFLite model"),
])
def test_not_a_model(workdir, name, content, message):
    (workdir / name).write_bytes(content)
    with pytest.raises(ModelFormatError, match=message):
        convert(workdir / name)
    _assert_nothing_written(workdir, [name])


def test_truncated_h5(workdir, h5_path):
    data = h5_path.read_bytes()
    (workdir / "cut.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="damaged HDF5 file"):
        convert(workdir / "cut.h5")
    _assert_nothing_written(workdir, ["cut.h5"])


def test_keras_zip_without_config(workdir):
    with zipfile.ZipFile(workdir / "empty.keras", "w") as z:
        z.writestr("metadata.json", "{}")
    with pytest.raises(ModelFormatError, match="no config.json"):
        convert(workdir / "empty.keras")


def test_directory_that_is_not_a_saved_model(workdir):
    with pytest.raises(ModelFormatError, match="without saved_model.pb"):
        convert(workdir)


def test_unknown_non_batch_dimensions(workdir):
    from edgert.converters._tf import import_tf

    _, keras = import_tf()
    model = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3)])
    model.save(workdir / "dyn.h5")
    with pytest.raises(ModelFormatError, match=r"shape \(None, None, None, 3\) with unknown dimensions"):
        convert(workdir / "dyn.h5")
    _assert_nothing_written(workdir, ["dyn.h5"])


@pytest.mark.parametrize("make, message", [
    (lambda d: np.zeros((10, 8, 8), np.float32), r"has shape \(10, 8, 8\); the model expects \(N, 8, 8, 1\)"),
    (lambda d: np.zeros((10, 64), np.float32), r"the model expects \(N, 8, 8, 1\)"),
    (lambda d: np.full((4, 8, 8, 1), np.nan, np.float32), "NaN or infinite"),
    (lambda d: np.zeros((0, 8, 8, 1), np.float32), "non-zero number of samples"),
    (lambda d: np.array([{"a": 1}], dtype=object), "holds Python objects"),
])
def test_bad_calibration_data(workdir, h5_path, make, message):
    np.save(workdir / "calib.npy", make(None), allow_pickle=True)
    with pytest.raises(InputDataError, match=message):
        convert(h5_path, workdir / "out.tflite", int8=True, calibration_data=workdir / "calib.npy")
    _assert_nothing_written(workdir, ["calib.npy"])


def test_bad_calibration_files(workdir, h5_path):
    out = workdir / "out.tflite"
    with pytest.raises(InputDataError, match="no such file"):
        convert(h5_path, out, int8=True, calibration_data=workdir / "missing.npy")
    (workdir / "c.csv").write_text("1,2\n")
    with pytest.raises(InputDataError, match="use a .npy, an .npz or a folder"):
        convert(h5_path, out, int8=True, calibration_data=workdir / "c.csv")
    (workdir / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputDataError, match="not a readable .npy"):
        convert(h5_path, out, int8=True, calibration_data=workdir / "broken.npy")
    (workdir / "empty_dir").mkdir()
    with pytest.raises(InputDataError, match="holds no images"):
        convert(h5_path, out, int8=True, calibration_data=workdir / "empty_dir")
    with pytest.raises(InputDataError, match="at least 1"):
        convert(h5_path, out, int8=True, calibration_data=workdir / "broken.npy", calibration_samples=0)
    assert not out.exists()


def test_option_conflicts(workdir, h5_path, calibration_npy):
    with pytest.raises(InputDataError, match="only used with --int8"):
        convert(h5_path, workdir / "o.tflite", calibration_data=calibration_npy)
    with pytest.raises(InputDataError, match="--float-io applies to full-integer"):
        convert(h5_path, workdir / "o.tflite", int8=True, float_io=True)
    _assert_nothing_written(workdir, [])


def test_existing_output_needs_force(workdir, h5_path):
    out = workdir / "out.tflite"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="pass --force"):
        convert(h5_path, out)
    assert out.read_bytes() == b"precious"
    convert(h5_path, out, force=True)
    assert edgert.inspect_model(out).quantization == "float32"
    # the recipe and report sit beside the model; no temporary file is left
    _assert_nothing_written(workdir, ["out.tflite", "out.tflite.recipe.json", "out.tflite.report.json"])
    with pytest.raises(OutputExistsError, match="recipe.json exists"):
        out.unlink()
        convert(h5_path, out)


def test_missing_output_directory(workdir, h5_path):
    with pytest.raises(OutputExistsError, match="output directory .* does not exist"):
        convert(h5_path, workdir / "no" / "such" / "dir" / "m.tflite")
    _assert_nothing_written(workdir, [])


def test_interrupted_conversion_leaves_no_file(workdir, h5_path, monkeypatch):
    """Ctrl-C while the output is being written leaves neither the output nor a temporary file."""
    import contextlib

    import edgert.converters.conversion as conversion
    from edgert.files import atomic_path

    @contextlib.contextmanager
    def interrupted(path):
        with atomic_path(path) as tmp:
            yield tmp
            assert tmp.stat().st_size > 0  # the model was written to the temporary file
            raise KeyboardInterrupt

    monkeypatch.setattr(conversion, "atomic_path", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert(h5_path, workdir / "out.tflite")
    _assert_nothing_written(workdir, [])


def test_converter_failure_is_one_line(workdir, monkeypatch, h5_path):
    tf = needs.module("tensorflow")

    class Broken:
        def convert(self):
            raise RuntimeError("op FOO is\nnot supported")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", staticmethod(lambda model: Broken()))
    with pytest.raises(ConversionError, match="failed: op FOO is not supported") as err:
        convert(h5_path, workdir / "o.tflite")
    assert "\n" not in str(err.value)
    _assert_nothing_written(workdir, [])
