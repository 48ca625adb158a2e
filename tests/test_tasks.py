"""Pictures in, labels, boxes and masks out (edgert.tasks, `edgert run --image`, `edgert bench --image`): each part
against independent truth — the boxes drawn into the photograph, OpenCV's letterbox and NMS run on the same model,
the digits data set's own labels, a mask drawn by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import needs
from tests.detectors import shapes

PIL = needs.module("PIL")
from PIL import Image  # noqa: E402

from edgert.errors import InputDataError  # noqa: E402
from edgert.tasks import boxes, classes, masks  # noqa: E402
from edgert.tasks.image import Geometry, ImageInput, image_input, list_images, prepare, read_image  # noqa: E402
from edgert.tasks.labels import read_label_file  # noqa: E402

EDGERT = [sys.executable, "-m", "edgert"]


def edgert_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGERT, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


# -- the plain functions ---------------------------------------------------------------------------------------


def test_top_k_is_best_first_with_ties_by_index():
    assert classes.top_k(np.array([[0.1, 0.5, 0.2, 0.5]]), k=3) == [(1, 0.5), (3, 0.5), (2, 0.2)]
    assert classes.top_k(np.array([0.1, 0.9]), k=5, threshold=0.5) == [(1, 0.9)]
    assert classes.classes_of((1, 1000)) == 1000 and classes.classes_of((1, 84, 8400)) is None


def test_a_letterboxed_box_maps_back_to_the_photograph():
    """A 300x200 photograph letterboxed into 160x160: scale 160/300, 26.67 px of padding above and below."""
    how = ImageInput("x", 160, 160, 3, False, (0.0,) * 3, (255.0,) * 3, "test", letterbox=True)
    photo = np.zeros((200, 300, 3), np.uint8)
    photo[50:150, 30:90] = 255  # a white box: x 30..90, y 50..150
    batch, geometry = prepare(photo, how)
    assert batch.shape == (1, 160, 160, 3)
    assert abs(batch[0, 0, 0, 0] - 114 / 255) < 1e-6  # the padding is Ultralytics' grey
    ys, xs = np.nonzero(batch[0, :, :, 0] > 0.5)
    found = geometry.to_photo(np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float64))[0]
    assert np.allclose(found, [30, 50, 90, 150], atol=2.0), found


def test_normalisation_comes_from_the_flags_then_the_metadata_then_the_quantization(int8_tflite, float_tflite):
    import edgert
    from edgert.metadata import TensorMetadata

    int8, flt = edgert.load(int8_tflite), edgert.load(float_tflite)
    assert image_input(flt).source.startswith("default")  # nothing says: 0..1, and the plan says so
    quantized = image_input(int8)
    if int8.inputs[0].quantized:
        assert quantized.source == "input's quantization"
    meta = type("M", (), {"inputs": (TensorMetadata("image", mean=(127.5,), std=(127.5,)),)})()
    assert image_input(flt, metadata=meta).mean == (127.5,)
    assert image_input(flt, [10.0], [2.0], metadata=meta).mean == (10.0,)  # the flags win
    with pytest.raises(InputDataError, match="together"):
        image_input(flt, [10.0], None)
    with pytest.raises(InputDataError, match="has 3 values but the input has 1"):
        image_input(flt, [1.0, 2.0, 3.0], [1.0, 1.0, 1.0])


def test_label_files_plain_and_numbered_and_what_does_not_fit(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("cat\ndog\n\n")
    assert [read_label_file(plain)(i) for i in range(3)] == ["cat", "dog", "2"]
    coco = tmp_path / "coco_labels.txt"
    coco.write_text("0  person\n1  bicycle\n3  motorcycle\n")  # Coral's label maps skip ids
    labels = read_label_file(coco)
    assert labels(3) == "motorcycle" and labels(2) == "2"
    labels.check(90)
    with pytest.raises(InputDataError, match="has 2 labels but the model's output has 10 classes"):
        read_label_file(plain).check(10)
    with pytest.raises(InputDataError, match="class 3 but"):
        labels.check(3)
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(InputDataError, match="has no labels"):
        read_label_file(tmp_path / "empty.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(InputDataError, match="not UTF-8"):
        read_label_file(tmp_path / "binary.txt")


def test_pictures_are_listed_from_files_folders_and_globs_and_bad_ones_are_one_line(tmp_path):
    for name in ("b.png", "a.jpg"):
        Image.new("RGB", (4, 3)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_images([tmp_path])] == ["a.jpg", "b.png"]
    assert [p.name for p in list_images([str(tmp_path / "*.png"), tmp_path / "b.png"])] == ["b.png"]
    with pytest.raises(InputDataError, match="no such file"):
        list_images([tmp_path / "missing.jpg"])
    with pytest.raises(InputDataError, match="is not a picture Pillow can read"):
        read_image(tmp_path / "notes.txt")
    assert read_image(tmp_path / "b.png").shape == (3, 4, 3)
    assert read_image(tmp_path / "b.png", "L").shape == (3, 4)


def test_a_mask_over_a_letterboxed_input_comes_back_over_the_photograph():
    geometry = Geometry(300, 200, 160 / 300, 160 / 300, 0, 26.5)
    mask = np.zeros((160, 160), np.int32)
    mask[27:133, 80:] = 1  # the right half of the picture's area
    photo = masks.to_photo(mask, geometry, (160, 160))
    assert photo.shape == (200, 300)
    assert abs(photo[:, 150:].mean() - 1.0) < 0.02 and photo[:, :148].max() == 0


# -- a trained detector, end to end ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yolo(tmp_path_factory):
    """The trained YOLOv8 test detector (tests/detectors), exported to ONNX and converted by edgert (float32)."""
    needs.module("torch")
    needs.module("onnx2tf")
    from edgert.converters import convert
    from tests.test_detectors import export

    folder = tmp_path_factory.mktemp("yolo")
    source = export("yolov8", folder / "shapes.onnx", dynamic=False)
    result = convert(source, folder / "shapes.tflite")
    assert not result.warnings, result.warnings
    (folder / "labels.txt").write_text("\n".join(shapes.CLASSES) + "\n")
    return folder / "shapes.tflite"


def photograph(seed: int, folder: Path) -> tuple[Path, np.ndarray]:
    """A 240x180 photograph (wider than tall, so the letterbox pads it, and larger than the input, so it scales it)
    with shapes drawn on it, and their boxes: a 160x160 picture of the training kind whose shapes all lie in its
    middle 120 rows, those rows enlarged 1.5 times."""
    rng = np.random.default_rng(seed)
    while True:
        square, truth = shapes.picture(rng, 160)
        if truth[:, 1].min() >= 20 and truth[:, 3].max() <= 140:
            break
    truth = truth.copy()
    truth[:, [1, 3]] -= 20
    truth[:, :4] *= 1.5
    path = folder / f"photo{seed}.png"
    Image.fromarray(square[20:140]).resize((240, 180), Image.NEAREST).save(path)
    return path, truth


def opencv_reference(model_path: Path, photo: Path, conf=0.25, iou=0.45):
    """The same model with the field's own letterbox and NMS (OpenCV), boxes mapped back by hand."""
    cv2 = needs.module("cv2")
    import edgert

    model = edgert.load(model_path)
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    scale = min(160 / w, 160 / h)
    nw, nh = round(w * scale), round(h * scale)
    top, left = (160 - nh) // 2, (160 - nw) // 2
    boxed = cv2.copyMakeBorder(cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR), top, 160 - nh - top,
                               left, 160 - nw - left, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    out = model.run([boxed[None].astype(np.float32) / 255.0])[0][0].T  # (N, 4 + C)
    scores = out[:, 4:].max(axis=1)
    ids = out[:, 4:].argmax(axis=1)
    keep = scores >= conf
    xywh, scores, ids = out[keep, :4], scores[keep], ids[keep]
    rects = [[float(x - bw / 2), float(y - bh / 2), float(bw), float(bh)] for x, y, bw, bh in xywh]
    chosen = cv2.dnn.NMSBoxesBatched(rects, scores.tolist(), ids.tolist(), conf, iou) if rects else []
    found = []
    for i in np.asarray(chosen).reshape(-1):
        x, y, bw, bh = rects[i]
        found.append(((x - left) / scale, (y - top) / scale, (x + bw - left) / scale, (y + bh - top) / scale,
                      float(scores[i]), int(ids[i])))
    return found


