"""Detectors: the YOLO family's decoders (edgert.tasks.boxes) against the true boxes and against ddddocr's own
post-processing; conversions within 1e-4 of onnxruntime in float32 (dynamic and fixed sizes, opsets 11 to 17,
simplified or not); int8 that keeps the detections, judged by decoding both models' outputs independently; the
agreement check that sees a lost channel; --explain, --keep-float and --int16.

The test detectors (tests/detectors/nets.py) are trained on synthetic shapes (tests/detectors/train.py); ddddocr's
YOLOX-style detector is a trained model a package ships. Every figure here is measured against onnxruntime or torch
run by the test itself, or against the pictures' true boxes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from edgert.tasks import boxes as detect
from tests import needs
from tests.detectors import nets, shapes

torch = needs.module("torch")

WEIGHTS = Path(__file__).parent / "detectors" / "weights"
SIZE = 160


def trained(family: str) -> nets.Detector:
    model = nets.Detector(family, nc=len(shapes.CLASSES), size=SIZE, width=8)
    weights = torch.load(WEIGHTS / f"{'yolox' if family == 'yolox-raw' else family}.pt")
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    return model.eval()


@pytest.fixture(scope="module")
def held_out():
    """32 pictures nobody trained on (NCHW, 0..1) and their true boxes."""
    return shapes.batch(np.random.default_rng(99), 32, SIZE)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    images, _ = shapes.batch(np.random.default_rng(7), 64, SIZE)
    path = tmp_path_factory.mktemp("calibration") / "pictures.npy"
    np.save(path, images)
    return path


def export(family: str, path: Path, *, dynamic: bool, opset: int = 17, simplify: bool = False) -> Path:
    """The detector as users export it: open or fixed input size, an opset, onnxsim or not."""
    axes = {"images": {0: "batch", 2: "height", 3: "width"}} if dynamic else None
    torch.onnx.export(trained(family), (torch.rand(1, 3, SIZE, SIZE),), str(path), input_names=["images"],
                      output_names=["output0"], opset_version=opset, dynamic_axes=axes, dynamo=False)
    if simplify:
        import onnx
        import onnxsim

        model, ok = onnxsim.simplify(onnx.load(str(path)), overwrite_input_shapes={"images": [1, 3, SIZE, SIZE]})
        assert ok
        onnx.save(model, str(path))
    return path


def detections(layout: str, outputs, hw=(SIZE, SIZE)):
    return [detect.decode(layout, [o[None]], hw) for o in outputs]


def agreement(found: list, reference: list) -> tuple[float, float]:
    """Recall and precision of `found` against `reference`, picture by picture (IoU 0.5, same class)."""
    matched = total = made = 0
    for f, r in zip(found, reference):
        m, n_found, n_ref = detect.match(f, r)
        matched, made, total = matched + m, made + n_found, total + n_ref
    return matched / max(total, 1), matched / max(made, 1)


# --- decoders --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family,floor", [("yolov8", 0.85), ("yolo11", 0.8), ("yolov5", 0.55), ("yolox", 0.8),
                                          ("yolox-raw", 0.8)])
def test_each_family_is_recognised_by_its_shape_and_decodes_to_the_true_boxes(family, floor, held_out):
    images, truth = held_out
    model = trained(family)
    with torch.no_grad():
        outputs = model(torch.from_numpy(images)).numpy()
    layout = detect.recognise([(1, *outputs.shape[1:])], (SIZE, SIZE), [outputs[:1]])
    assert layout == detect.layout_of_family(family)
    found = detections(layout, outputs)
    recall, precision = agreement(found, [[detect.Detection(tuple(b[:4]), 1.0, int(b[4])) for b in t]
                                          for t in truth])
    assert recall >= floor and precision >= floor - 0.1, (family, recall, precision)


def test_a_layout_no_decoder_knows_is_not_guessed():
    assert detect.recognise([(1, 10)], (160, 160)) is None  # a classifier
    assert detect.recognise([(1, 7, 500)], (160, 160)) is None  # not the cells of any stride set at 160 px
    assert detect.recognise([(1, 84, 8400)], (640, 640)) == detect.YOLOV8
    assert detect.recognise([(1, 25200, 85)], (640, 640)) == detect.YOLOV5
    assert detect.recognise([(1, 100, 6)], (640, 640)) == detect.NMS
    ssd = [(1, 10, 4), (1, 10), (1, 10), (1,)]
    assert detect.recognise(ssd, (300, 300)) == detect.SSD


def test_nms_is_per_class_and_matching_is_one_to_one():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]], np.float32)
    out = np.zeros((1, 6, 3), np.float32)  # v8 layout: xywh then two class scores
    out[0, :4] = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                           boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    out[0, 4:] = [[0.9, 0.8, 0.0], [0.0, 0.0, 0.7]]  # the third box overlaps the first but is another class
    found = detect.decode(detect.YOLOV8, [out], (32, 32))
    assert [(d.class_id, round(d.score, 2)) for d in found] == [(0, 0.9), (1, 0.7)]
    assert detect.decode(detect.YOLOV8, [out], (32, 32), classwise=False)[1:] == []
    twice = [found[0], found[0]]
    assert detect.match(twice, [found[0]]) == (1, 2, 1)  # one reference box matches once


def test_ssd_postprocess_outputs_become_boxes_in_pixels():
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]]], np.float32)  # ymin, xmin, ymax, xmax
    classes, scores, count = np.array([[3.0, 7.0]], np.float32), np.array([[0.9, 0.1]], np.float32), np.array([2.0])
    found = detect.decode(detect.SSD, [boxes, classes, scores, count], (100, 200), conf=0.5)
    (only,) = found
    assert only.box == pytest.approx((40.0, 10.0, 120.0, 50.0)) and only.score == pytest.approx(0.9)
    assert only.class_id == 3


def ddddocr_detector() -> Path:
    spec = importlib.util.find_spec("ddddocr")
    if spec is None:
        needs.missing("ddddocr is not installed (make install puts it in the venv)")
    return Path(spec.origin).parent / "common_det.onnx"


@pytest.fixture(scope="module")
def photographs(tmp_path_factory):
    """skimage's photographs (and crops of them) letterboxed to 416 px as YOLOX takes them: BGR, 0..255, NCHW."""
    needs.module("skimage")
    from PIL import Image
    from skimage import data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "text", "page", "camera", "coins",
                 "hubble_deep_field", "retina", "immunohistochemistry"):
        a = getattr(data, name)()
        a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
        for crop in (a, a[: a.shape[0] * 2 // 3, : a.shape[1] * 2 // 3], a[a.shape[0] // 3:, a.shape[1] // 3:]):
            r = min(416 / crop.shape[0], 416 / crop.shape[1])
            image = Image.fromarray(crop).resize((int(crop.shape[1] * r), int(crop.shape[0] * r)), Image.BILINEAR)
            padded = np.full((416, 416, 3), 114, np.uint8)
            padded[: image.size[1], : image.size[0]] = np.asarray(image)
            out.append(padded[..., ::-1].transpose(2, 0, 1).astype(np.float32))
    path = tmp_path_factory.mktemp("photographs") / "photographs.npy"
    np.save(path, np.stack(out))
    return path


def test_yolox_decoding_matches_ddddocrs_own_post_processing(photographs):
    """ddddocr's demo_postprocess and NMS (the YOLOX repository's code) on onnxruntime's outputs against
    edgert.tasks.boxes on the same outputs: the same boxes."""
    needs.module("cv2")
    ort = needs.module("onnxruntime")
    from ddddocr.core.detection_engine import DetectionEngine

    session = ort.InferenceSession(str(ddddocr_detector()), providers=["CPUExecutionProvider"])
    engine = DetectionEngine.__new__(DetectionEngine)  # its post-processing only; no model of its own loaded
    compared = 0
    for image in np.load(photographs):
        raw = session.run(None, {"images": image[None]})[0]
        theirs = engine.demo_postprocess(raw.copy(), (416, 416))[0]
        boxes = np.concatenate([theirs[:, :2] - theirs[:, 2:4] / 2, theirs[:, :2] + theirs[:, 2:4] / 2], 1)
        kept = engine.multiclass_nms(boxes, theirs[:, 4:5] * theirs[:, 5:], 0.45, 0.1)
        ours = detect.decode(detect.recognise([raw.shape], (416, 416), [raw]), [raw], (416, 416), conf=0.1,
                             iou=0.45)
        want = [] if kept is None else [detect.Detection(tuple(k[:4]), float(k[4]), int(k[5])) for k in kept]
        assert detect.match(ours, want, iou=0.99) == (len(want), len(ours), len(want)), image.shape
        compared += len(want)
    assert compared >= 15  # the photographs hold text, and this detector finds it


# --- conversions -----------------------------------------------------------------------------------------------

def run_both(onnx_path: Path, tflite_path: Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime on the file, edgert on the .tflite (channel-last), sample by sample."""
    import onnxruntime

    import edgert

    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = edgert.load(tflite_path)
    want = np.concatenate([session.run(None, {"images": x[None]})[0] for x in images])
    got = np.concatenate([model.run(x[None].transpose(0, 2, 3, 1))[0] for x in images])
    return want, got


FLOAT_CASES = [  # family, dynamic, opset, simplified
    pytest.param("yolov8", True, 17, False, id="yolov8-dynamic-opset17"),
    pytest.param("yolov5", False, 11, True, id="yolov5-fixed-opset11-onnxsim", marks=pytest.mark.detectors),
    pytest.param("yolox-raw", False, 12, False, id="yolox-raw-fixed-opset12"),
    pytest.param("yolo11", False, 13, False, id="yolo11-fixed-opset13", marks=pytest.mark.detectors),
    pytest.param("yolox", True, 17, False, id="yolox-dynamic-opset17", marks=pytest.mark.detectors),
    pytest.param("yolov8", False, 11, True, id="yolov8-fixed-opset11-onnxsim", marks=pytest.mark.detectors),
    pytest.param("yolov5", True, 17, False, id="yolov5-dynamic-opset17", marks=pytest.mark.detectors),
]


@pytest.mark.slow
@pytest.mark.parametrize("family,dynamic,opset,simplify", FLOAT_CASES)
def test_yolo_family_converts_within_1e4_of_onnxruntime(family, dynamic, opset, simplify, held_out, tmp_path):
    needs.module("onnx2tf")
    from edgert.converters import convert
    from edgert.converters.foreign import ForeignOptions

    source = export(family, tmp_path / f"{family}.onnx", dynamic=dynamic, opset=opset, simplify=simplify)
    options = ForeignOptions(input_shapes=(("images", (1, 3, SIZE, SIZE)),)) if dynamic else None
    result = convert(source, tmp_path / f"{family}.tflite", foreign=options)
    assert result.route == "onnx" and not result.warnings, result.warnings
    images, _ = held_out
    want, got = run_both(source, tmp_path / f"{family}.tflite", images[:12])
    assert np.abs(want - got).max() / np.abs(want).max() <= 1e-4
    layout = detect.layout_of_family(family)
    recall, precision = agreement(detections(layout, got), detections(layout, want))
    assert (recall, precision) == (1.0, 1.0)


@pytest.mark.slow
def test_int8_yolov8_keeps_its_detections_and_says_what_it_kept_in_float(calibration, held_out, tmp_path):
    """Full int8 of an anchor-free head: the one tensor of box pixels and scores is found from the calibration
    outputs, its joining operators stay in float, and the detections survive (onnxruntime against the .tflite,
    decoded here). --explain lists the layers by error; the model's tensor types show what stayed float."""
    needs.module("onnx2tf")
    from ai_edge_litert.interpreter import Interpreter

    from edgert.converters import convert
    from edgert.converters.foreign import ForeignOptions

    source = export("yolov8", tmp_path / "yolov8.onnx", dynamic=True)
    out = tmp_path / "yolov8_int8.tflite"
    result = convert(source, out, int8=True, calibration_data=calibration, explain=True,
                     foreign=ForeignOptions(input_shapes=(("images", (1, 3, SIZE, SIZE)),)))
    assert result.mode.value == "int8" and result.mode_requested is None, result.notes
    assert result.recipe.keep_float and any("one int8 scale has steps of" in n for n in result.notes)
    images, _ = held_out
    want, got = run_both(source, out, images)
    recall, precision = agreement(detections(detect.YOLOV8, got), detections(detect.YOLOV8, want))
    assert recall >= 0.95 and precision >= 0.95, (recall, precision)
    d = result.agreement.detections
    assert d is not None and d.layout == detect.YOLOV8 and d.recall >= 0.95 and not result.warnings

    tensors = {t["name"]: t for t in Interpreter(model_path=str(out)).get_tensor_details()}
    assert all(tensors[name]["dtype"] == np.float32 for name in result.recipe.keep_float)
    errors = result.layer_errors
    assert errors and errors[0].error >= errors[-1].error and all(e.name in tensors for e in errors[:10])


@pytest.mark.slow
@pytest.mark.detectors  # the counterfactual of the test above (make detectors-test)
def test_without_the_float_tail_int8_loses_every_score(calibration, held_out, tmp_path):
    """The remedy is what keeps the detections: the same float model quantized by the same quantizer with nothing
    kept in float detects nothing, and the agreement check says so, naming a score channel."""
    needs.module("onnx2tf")
    from edgert.converters import agreement as agreement_module
    from edgert.converters import convert
    from edgert.converters.foreign import ForeignOptions
    from edgert.converters.foreign.litert_route import quantize
    from edgert.converters.recipe import Quantization

    source = export("yolov8", tmp_path / "yolov8.onnx", dynamic=False)
    convert(source, tmp_path / "float.tflite", foreign=ForeignOptions())
    images = np.load(calibration)
    plain = quantize((tmp_path / "float.tflite").read_bytes(), Quantization.INT8, [images.transpose(0, 2, 3, 1)],
                     1, [], input_names=["images"])
    (tmp_path / "plain.tflite").write_bytes(plain)
    test_images, _ = held_out
    want, got = run_both(source, tmp_path / "plain.tflite", test_images)
    assert agreement(detections(detect.YOLOV8, got), detections(detect.YOLOV8, want))[0] < 0.1
    checked = agreement_module.compare("int8", "onnxruntime", "pictures", {"output0": want}, {"output0": got},
                                       (SIZE, SIZE))
    assert "detections differ" in checked.warning and "score" in checked.warning


@pytest.mark.slow
@pytest.mark.detectors
def test_a_trained_yolox_from_a_package_keeps_its_detections_on_photographs(photographs, tmp_path):
    """ddddocr's YOLOX-style detector (416 px, raw boxes): float32 within 1e-4 of onnxruntime; int8 either keeps
    95% of onnxruntime's detections on photographs or is replaced by what does, and says so; with --no-fallback
    the full int8 model is kept and the warning names what was lost, which the photographs confirm."""
    needs.module("onnx2tf")
    import onnxruntime

    import edgert
    from edgert.converters import convert

    source = ddddocr_detector()
    images = np.load(photographs)
    session = onnxruntime.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    want = [session.run(None, {"images": x[None]})[0][0] for x in images]
    layout = detect.recognise([(1, *want[0].shape)], (416, 416), [want[0][None]])
    assert layout == detect.YOLOX_RAW
    reference = [detect.decode(layout, [w[None]], (416, 416)) for w in want]

    def measured(path):
        model = edgert.load(path)
        got = [model.run(x[None].transpose(0, 2, 3, 1))[0][0] for x in images]
        return got, agreement([detect.decode(layout, [g[None]], (416, 416)) for g in got], reference)

    floating = convert(source, tmp_path / "det.tflite")
    got, _ = measured(tmp_path / "det.tflite")
    assert max(np.abs(w - g).max() for w, g in zip(want, got)) / max(np.abs(w).max() for w in want) <= 1e-4
    assert not floating.warnings

    chosen = convert(source, tmp_path / "det_int8.tflite", int8=True, calibration_data=photographs)
    _, (recall, precision) = measured(tmp_path / "det_int8.tflite")
    assert recall >= 0.95 and precision >= 0.95, (recall, precision, chosen.notes)
    if chosen.mode_requested is not None:
        assert chosen.mode.value == "dynamic" and any("full int8 kept" in n for n in chosen.notes)

    kept = convert(source, tmp_path / "det_full.tflite", int8=True, calibration_data=photographs, fallback=False)
    _, (recall, precision) = measured(tmp_path / "det_full.tflite")
    if min(recall, precision) < 0.95:
        assert kept.warnings and "detections differ" in kept.warnings[0] and "output output" in kept.warnings[0]
    else:
        assert not kept.warnings


@pytest.mark.slow
@pytest.mark.detectors
def test_a_pytorch_detector_through_litert_torch_keeps_its_detections(calibration, held_out, tmp_path):
    """The same head as a PyTorch module (litert-torch, ai-edge-quantizer): --int16 puts the named operator's
    activations in int16 there; the detections survive int8, checked against torch."""
    needs.module("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    import edgert
    from edgert.converters import convert
    from edgert.converters.recipe import ConvertRecipe, Quantization

    factory = tmp_path / "yolo.py"
    factory.write_text(f"""
import sys, torch
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from tests.test_detectors import trained
input_names = ["images"]
output_names = ["output0"]
example_inputs = (torch.rand(1, 3, {SIZE}, {SIZE}),)
def make():
    return trained("yolov8")
""")
    out = tmp_path / "yolo_int8.tflite"
    first = convert(f"{factory}:make", out, int8=True, calibration_data=calibration, explain=True)
    assert first.route == "litert-torch" and first.mode.value == "int8"
    images, _ = held_out
    with torch.no_grad():
        want = trained("yolov8")(torch.from_numpy(images)).numpy()
    model = edgert.load(out)
    got = np.concatenate([model.run(x[None].transpose(0, 2, 3, 1))[0] for x in images])
    recall, precision = agreement(detections(detect.YOLOV8, got), detections(detect.YOLOV8, want))
    assert recall >= 0.95 and precision >= 0.95
    wider = first.layer_errors[0].name
    recipe = ConvertRecipe(Quantization.INT8, int16=(wider,), keep_float=first.recipe.keep_float)
    convert(f"{factory}:make", out, recipe=recipe, calibration_data=calibration, force=True)
    tensors = {t["name"]: t for t in Interpreter(model_path=str(out)).get_tensor_details()}
    assert tensors[wider]["dtype"] == np.int16


def test_int16_on_tensorflows_converter_is_one_line(h5_path, calibration_npy, tmp_path):
    from edgert.converters import convert
    from edgert.converters.recipe import ConvertRecipe, Quantization
    from edgert.errors import InputDataError

    with pytest.raises(InputDataError, match="--int16 takes effect through ai-edge-quantizer"):
        convert(h5_path, tmp_path / "x.tflite", recipe=ConvertRecipe(Quantization.INT8, int16=("dense",)),
                calibration_data=calibration_npy)
    assert not (tmp_path / "x.tflite").exists()


def test_an_onnx2tf_failure_names_the_users_file(tmp_path, monkeypatch):
    """Where edgert hands onnx2tf a prepared copy (here: node names TensorFlow refuses), its failure still names
    the file the user gave."""
    onnx = needs.module("onnx")
    needs.module("onnx2tf")
    import subprocess

    from onnx import helper

    from edgert.converters.foreign import onnx_route
    from edgert.errors import ConversionError

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="Relu@0")], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    given = tmp_path / "my detector.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(given))
    failed = subprocess.CompletedProcess([], 1, "", "onnx_op_name: Relu_0\nValueError: it broke")
    monkeypatch.setattr(onnx_route.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(ConversionError) as caught:
        onnx_route.run_onnx2tf(given, tmp_path / "work", {"x": (1, 4)}, [])
    message = str(caught.value)
    assert str(given) in message and "prepared.onnx" not in message and "at node 'Relu_0'" in message
    assert (tmp_path / "work" / "prepared.onnx").exists()  # the copy was what onnx2tf got
