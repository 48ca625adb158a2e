"""Detector outputs as boxes: recognising the YOLO family's and SSD's output layouts from their shapes, decoding
each with its family's own rules, class-wise non-maximum suppression, and matching two sets of detections.

Plain functions over numpy arrays, as PyCoral's adapters are; the conversion's agreement check and `edgert run
--image` use the same ones. Boxes are (x1, y1, x2, y2) in the model's input pixels.

Layouts (`Layout`):
- `yolov8`: one output (1, 4 + C, N), xywh in pixels then C class scores after a sigmoid (Ultralytics v8, 11 and
  their relatives: anchor-free, DFL already applied in the graph).
- `yolov5`: one output (1, N, 5 + C): xywh in pixels, objectness, C class scores (anchor-based, decoded in the graph,
  three anchors per cell, so N is three times the cells).
- `yolox`: one output (1, N, 5 + C) like v5's but one row per cell; `yolox-raw` when the boxes are still offsets from
  the cell and log sizes (an export with decoding left to the application).
- `ssd`: TFLite_Detection_PostProcess's four outputs: boxes (1, K, 4) as normalised ymin, xmin, ymax, xmax,
  classes (1, K), scores (1, K) and the count (1,), as PyCoral's detect.get_objects reads them.
- `nms`: a model that ends in NMS itself: one output (1, K, 6) of x1, y1, x2, y2, score, class.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

YOLOV8, YOLOV5, YOLOX, YOLOX_RAW, SSD, NMS = "yolov8", "yolov5", "yolox", "yolox-raw", "ssd", "nms"
LAYOUTS = (YOLOV8, YOLOV5, YOLOX, YOLOX_RAW, SSD, NMS)
# The output strides of the YOLO families: P3-P5, and the P2 and P6 variants.
STRIDE_SETS = ((8, 16, 32), (8, 16, 32, 64), (4, 8, 16, 32))


class Detection(NamedTuple):
    """One detected object: its box (x1, y1, x2, y2) in pixels, its score and its class index."""

    box: tuple[float, float, float, float]
    score: float
    class_id: int


def cells(input_hw: tuple[int, int], strides: Sequence[int]) -> int:
    """Grid cells over all levels for an input of this size (each level rounds up, as a padded conv does)."""
    h, w = input_hw
    return sum(math.ceil(h / s) * math.ceil(w / s) for s in strides)


def _strides_for(rows: int, input_hw: tuple[int, int], per_cell: int = 1) -> tuple[int, ...] | None:
    return next((s for s in STRIDE_SETS if cells(input_hw, s) * per_cell == rows), None)


def recognise(shapes: Sequence[tuple[int, ...]], input_hw: tuple[int, int],
              outputs: Sequence[np.ndarray] | None = None) -> str | None:
    """The layout of a detector's outputs, from their shapes and the input size (and, to tell YOLOX's decoded
    boxes from raw ones, one sample of the outputs); None when they are not one the decoders know."""
    shapes = [tuple(int(d) for d in s) for s in shapes]
    if len(shapes) == 4 and sorted(len(s) for s in shapes) == [1, 2, 2, 3] and any(s[-1:] == (4,) for s in shapes):
        return SSD
    if len(shapes) != 1:
        return None
    shape = shapes[0]
    if len(shape) != 3 or shape[0] != 1:
        return None
    _, a, b = shape
    if 5 <= a < b and _strides_for(b, input_hw):
        return YOLOV8
    if 6 <= b < a:
        if _strides_for(a, input_hw, per_cell=3):
            return YOLOV5
        if _strides_for(a, input_hw):
            if outputs is not None and _looks_raw(np.asarray(outputs[0]).reshape(a, b), input_hw):
                return YOLOX_RAW
            return YOLOX
    if b in (6, 7) and a <= 1000 and not _strides_for(a, input_hw) and not _strides_for(a, input_hw, 3):
        return NMS
    return None


def _looks_raw(rows: np.ndarray, input_hw: tuple[int, int]) -> bool:
    """YOLOX boxes still as offsets: centres near the cell (a few units), not spread over the picture in pixels."""
    centres = np.abs(rows[:, :2])
    return float(np.percentile(centres, 99)) < 0.1 * min(input_hw)


def layout_of_family(family: str) -> str:
    """The output layout a YOLO family's export has (`yolo11` is v8's)."""
    return {"yolov8": YOLOV8, "yolo11": YOLOV8, "yolov5": YOLOV5, "yolox": YOLOX, "yolox-raw": YOLOX_RAW}[family]


def candidates(layout: str, outputs: Sequence[np.ndarray], input_hw: tuple[int, int], conf: float = 0.25
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every box above `conf` before NMS: (boxes N x 4 as x1y1x2y2 pixels, scores N, class ids N)."""
    if layout == SSD:
        return _ssd(outputs, input_hw, conf)
    out = np.asarray(outputs[0], np.float32)
    if layout == YOLOV8:  # scores read along the contiguous (C, N) rows; only the kept columns are transposed
        table = out.reshape(out.shape[-2], out.shape[-1])
        scores = table[4:].max(axis=0)  # a max down the rows is one vector pass; an argmax there is not
        keep = np.flatnonzero(scores >= conf)
        class_ids = table[4:, keep].argmax(axis=0)
        xywh = table[:4, keep].T
        boxes = np.concatenate((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), axis=1)
        return boxes, scores[keep], class_ids
    elif layout in (YOLOV5, YOLOX, YOLOX_RAW):
        rows = out.reshape(out.shape[-2], out.shape[-1])  # (N, 5 + C)
        if layout == YOLOX_RAW:
            rows = _decode_yolox(rows, input_hw)
        scores_all = rows[:, 5:] * rows[:, 4:5]
    elif layout == NMS:
        rows = out.reshape(-1, out.shape[-1])
        keep = rows[:, 4] >= conf
        return rows[keep, :4], rows[keep, 4], rows[keep, 5].astype(np.int64)
    else:
        raise ValueError(f"unknown detector layout {layout!r}; known: {', '.join(LAYOUTS)}")
    class_ids = scores_all.argmax(axis=1)
    scores = scores_all[np.arange(len(rows)), class_ids]
    keep = scores >= conf
    xywh = rows[keep, :4]
    boxes = np.concatenate((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), axis=1)
    return boxes, scores[keep], class_ids[keep]