def test_detect_on_photographs_finds_the_drawn_shapes_as_opencv_does(yolo, tmp_path):
    from edgert import tasks

    pipe = tasks.Pipeline(yolo, labels=yolo.parent / "labels.txt")
    assert pipe.task == "detect" and pipe.plan.layout == "yolov8" and pipe.plan.image.letterbox
    matched = total = confident = confident_total = 0
    for seed in range(12):
        path, truth = photograph(seed, tmp_path)
        result = pipe(path)
        assert (result.width, result.height) == (240, 180)
        # against OpenCV's letterbox and NMS on the same model: the same confident objects, the same boxes (the
        # two resizes differ a little, Pillow's bilinear filter being wider, which moves scores near the threshold)
        reference = opencv_reference(yolo, path)
        ours = [boxes.Detection(d.box, d.score, d.class_id) for d in result.detections]
        theirs = [boxes.Detection(r[:4], r[4], r[5]) for r in reference]
        agreed, n_ours, n_theirs = boxes.match([d for d in ours if d.score >= 0.5],
                                               [d for d in theirs if d.score >= 0.5], iou=0.7)
        assert agreed >= max(n_ours, n_theirs) - 1 and agreed >= 1, (seed, ours, theirs)
        # against the shapes drawn into the photograph: boxes in its pixels, labels from the file
        drawn = [boxes.Detection(tuple(t[:4]), 1.0, int(t[4])) for t in truth]
        hit, _, n_truth = boxes.match(ours, drawn)
        sure = [d for d in ours if d.score >= 0.5]
        sure_hit, n_sure, _ = boxes.match(sure, drawn)
        matched, total, confident, confident_total = matched + hit, total + n_truth, confident + sure_hit, \
            confident_total + n_sure
        assert all(d.label == shapes.CLASSES[d.class_id] for d in result.detections)
    # Recall at the default threshold; precision of the confident ones (the test detector was trained on pictures
    # without a letterbox, and the grey band's edge reads to it as a square's, at low scores).
    assert matched / total >= 0.85 and confident / max(confident_total, 1) >= 0.6, \
        (matched, total, confident, confident_total)


