"""`edgert export android`: the files, the constants in the generated Kotlin against the model, and the generated
class compiled with kotlinc and run on the JVM (Android and LiteRT stand-ins in tests/android_stubs)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgert
from edgert import metadata
from edgert.android import check_package, class_name_for, export_android
from edgert.cli import cli
from edgert.errors import MetadataError, OutputExistsError
from edgert.metadata import MetadataSpec
from tests import needs

STUBS = Path(__file__).parent / "android_stubs"
LABELS = [f"digit {i}" for i in range(10)]


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(LABELS) + "\n")
    return path


def constants(source: str) -> dict[str, str]:
    found = dict(re.findall(r"const val (\w+) = \"?([^\"\n]+?)\"?$", source, re.M))
    for name in ("INPUT_MEAN", "INPUT_STD"):
        found[name] = re.search(rf"val {name} = floatArrayOf\(([^)]*)\)", source).group(1)
    found["LABELS"] = re.findall(r'^\s+"((?:[^"\\]|\\.)*)",?$', source.split("val LABELS = listOf(")[1], re.M)
    found["DELEGATE_ORDER"] = re.search(r"val DELEGATE_ORDER = listOf\(([^)]*)\)", source).group(1)
    return found


def export(model, tmp_path, labels, name, delegates=("gpu", "nnapi"), **meta):
    out = tmp_path / name
    done = export_android(model, "com.example.digits", out, labels_path=labels, delegates=delegates,
                          meta=MetadataSpec(name="Digits", **meta))
    return out, done, (out / done.kotlin_source).read_text()


def test_int8_export_matches_the_model(int8_tflite, labels, tmp_path):
    out, done, source = export(int8_tflite, tmp_path, labels, "int8")
    assert done.class_name == "DigitsInt8Classifier"
    asset = out / "app/src/main/assets/digits_int8.tflite"
    assert done.kotlin_source == "app/src/main/java/com/example/digits/DigitsInt8Classifier.kt"
    spec_in, spec_out = edgert.inspect_model(int8_tflite).inputs[0], edgert.inspect_model(int8_tflite).outputs[0]
    c = constants(source)
    assert (int(c["INPUT_HEIGHT"]), int(c["INPUT_WIDTH"]), int(c["INPUT_CHANNELS"])) == spec_in.shape[1:]
    assert c["INPUT_DTYPE"] == "int8" and c["OUTPUT_DTYPE"] == "int8" and int(c["NUM_CLASSES"]) == 10
    assert float(c["INPUT_SCALE"].rstrip("f")) == pytest.approx(spec_in.scale[0], rel=1e-7)
    assert int(c["INPUT_ZERO_POINT"]) == spec_in.zero_point[0]
    assert float(c["OUTPUT_SCALE"].rstrip("f")) == pytest.approx(spec_out.scale[0], rel=1e-7)
    assert int(c["OUTPUT_ZERO_POINT"]) == spec_out.zero_point[0]
    assert (c["INPUT_MEAN"], c["INPUT_STD"]) == ("0f", "255f")  # derived from the int8 input's quantization
    assert c["LABELS"] == LABELS and c["DELEGATE_ORDER"] == '"gpu", "nnapi"'
    assert "put((Math.round(x / INPUT_SCALE) + INPUT_ZERO_POINT).coerceIn(-128, 127).toByte())" in source
    # The asset is the model with metadata, and runs the same as the original.
    assert metadata.read_metadata(asset).labels == tuple(LABELS)
    x = np.random.default_rng(1).uniform(0, 1, (4, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(edgert.load(asset).run(x)[0], edgert.load(int8_tflite).run(x)[0])
    snippet = (out / "build.gradle.snippet").read_text()
    assert 'aaptOptions { noCompress "tflite" }' in snippet
    assert 'implementation "com.google.ai.edge.litert:litert:1.4.2"' in snippet
    assert 'implementation "com.google.ai.edge.litert:litert-gpu:1.4.2"' in snippet
    assert "DigitsInt8Classifier(context).use" in (out / "README.md").read_text()


def test_float_export_matches_the_model(float_tflite, labels, tmp_path):
    out, done, source = export(float_tflite, tmp_path, labels, "float", delegates=("nnapi",), mean=(0.0,),
                               std=(16.0,), input_range=(0.0, 16.0))
    c = constants(source)
    assert c["INPUT_DTYPE"] == "float32" and c["OUTPUT_DTYPE"] == "float32"
    assert (c["INPUT_MEAN"], c["INPUT_STD"]) == ("0f", "16f") and c["INPUT_SCALE"] == "0f"
    assert "input.putFloat(x)" in source and "output.float" in source
    assert "litert-gpu" not in (out / "build.gradle.snippet").read_text()  # no GPU asked for, none pulled in


def _jvm_tools():
    missing = [tool for tool in ("kotlinc", "javac", "java") if shutil.which(tool) is None]
    if missing:
        needs.missing(f"{', '.join(missing)} not installed (`make test` installs Debian's kotlin as root)")


def _compile(sources: list[Path], work: Path) -> Path:
    """javac the stand-ins, kotlinc the generated classes against them, javac the harness: one classpath."""
    stubs = work / "stubs"
    java = sorted(str(p) for p in STUBS.rglob("*.java") if p.name != "Harness.java")
    subprocess.run(["javac", "-d", str(stubs), *java], check=True, capture_output=True)
    jar = work / "generated.jar"
    done = subprocess.run(["kotlinc", *map(str, sources), "-cp", str(stubs), "-include-runtime", "-d", str(jar)],
                          capture_output=True, text=True)
    errors = [line for line in done.stderr.splitlines() if "error:" in line or "warning:" in line and ".kt:" in line]
    assert done.returncode == 0 and not errors, done.stderr[-3000:]
    subprocess.run(["javac", "-cp", f"{stubs}:{jar}", "-d", str(work / "harness"), str(STUBS / "Harness.java")],
                   check=True, capture_output=True)
    return work


def _run(work: Path, task: str, class_name: str, assets: Path, gray: np.ndarray, outputs: list[bytes],
         names: tuple[str, list[str]] | None = None) -> dict:
    """Run the generated class; `names` (the input's and the outputs' signature names, in the order of `outputs`)
    make the stand-in interpreter answer `runSignature` only under those names."""
    pixels = (0xFF << 24) | (gray.astype(np.int64) << 16) | (gray.astype(np.int64) << 8) | gray.astype(np.int64)
    (work / "pixels.bin").write_bytes(pixels.astype("<u4").tobytes())
    files = []
    for k, data in enumerate(outputs):
        files.append(work / f"output{k}.bin")
        files[-1].write_bytes(data)
    done = subprocess.run(["java", "-cp", f"{work}/stubs:{work}/generated.jar:{work}/harness", "Harness", task,
                           class_name, str(assets), str(work / "pixels.bin"), str(gray.shape[1]), str(gray.shape[0]),
                           ",".join(map(str, files)), *((names[0], ",".join(names[1])) if names else ())],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    result["log"] = done.stderr
    return result


@pytest.mark.slow
def test_generated_classes_compile_and_prepare_what_edgert_would_feed(int8_tflite, float_tflite, labels, tmp_path):
    _jvm_tools()
    int8_out, int8_done, _ = export(int8_tflite, tmp_path, labels, "int8")
    float_out, float_done, _ = export(float_tflite, tmp_path, labels, "float", delegates=("nnapi",), mean=(0.0,),
                                      std=(16.0,), input_range=(0.0, 16.0))
    work = _compile([int8_out / int8_done.kotlin_source, float_out / float_done.kotlin_source], tmp_path / "jvm")
    gray = np.random.default_rng(3).integers(0, 256, (8, 8))

    # int8: the bytes the classifier feeds are what edgert's runtime makes of the same pixels.
    model = edgert.load(int8_tflite)
    raw_out = np.random.default_rng(4).integers(-128, 128, 10).astype(np.int8)
    names = (model.inputs[0].name, [model.outputs[0].name])  # the generated class runs the signature by name
    r = _run(work, "classification", "com.example.digits.DigitsInt8Classifier", int8_out / "app/src/main/assets",
             gray, [raw_out.tobytes()], names)
    spec = model.inputs[0]
    x = (gray.astype(np.float32) - 0.0) / 255.0
    q = np.clip(np.floor(x / np.float32(spec.scale[0]) + 0.5) + spec.zero_point[0], -128, 127).astype(np.int8)
    assert r["input"] == q.ravel().tolist()
    # edgert's own quantization of the same input (Model.run's parameters) agrees with the generated code's.
    from edgert.runtime.model import _Slot

    slot = _Slot.of(spec)
    ours = np.clip(np.round(x / slot.scale) + slot.zero_point, slot.qmin, slot.qmax).astype(np.int8)
    assert np.array_equal(ours.ravel(), q.ravel())
    out_spec = model.outputs[0]
    dequantized = (raw_out.astype(np.float32) - out_spec.zero_point[0]) * np.float32(out_spec.scale[0])
    np.testing.assert_allclose(r["scores"], dequantized, rtol=1e-6)
    best = int(np.argmax(dequantized))
    assert r["top"].startswith(f"[Recognition(label={LABELS[best]}, score=")
    assert r["delegate"] == "cpu" and r["closed"] is True
    assert "delegate gpu" not in r["log"] and "the GPU delegate does not support this device" in r["log"]
    assert "delegate nnapi is not available: no NNAPI on the JVM" in r["log"]
    assert r["model_bytes"] == (int8_out / "app/src/main/assets/digits_int8.tflite").stat().st_size

    # float: (pixel - 0) / 16 as float32, native byte order.
    raw_float = np.random.default_rng(5).uniform(0, 1, 10).astype(np.float32)
    gray16 = gray % 17
    r = _run(work, "classification", "com.example.digits.DigitsClassifier", float_out / "app/src/main/assets",
             gray16, [raw_float.tobytes()], names)
    fed = np.frombuffer(np.array(r["input"], np.int8).tobytes(), np.float32)
    np.testing.assert_allclose(fed, gray16.ravel().astype(np.float32) / 16.0, rtol=1e-6)
    np.testing.assert_allclose(r["scores"], raw_float, rtol=1e-6)


def test_names():
    assert class_name_for("digits_int8.tflite") == "DigitsInt8Classifier"
    assert class_name_for("3d-net.tflite") == "Model3dNetClassifier"
    assert check_package("com.example.app") == "com.example.app"
    for bad, why in (("com.example.1app", "must start with a letter"), ("com..app", "must start"),
                     ("com.example.class", "reserved word"), ("com.example.fun", "reserved word"),
                     ("com-example", "must start")):
        with pytest.raises(MetadataError, match=why):
            check_package(bad)


def test_bad_input_writes_nothing(int8_tflite, two_input_tflite, labels, tmp_path):
    runner = CliRunner()
    out = tmp_path / "out"
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    cases = [
        (["--package", "com.example.1app"], "not a Java package name"),
        (["--package", "com.example.app", "--labels", str(three)], "has 3 labels but the model's output has 10"),
        (["--package", "com.example.app", "--delegate", "tpu"], "the Android export knows gpu, nnapi"),
        (["--package", "com.example.app", "--task", "generic"], "generates classifiers, detectors and segmenters"),
        (["--package", "com.example.app", "--task", "detection"], "has 4 outputs: boxes, classes, scores"),
    ]
    for extra, message in cases:
        result = runner.invoke(cli, ["export", "android", str(int8_tflite), "-o", str(out), *extra])
        assert result.exit_code == 1 and result.output.count("\n") == 1 and message in result.output, result.output
    two = runner.invoke(cli, ["export", "android", str(two_input_tflite), "--package", "a.b", "-o", str(out)])
    assert two.exit_code == 1 and "has 2 inputs; --task classification expects one image input" in two.output
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="--force"):
        export_android(int8_tflite, "com.example.app", out)
    assert (out / "mine.txt").read_text() == "keep"
    done = runner.invoke(cli, ["export", "android", str(int8_tflite), "--package", "com.example.app",
                               "--labels", str(labels), "-o", str(out), "--force"])
    assert done.exit_code == 0 and not (out / "mine.txt").exists()
    assert (out / "app/src/main/java/com/example/app/DigitsInt8Classifier.kt").is_file()


@pytest.fixture(scope="module")
def detector_and_segmenter(tmp_path_factory):
    """A model with SSD-style outputs (boxes [1, 5, 4], classes, scores, count; the converter stores them out of
    order) and an int8 per-pixel classifier [1, 16, 16, 4]: stand-ins with the shapes real ones have."""
    from edgert.converters import convert
    from edgert.converters._tf import import_tf
    from edgert.runtime.native import native_log_captured

    tf, keras = import_tf()
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("android-models")
    image = keras.Input((16, 16, 3))
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.Flatten()(image))
    heads = keras.Model(image, [keras.layers.Reshape((5, 4))(keras.layers.Dense(20, activation="sigmoid")(hidden)),
                                keras.layers.Dense(5)(hidden), keras.layers.Dense(5, activation="sigmoid")(hidden),
                                keras.layers.Dense(1)(hidden)])

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def detector(x):
        boxes, classes, scores, count = heads(x)
        return boxes, tf.round(classes), scores, tf.reshape(count, [1])

    converter = tf.lite.TFLiteConverter.from_concrete_functions([detector.get_concrete_function()], heads)
    with native_log_captured():
        (folder / "ssd.tflite").write_bytes(converter.convert())
    pixels = keras.Input((16, 16, 3))
    keras.Model(pixels, keras.layers.Conv2D(4, 1, activation="softmax")(pixels)).save(folder / "seg.h5")
    np.save(folder / "calibration.npy", np.random.default_rng(0).uniform(0, 1, (16, 16, 16, 3)).astype(np.float32))
    seg = convert(folder / "seg.h5", folder / "seg_int8.tflite", int8=True,
                  calibration_data=folder / "calibration.npy", image_range=(0.0, 1.0)).output_path
    return folder / "ssd.tflite", Path(seg)


@pytest.mark.slow
def test_detector_and_segmenter_compile_and_read_their_outputs(detector_and_segmenter, tmp_path):
    _jvm_tools()
    ssd, seg = detector_and_segmenter
    labels = tmp_path / "animals.txt"
    labels.write_text("cat\ndog\nbird\n")
    det_out = tmp_path / "det"
    det = export_android(ssd, "com.example.det", det_out, labels_path=labels,
                         meta=MetadataSpec(name="Animals", task="detection", mean=(0.0,), std=(255.0,)))
    seg_out = tmp_path / "seg"
    segd = export_android(seg, "com.example.seg", seg_out, meta=MetadataSpec(name="Parts", task="segmentation"))
    assert (det.class_name, segd.class_name) == ("SsdDetector", "SegInt8Segmenter")
    source = (det_out / det.kotlin_source).read_text()
    info = edgert.inspect_model(ssd)
    roles = metadata.detection_roles(info.outputs)
    assert info.signature  # the generated class addresses the outputs by their signature names
    for role, index in zip(("BOXES", "CLASSES", "SCORES", "COUNT"), roles):
        assert f'private const val {role}_OUTPUT = "{info.outputs[index].name}"' in source
    assert "runSignature(" in source and "runForMultipleInputsOutputs" not in source
    assert [t.name for t in det.metadata.outputs][roles[1]] == "category"  # metadata follows the same roles
    work = _compile([det_out / det.kotlin_source, seg_out / segd.kotlin_source], tmp_path / "jvm")

    boxes = np.array([[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1], [0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.5, 0.5],
                      [0.3, 0.3, 0.4, 0.4]], np.float32)
    classes = np.array([0, 1, 2, 1, 0], np.float32)
    scores = np.array([0.9, 0.2, 0.7, 0.6, 0.95], np.float32)  # the 5th is beyond the count
    count = np.array([4], np.float32)
    by_role = [boxes.tobytes(), classes.tobytes(), scores.tobytes(), count.tobytes()]
    outputs = [by_role[roles.index(i)] for i in range(4)]  # as the interpreter would fill its outputs
    gray = np.full((32, 32), 128)
    names = (info.inputs[0].name, [o.name for o in info.outputs])
    r = _run(work, "detection", "com.example.det.SsdDetector", det_out / "app/src/main/assets", gray, outputs, names)
    assert r["detections"] == ("[Detection(label=cat, score=0.9, left=6.4, top=3.2, right=19.2, bottom=16.0), "
                               "Detection(label=bird, score=0.7, left=16.0, top=8.0, right=32.0, bottom=24.0), "
                               "Detection(label=dog, score=0.6, left=0.0, top=0.0, right=16.0, bottom=16.0)]")
    fed = np.frombuffer(np.array(r["input"], np.int8).tobytes(), np.float32)
    np.testing.assert_allclose(fed, np.full(16 * 16 * 3, 128 / 255, np.float32), rtol=1e-6)

    raw = np.random.default_rng(6).integers(-128, 128, (16 * 16, 4)).astype(np.int8)
    seg_info = edgert.inspect_model(seg)
    r = _run(work, "segmentation", "com.example.seg.SegInt8Segmenter", seg_out / "app/src/main/assets",
             np.random.default_rng(7).integers(0, 256, (16, 16)), [raw.tobytes()],
             (seg_info.inputs[0].name, [seg_info.outputs[0].name]))
    assert r["mask"] == raw.argmax(axis=1).tolist()
    assert r["delegate"] == "cpu" and r["closed"] is True


def test_detector_bad_input(detector_and_segmenter, tmp_path):
    ssd, seg = detector_and_segmenter
    with pytest.raises(MetadataError, match="a detector needs --labels"):
        export_android(ssd, "a.b", tmp_path / "x", meta=MetadataSpec(name="A", task="detection", mean=(0.0,),
                                                                      std=(1.0,)))
    with pytest.raises(MetadataError, match=r"a detector \(SSD post-processing\) has 4 outputs"):
        export_android(seg, "a.b", tmp_path / "x", meta=MetadataSpec(name="A", task="detection"))
    assert not (tmp_path / "x").exists()
