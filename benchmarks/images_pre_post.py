"""Pre- plus post-processing of a picture task against OpenCV's, the pipeline people write by hand.

Workload: a YOLOv8n-size detector (640x640 RGB input, output (1, 84, 8400): 80 classes) on a 640x480 photograph
(scikit-image's astronaut and coffee, resized). The model itself is not run: both sides get the same outputs, made
so that about 200 candidates pass the 0.25 threshold (many overlapping, as a real head's are), since the model's
time is the same whoever prepares its input.

Anchor: OpenCV as trained-model packages and Ultralytics-style scripts do it: `cv2.resize` + `cv2.copyMakeBorder`
(letterbox, grey 114) and `cv2.dnn.blobFromImage` (scale 1/255, float), then the scores' max, the threshold, the
argmax of the kept ones and `cv2.dnn.NMSBoxesBatched` (class-wise NMS in C++, the work edgert's decoder does),
boxes mapped back by hand.
Contender: `edgert.tasks.Pipeline.prepare` (Pillow resize, letterbox, normalise) and `Pipeline.decode` (edgert.
tasks.boxes, class-wise NMS, boxes mapped back), on the model's own NHWC layout.
Target: contender / anchor <= 1.2 (p50 of pre + post). Rounds alternate so that load and frequency hit both alike.
Run with `python benchmarks/images_pre_post.py` (`make bench`).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def photographs():
    from PIL import Image
    from skimage import data

    return [np.asarray(Image.fromarray(p).resize((640, 480), Image.BILINEAR)) for p in (data.astronaut(), data.coffee())]


def head_outputs(seed: int = 0) -> np.ndarray:
    """(1, 84, 8400): boxes in pixels, sigmoid scores; ~200 candidates above 0.25 around 12 objects."""
    rng = np.random.default_rng(seed)
    out = np.zeros((1, 84, 8400), np.float32)
    out[0, 0:2] = rng.uniform(0, 640, (2, 8400))
    out[0, 2:4] = rng.uniform(10, 200, (2, 8400))
    out[0, 4:] = rng.uniform(0, 0.05, (80, 8400))
    for obj in range(12):
        cells = rng.choice(8400, 16, replace=False)
        centre, size = rng.uniform(100, 540, 2), rng.uniform(40, 200, 2)
        out[0, 0:2, cells] = centre + rng.normal(0, 3, (16, 2))
        out[0, 2:4, cells] = size + rng.normal(0, 3, (16, 2))
        out[0, 4 + obj * 6, cells] = rng.uniform(0.3, 0.95, 16)
    return out


class FakeModel:
    """What the pipeline needs of a model, without running one: its input and output specs."""

    def __init__(self, output):
        from edgert.tflite.info import TensorSpec

        self.inputs = (TensorSpec("images", (1, 640, 640, 3), "float32", 0),)
        self.outputs = (TensorSpec("output0", tuple(output.shape), "float32", 1),)
        self.path = "yolov8n-size"


def anchor(photo, output, conf=0.25, iou=0.45):
    import cv2

    h, w = photo.shape[:2]
    scale = min(640 / w, 640 / h)
    nw, nh = round(w * scale), round(h * scale)
    top, left = (640 - nh) // 2, (640 - nw) // 2
    resized = cv2.resize(photo, (nw, nh), interpolation=cv2.INTER_LINEAR)
    boxed = cv2.copyMakeBorder(resized, top, 640 - nh - top, left, 640 - nw - left, cv2.BORDER_CONSTANT,
                               value=(114, 114, 114))
    blob = cv2.dnn.blobFromImage(boxed, 1 / 255.0)
    t_pre = time.perf_counter_ns()
    table = output[0]
    scores = table[4:].max(axis=0)
    keep = np.flatnonzero(scores >= conf)
    scores, ids = scores[keep], table[4:, keep].argmax(axis=0)
    xywh = table[:4, keep].T
    rects = np.column_stack((xywh[:, 0] - xywh[:, 2] / 2, xywh[:, 1] - xywh[:, 3] / 2, xywh[:, 2], xywh[:, 3]))
    chosen = np.asarray(cv2.dnn.NMSBoxesBatched(rects.tolist(), scores.tolist(), ids.tolist(), conf, iou)).reshape(-1)
    found = rects[chosen].copy()
    found[:, 0] = (found[:, 0] - left) / scale
    found[:, 1] = (found[:, 1] - top) / scale
    found[:, 2:] /= scale
    return blob, found, t_pre


def contender(pipe, photo, output):
    batch, geometry = pipe.prepare(photo)
    t_pre = time.perf_counter_ns()
    return batch, pipe.decode([output], geometry), t_pre


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--runs", type=int, default=10, help="pictures per side per round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import cv2

    from edgert.tasks.pipeline import Pipeline

    cv2.setNumThreads(1)  # the board's view: one core each (Pillow and numpy run on one here too)
    output = head_outputs()
    pipe = Pipeline(FakeModel(output), "detect")
    pictures = photographs()
    # the same detections: a check, not a timing
    for photo in pictures:
        _, found, _ = anchor(photo, output)
        ours = contender(pipe, photo, output)[1]
        assert len(ours.detections) == len(found), (len(ours.detections), len(found))
    times = {"anchor": {"pre": [], "post": []}, "edgert": {"pre": [], "post": []}}
    for r in range(args.rounds):
        order = (("anchor", anchor), ("edgert", lambda p, o: contender(pipe, p, o)))
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            for i in range(args.runs):
                photo = pictures[i % len(pictures)]
                t0 = time.perf_counter_ns()
                _, _, t_mid = fn(photo, output)
                t1 = time.perf_counter_ns()
                times[name]["pre"].append((t_mid - t0) / 1e6)
                times[name]["post"].append((t1 - t_mid) / 1e6)
    report = {}
    for name, stages in times.items():
        pre, post = np.array(stages["pre"]), np.array(stages["post"])
        report[name] = {"pre_p50_ms": float(np.median(pre)), "post_p50_ms": float(np.median(post)),
                        "total_p50_ms": float(np.median(pre + post))}
    report["ratio"] = report["edgert"]["total_p50_ms"] / report["anchor"]["total_p50_ms"]
    report["target"] = 1.2
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for name in ("anchor", "edgert"):
        r = report[name]
        print(f"{name:<7} pre {r['pre_p50_ms']:.3f} ms  post {r['post_p50_ms']:.3f} ms  total {r['total_p50_ms']:.3f} ms")
    print(f"edgert / OpenCV (p50, pre + post): {report['ratio']:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