def test_run_image_prints_json_draws_and_refuses_to_overwrite(yolo, tmp_path):
    path, truth = photograph(3, tmp_path)
    labels = yolo.parent / "labels.txt"
    done = edgert_cli("run", yolo, "--image", path, "--labels", labels, "--json", "-o", tmp_path / "drawn.png")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.splitlines()[0])
    assert record["task"] == "detect" and record["image"] == str(path) and record["detections"]
    first = record["detections"][0]
    assert set(first) >= {"label", "score", "box"} and first["label"] in shapes.CLASSES
    x1, y1, x2, y2 = first["box"]
    assert 0 <= x1 < x2 <= 240 and 0 <= y1 < y2 <= 180  # the photograph's pixels
    drawn = np.asarray(Image.open(tmp_path / "drawn.png").convert("RGB"))
    assert drawn.shape == (180, 240, 3) and (drawn != np.asarray(Image.open(path).convert("RGB"))).any()
    again = edgert_cli("run", yolo, "--image", path, "-o", tmp_path / "drawn.png")
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "--force" in again.stderr, again.stderr
    # a folder of pictures, as a shell's glob gives them, into a folder
    (tmp_path / "in").mkdir()
    more = [photograph(s, tmp_path / "in")[0] for s in (4, 5)]
    done = edgert_cli("run", yolo, "--image", *more, "--labels", labels, "-o", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo4.png", "photo5.png"]
    assert "task detect (its output (1, 7, 525)), layout yolov8; letterboxed to 160x160x3 RGB" in done.stdout


def test_metadata_carries_the_layout_labels_and_normalisation_so_run_needs_no_flags(yolo, tmp_path):
    path, _ = photograph(6, tmp_path)
    labelled = tmp_path / "shapes_md.tflite"
    done = edgert_cli("metadata", "write", yolo, "--task", "detection", "--labels", yolo.parent / "labels.txt",
                      "--input-mean", "0", "--input-std", "255", "-o", labelled)
    assert done.returncode == 0, done.stderr
    from edgert.metadata import CUSTOM_METADATA_PARSER_VERSION, read_metadata

    recorded = read_metadata(labelled)
    assert recorded.image_task == {"task": "detect", "layout": "yolov8", "letterbox": True}
    assert recorded.min_parser_version == CUSTOM_METADATA_PARSER_VERSION  # only where a custom field is written
    with_flags = edgert_cli("run", yolo, "--image", path, "--labels", yolo.parent / "labels.txt", "--json")
    without = edgert_cli("run", labelled, "--image", path)
    assert without.returncode == 0, without.stderr
    assert "detect (the model's metadata), layout yolov8" in without.stdout
    assert "from the metadata" in without.stdout and "labels from metadata" in without.stdout
    shown = {d["label"] for d in json.loads(with_flags.stdout)["detections"]}
    assert shown and all(label in without.stdout for label in shown)
    wrong = tmp_path / "two.txt"
    wrong.write_text("a\nb\n")
    refused = edgert_cli("metadata", "write", yolo, "--task", "detection", "--labels", wrong, "--input-mean", "0",
                         "--input-std", "255", "-o", tmp_path / "x.tflite")
    assert refused.returncode == 1 and "2 labels" in refused.stderr and "3 classes" in refused.stderr


def test_bench_image_times_each_stage(yolo, tmp_path):
    path, _ = photograph(7, tmp_path)
    done = edgert_cli("bench", yolo, "--image", path, "--runs", "20", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    stages = report["stages"]
    assert set(stages) == {"pre", "infer", "post", "total"} and stages["infer"]["count"] == 20
    assert stages["total"]["p50_ms"] >= stages["infer"]["p50_ms"] > 0
    assert report["energy_per_picture_mj"] is None and report["power_note"]  # no sensor here, and it says why
    table = edgert_cli("bench", yolo, "--image", path, "--runs", "5")
    assert table.returncode == 0 and all(s in table.stdout for s in ("pre ", "infer", "post", "total"))


def test_video_frames_run_through_the_same_path_and_a_camera_stops_at_the_capture(yolo, tmp_path):
    cv2 = needs.module("cv2")
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (240, 180))
    for seed in range(8):
        path, _ = photograph(seed, tmp_path)
        writer.write(cv2.imread(str(path)))
    writer.release()
    done = edgert_cli("run", yolo, "--video", clip, "--max-frames", "6", "-o", tmp_path / "boxes.avi", "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["frame"] for r in lines[:-1]] == list(range(6)) and lines[-1]["stats"]["frames"] == 6
    assert lines[-1]["stats"]["fps"] > 0 and lines[-1]["stats"]["infer_ms"] > 0
    drawn = cv2.VideoCapture(str(tmp_path / "boxes.avi"))
    assert int(drawn.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    camera = edgert_cli("run", yolo, "--camera", "7")
    assert camera.returncode == 1 and camera.stderr.startswith("Error: camera 7: no camera 7 here")
    assert camera.stderr.count("\n") == 1, camera.stderr


# -- a classifier and a segmenter ------------------------------------------------------------------------------


def test_classify_pictures_gives_the_data_sets_labels(digits, float_tflite, tmp_path):
    """The digits model on its pictures as PNG files: the labels the data set gives, as the arrays give them."""
    from edgert import tasks

    import edgert

    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"digit {d}\n" for d in range(10)))
    pipe = tasks.Pipeline(float_tflite, labels=labels, top_k=3)
    model = edgert.load(float_tflite)
    agree = right = 0
    for i, (x, y) in enumerate(zip(digits.x_test[:40], digits.y_test[:40])):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.rint(x[..., 0] * 255).astype(np.uint8)).save(path)
        result = pipe(path)
        assert len(result.classes) == 3 and result.classes[0].score >= result.classes[1].score
        agree += result.classes[0].index == int(np.argmax(model.run([x[None]])[0]))
        right += result.classes[0].label == f"digit {int(y)}"
    assert agree == 40 and right >= 36, (agree, right)