def _decode_yolox(rows: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    strides = _strides_for(len(rows), input_hw) or STRIDE_SETS[0]
    grids, scale = [], []
    for s in strides:
        h, w = math.ceil(input_hw[0] / s), math.ceil(input_hw[1] / s)
        yv, xv = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        grids.append(np.stack((xv, yv), -1).reshape(-1, 2))
        scale.append(np.full((h * w, 1), s))
    grid, stride = np.concatenate(grids).astype(np.float32), np.concatenate(scale).astype(np.float32)
    decoded = rows.copy()
    decoded[:, :2] = (rows[:, :2] + grid) * stride
    decoded[:, 2:4] = np.exp(np.minimum(rows[:, 2:4], 20.0)) * stride
    return decoded


def _ssd(outputs: Sequence[np.ndarray], input_hw: tuple[int, int], conf: float):
    """TFLite_Detection_PostProcess's outputs, found by shape (their order differs between converters)."""
    arrays = [np.asarray(o) for o in outputs]
    boxes = next(a for a in arrays if a.ndim == 3 and a.shape[-1] == 4).reshape(-1, 4)
    count = int(next(a for a in arrays if a.size == 1).reshape(-1)[0])
    pair = [a.reshape(-1) for a in arrays if a.ndim == 2]
    # scores lie in 0..1; classes are whole numbers (and may exceed 1)
    if len(pair) == 2 and np.all(np.mod(pair[0], 1) == 0) and not np.all(np.mod(pair[1], 1) == 0):
        classes, scores = pair
    else:
        scores, classes = pair
    h, w = input_hw
    count = min(count, len(boxes))
    ymin, xmin, ymax, xmax = boxes[:count].T
    pixel = np.stack((xmin * w, ymin * h, xmax * w, ymax * h), axis=1)
    keep = scores[:count] >= conf
    return pixel[keep], scores[:count][keep], classes[:count][keep].astype(np.int64)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = 0.45) -> np.ndarray:
    """Indices of the boxes greedy non-maximum suppression keeps, best first."""
    order = np.argsort(-scores, kind="stable")
    if len(order) <= 1024:  # every overlap at once (at most 1024 x 1024), then one cheap pass in score order
        ranked = boxes[order]
        overlapping = iou_matrix(ranked, ranked) > iou
        suppressed = np.zeros(len(order), bool)
        keep = []
        for i in range(len(order)):
            if not suppressed[i]:
                keep.append(i)
                suppressed |= overlapping[i]
        return order[np.array(keep, np.int64)]
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    kept = []
    while order.size:
        i = order[0]
        kept.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.array(kept, np.int64)


def decode(layout: str, outputs: Sequence[np.ndarray], input_hw: tuple[int, int], conf: float = 0.25,
           iou: float = 0.45, classwise: bool = True, max_detections: int = 300) -> list[Detection]:
    """Detections of one picture, best first: candidates above `conf`, then NMS per class (or over all classes)
    unless the model did it (`ssd`, `nms`)."""
    boxes, scores, classes = candidates(layout, outputs, input_hw, conf)
    if layout in (SSD, NMS) or not len(boxes):
        order = np.argsort(-scores, kind="stable")
    elif classwise:
        # one NMS over every class at once: boxes of different classes are moved apart so they never overlap
        offset = classes[:, None].astype(np.float32) * (max(input_hw) + 1) * 4
        order = nms(boxes + offset, scores, iou)
    else:
        order = nms(boxes, scores, iou)
    order = order[:max_detections]
    return [Detection(tuple(float(v) for v in boxes[i]), float(scores[i]), int(classes[i])) for i in order]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` with every box of `b` (x1y1x2y2)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    w = np.maximum(0.0, np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]))
    h = np.maximum(0.0, np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]))
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match(found: Sequence[Detection], truth: Sequence[Detection], iou: float = 0.5) -> tuple[int, int, int]:
    """(matched, len(found), len(truth)): greedy one-to-one matching, best score first, of detections to reference
    boxes of the same class at IoU >= `iou`. Recall is matched / truth, precision matched / found."""
    if not found or not truth:
        return 0, len(found), len(truth)
    overlaps = iou_matrix(np.array([d.box for d in found], np.float64), np.array([t.box for t in truth], np.float64))
    taken = np.zeros(len(truth), bool)
    matched = 0
    for i in np.argsort([-d.score for d in found], kind="stable"):
        same = np.array([t.class_id == found[i].class_id for t in truth]) & ~taken & (overlaps[i] >= iou)
        if same.any():
            taken[int(np.argmax(np.where(same, overlaps[i], -1)))] = True
            matched += 1
    return matched, len(found), len(truth)