def test_segment_gives_each_pixel_its_drawn_class(tmp_path):
    """A per-pixel classifier whose classes are the picture's colours (a 1x1 convolution, built here): the mask
    of a photograph with coloured regions is those regions, in the photograph's size."""
    needs.module("tensorflow")
    import tensorflow as tf

    from edgert import tasks
    from edgert.converters import convert

    inputs = tf.keras.Input((64, 64, 3))
    conv = tf.keras.layers.Conv2D(3, 1, use_bias=False)
    model = tf.keras.Model(inputs, tf.keras.layers.Softmax()(conv(inputs)))
    conv.set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3) * 20.0])
    model.save(tmp_path / "colours.keras")
    converted = convert(tmp_path / "colours.keras", tmp_path / "colours.tflite")
    photo = np.zeros((90, 120, 3), np.uint8)
    photo[:, :40, 0] = 220  # red: class 0
    photo[:, 40:80, 1] = 220  # green: class 1
    photo[:, 80:, 2] = 220  # blue: class 2
    Image.fromarray(photo).save(tmp_path / "flags.png")
    result = tasks.segment(converted.output_path, tmp_path / "flags.png", labels=["red", "green", "blue"])
    assert result.mask.shape == (90, 120)
    want = np.repeat(np.repeat(np.arange(3), 40)[None], 90, axis=0)
    assert (result.mask == want).mean() > 0.97
    assert [label for label, _, _ in result.areas()] == ["red", "green", "blue"] or \
        sorted(share for _, _, share in result.areas()) == pytest.approx([1 / 3] * 3, abs=0.03)
    drawn = tasks.annotate(result, tmp_path / "flags.png")
    assert drawn.size == (120, 90)


def test_a_model_whose_task_cannot_be_told_asks_for_task(two_input_tflite, float_tflite, tmp_path):
    Image.new("L", (8, 8)).save(tmp_path / "p.png")
    two = edgert_cli("run", two_input_tflite, "--image", tmp_path / "p.png")
    assert two.returncode == 1 and "one image input" in two.stderr and two.stderr.count("\n") == 1
    wrong = edgert_cli("run", float_tflite, "--image", tmp_path / "p.png", "--task", "detect")
    assert wrong.returncode == 1 and "--layout" in wrong.stderr and wrong.stderr.count("\n") == 1


# -- a trained detector from a package, as a user runs it ------------------------------------------------------


def test_ddddocrs_trained_detector_converted_and_run_on_photographs_finds_what_ddddocr_finds(tmp_path):
    """ddddocr's text detector (a trained YOLOX: raw offsets, BGR pixels 0..255, padded below and right) converted
    by `edgert convert`, then `edgert run --image` with the flags its preprocessing needs, on skimage's
    photographs: the boxes ddddocr's own pipeline (onnxruntime, OpenCV, its NMS) gives, in the photograph's
    pixels, and a drawing the photograph's size."""
    needs.module("onnx2tf")
    needs.module("onnxruntime")
    needs.module("skimage")
    from skimage import data

    from tests.test_detectors import ddddocr_detector

    source = ddddocr_detector()
    from ddddocr.core.detection_engine import DetectionEngine

    engine = DetectionEngine()
    engine.initialize()
    converted = edgert_cli("convert", source, "-o", tmp_path / "common_det.tflite", cwd=tmp_path)
    assert converted.returncode == 0 and "warning" not in converted.stdout.lower(), converted.stdout + converted.stderr
    matched = found = want = 0
    for name in ("text", "page", "rocket", "astronaut", "coffee"):
        pixels = getattr(data, name)()
        pixels = np.stack([pixels] * 3, -1) if pixels.ndim == 2 else pixels[..., :3]
        path = tmp_path / f"{name}.png"
        Image.fromarray(pixels).save(path)
        reference = engine.get_bbox(path.read_bytes())
        done = edgert_cli("run", tmp_path / "common_det.tflite", "--image", path, "--bgr", "--mean", "0", "--std",
                          "1", "--conf", "0.1", "--json", "-o", tmp_path / f"{name}_boxes.jpg")
        assert done.returncode == 0, done.stderr
        record = json.loads(done.stdout)
        ours = [boxes.Detection(tuple(d["box"]), d["score"], 0) for d in record["detections"]]
        theirs = [boxes.Detection(tuple(float(v) for v in b), 1.0, 0) for b in reference]
        hit, n_ours, n_theirs = boxes.match(ours, theirs, iou=0.5)
        matched, found, want = matched + hit, found + n_ours, want + n_theirs
        assert Image.open(tmp_path / f"{name}_boxes.jpg").size == (pixels.shape[1], pixels.shape[0])
    assert want >= 50 and matched / want >= 0.95 and matched / found >= 0.95, (matched, found, want)


def test_bad_input_is_one_line_that_says_what_to_do(float_tflite, tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 4096)
    Image.new("L", (8, 8)).save(tmp_path / "p.png")
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    cases = [
        (["--image", tmp_path / "notes.jpg"], "is not a picture Pillow can read"),
        (["--image", tmp_path / "p.png", "--mean", "1,2,3", "--std", "1,1,1"], "has 3 values but the input has 1"),
        (["--image", tmp_path / "p.png", "--labels", tmp_path / "labels.txt"], "3 labels but"),
        (["--image", tmp_path / "p.png", "--task", "segment"], "per-pixel output"),
        (["--video", tmp_path / "clip.mp4"], "not a video this OpenCV can decode"),
        (["--image", tmp_path / "p.png", "--conf", "2"], "--conf 2 is not a score"),
    ]
    for args, says in cases:
        done = edgert_cli("run", float_tflite, *args)
        assert done.returncode == 1 and done.stderr.startswith("Error: ") and says in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr


def test_a_read_only_output_folder_is_one_line_and_nothing_is_written(float_tflite, tmp_path):
    import subprocess as sp

    needs.root("a read-only mount")
    Image.new("L", (8, 8)).save(tmp_path / "p.png")
    (tmp_path / "ro").mkdir()
    sp.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(tmp_path / "ro")], check=True)
    try:
        for target in (tmp_path / "ro" / "drawn.png", tmp_path / "ro" / "folder"):
            done = edgert_cli("run", float_tflite, "--image", tmp_path / "p.png", tmp_path / "p.png", "-o", target) \
                if target.suffix == "" else edgert_cli("run", float_tflite, "--image", tmp_path / "p.png", "-o", target)
            assert done.returncode == 1 and "read-only" in done.stderr and done.stderr.count("\n") == 1, done.stderr
        assert list((tmp_path / "ro").iterdir()) == []
    finally:
        sp.run(["umount", str(tmp_path / "ro")], check=True)
