"""Train the test detectors (nets.py) briefly on synthetic shapes (shapes.py) and save their weights in weights/.

    python -m tests.detectors.train [--families yolov8,yolov5,...] [--steps 1500]

Each family gets the loss its authors use, simplified where the tests do not need more: a centre-sampling
assignment on the level that fits each box's size; YOLOv8/11: BCE on the classes, DFL on the box bins and a GIoU
loss; YOLOv5: objectness, classes and GIoU for the anchors that fit; YOLOX: objectness, classes and GIoU on the
decoded box. At the end each is scored on 200 held-out pictures against their true boxes (recall and precision at
IoU 0.5, same class, through edgert's own decoders). Minutes on two cores; the weights are committed, so the tests
never train.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tests.detectors import nets, shapes

WEIGHTS = Path(__file__).parent / "weights"
SIZE = 160
# the level each box goes to, by its longer side in pixels
LEVEL_BOUNDS = (36, 72)


def _level(side: float) -> int:
    return 0 if side < LEVEL_BOUNDS[0] else 1 if side < LEVEL_BOUNDS[1] else 2


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of matching rows of xyxy boxes."""
    inter = ((torch.min(a[:, 2], b[:, 2]) - torch.max(a[:, 0], b[:, 0])).clamp(0)
             * (torch.min(a[:, 3], b[:, 3]) - torch.max(a[:, 1], b[:, 1])).clamp(0))
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    iou = inter / area.clamp(min=1e-6)
    hull = ((torch.max(a[:, 2], b[:, 2]) - torch.min(a[:, 0], b[:, 0]))
            * (torch.max(a[:, 3], b[:, 3]) - torch.min(a[:, 1], b[:, 1]))).clamp(min=1e-6)
    return iou - (hull - area) / hull


def positives(boxes: np.ndarray, shape: tuple[int, int], stride: int, level: int):
    """(cell row, cell column, box) for the cells of this level within 1.5 cells of a box's centre and inside it (the
    centre's own cell always)."""
    out = []
    h, w = shape
    for b in boxes:
        if _level(max(b[2] - b[0], b[3] - b[1])) != level:
            continue
        cx, cy = (b[0] + b[2]) / 2 / stride, (b[1] + b[3]) / 2 / stride
        for j in range(max(0, int(cy - 1.5)), min(h, int(cy + 1.5) + 1)):
            for i in range(max(0, int(cx - 1.5)), min(w, int(cx + 1.5) + 1)):
                px, py = (i + 0.5) * stride, (j + 0.5) * stride
                centre = i == int(cx) and j == int(cy)
                if centre or (b[0] < px < b[2] and b[1] < py < b[3] and abs(i + 0.5 - cx) <= 1.5
                              and abs(j + 0.5 - cy) <= 1.5):
                    out.append((j, i, b))
    return out


def loss_v8(maps, targets, nc):
    total_cls, total_box, n_pos = 0.0, 0.0, 0
    bins = torch.arange(nets.REG_MAX, dtype=torch.float)
    for level, (x, stride) in enumerate(zip(maps, nets.STRIDES)):
        bsz, _, h, w = x.shape
        box_logits, cls_logits = x.split((4 * nets.REG_MAX, nc), 1)
        cls_target = torch.zeros_like(cls_logits)
        pred_boxes, true_boxes, dfl = [], [], []
        for k in range(bsz):
            for j, i, b in positives(targets[k], (h, w), stride, level):
                cls_target[k, int(b[4]), j, i] = 1.0
                ax, ay = i + 0.5, j + 0.5
                ltrb = torch.tensor([ax - b[0] / stride, ay - b[1] / stride, b[2] / stride - ax, b[3] / stride - ay])
                ltrb = ltrb.clamp(0, nets.REG_MAX - 1.01)
                logits = box_logits[k, :, j, i].view(4, nets.REG_MAX)
                left = ltrb.floor().long()
                wr = ltrb - left
                dfl.append((F.cross_entropy(logits, left, reduction="none") * (1 - wr)
                            + F.cross_entropy(logits, left + 1, reduction="none") * wr).mean())
                dist = (logits.softmax(1) * bins).sum(1)
                pred_boxes.append(torch.stack((ax - dist[0], ay - dist[1], ax + dist[2], ay + dist[3])) * stride)
                true_boxes.append(torch.tensor(b[:4]))
        total_cls = total_cls + F.binary_cross_entropy_with_logits(cls_logits, cls_target, reduction="sum")
        if pred_boxes:
            total_box = total_box + (1 - giou(torch.stack(pred_boxes), torch.stack(true_boxes))).sum() \
                + torch.stack(dfl).sum()
            n_pos += len(pred_boxes)
    return (total_cls + 5 * total_box) / max(1, n_pos)


def loss_v5(maps, targets, nc, anchors):
    total_obj, total_rest, n_pos = 0.0, 0.0, 0
    for level, (x, stride) in enumerate(zip(maps, nets.STRIDES)):
        bsz, na, h, w, _ = x.shape
        obj_target = torch.zeros(bsz, na, h, w)
        preds, trues, cls_terms = [], [], []
        for k in range(bsz):
            for j, i, b in positives(targets[k], (h, w), stride, level):
                bw, bh = b[2] - b[0], b[3] - b[1]
                for a in range(na):
                    aw, ah = anchors[level, a].tolist()
                    if max(bw / aw, aw / bw, bh / ah, ah / bh) > 4:
                        continue
                    p = x[k, a, j, i].sigmoid()
                    cx, cy = (p[0] * 2 - 0.5 + i) * stride, (p[1] * 2 - 0.5 + j) * stride
                    pw, ph = (p[2] * 2) ** 2 * aw, (p[3] * 2) ** 2 * ah
                    preds.append(torch.stack((cx - pw / 2, cy - ph / 2, cx + pw / 2, cy + ph / 2)))
                    trues.append(torch.tensor(b[:4]))
                    obj_target[k, a, j, i] = 1.0
                    one_hot = torch.zeros(nc)
                    one_hot[int(b[4])] = 1.0
                    cls_terms.append(F.binary_cross_entropy_with_logits(x[k, a, j, i, 5:], one_hot, reduction="sum"))
        total_obj = total_obj + F.binary_cross_entropy_with_logits(x[..., 4], obj_target, reduction="sum")
        if preds:
            total_rest = total_rest + 5 * (1 - giou(torch.stack(preds), torch.stack(trues))).sum() \
                + torch.stack(cls_terms).sum()
            n_pos += len(preds)
    return (total_obj + total_rest) / max(1, n_pos)


def loss_x(maps, targets, nc):
    total_obj, total_rest, n_pos = 0.0, 0.0, 0
    for level, (x, stride) in enumerate(zip(maps, nets.STRIDES)):
        bsz, _, h, w = x.shape
        obj_target = torch.zeros(bsz, h, w)
        preds, trues, cls_terms = [], [], []
        for k in range(bsz):
            for j, i, b in positives(targets[k], (h, w), stride, level):
                r = x[k, :, j, i]
                cx, cy = (r[0] + i) * stride, (r[1] + j) * stride
                pw, ph = torch.exp(r[2].clamp(max=8)) * stride, torch.exp(r[3].clamp(max=8)) * stride
                preds.append(torch.stack((cx - pw / 2, cy - ph / 2, cx + pw / 2, cy + ph / 2)))
                trues.append(torch.tensor(b[:4]))
                obj_target[k, j, i] = 1.0
                one_hot = torch.zeros(nc)
                one_hot[int(b[4])] = 1.0
                cls_terms.append(F.binary_cross_entropy_with_logits(r[5:], one_hot, reduction="sum"))
        total_obj = total_obj + F.binary_cross_entropy_with_logits(x[:, 4], obj_target, reduction="sum")
        if preds:
            total_rest = total_rest + 5 * (1 - giou(torch.stack(preds), torch.stack(trues))).sum() \
                + torch.stack(cls_terms).sum()
            n_pos += len(preds)
    return (total_obj + total_rest) / max(1, n_pos)


def train(family: str, steps: int, batch_size: int = 16, seed: int = 0) -> nets.Detector:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = nets.Detector(family, nc=len(shapes.CLASSES), size=SIZE, width=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    model.train()
    model.head.raw = True
    started = time.monotonic()
    for step in range(steps):
        images, targets = shapes.batch(rng, batch_size, SIZE)
        maps = model(torch.from_numpy(images))
        if family in ("yolov8", "yolo11"):
            loss = loss_v8(maps, targets, model.head.nc)
        elif family == "yolov5":
            loss = loss_v5(maps, targets, model.head.nc, model.head.anchors)
        else:
            loss = loss_x(maps, targets, model.head.nc)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"{family} step {step}: loss {float(loss):.3f} ({time.monotonic() - started:.0f} s)", flush=True)
    model.head.raw = False
    return model.eval()


def score(model: nets.Detector, family: str, pictures: int = 200, seed: int = 1234) -> tuple[float, float]:
    """Recall and precision against the true boxes at IoU 0.5, same class, through edgert.tasks."""
    from edgert.tasks import boxes as detect

    rng = np.random.default_rng(seed)
    images, targets = shapes.batch(rng, pictures, SIZE)
    layout = detect.layout_of_family(family)
    found = matched = truth = 0
    with torch.no_grad():
        for image, boxes in zip(images, targets):
            out = model(torch.from_numpy(image[None])).numpy()
            dets = detect.decode(layout, [out], (SIZE, SIZE), conf=0.25, iou=0.45)
            truth += len(boxes)
            found += len(dets)
            matched += detect.match(dets, [detect.Detection(tuple(b[:4]), 1.0, int(b[4])) for b in boxes])[0]
    return matched / max(1, truth), matched / max(1, found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="yolov5,yolov8,yolo11,yolox")
    parser.add_argument("--steps", type=int, default=1500)
    args = parser.parse_args()
    torch.set_num_threads(2)
    WEIGHTS.mkdir(exist_ok=True)
    for family in args.families.split(","):
        model = train(family, args.steps)
        recall, precision = score(model, family)
        print(f"{family}: recall {recall:.3f}, precision {precision:.3f} on 200 held-out pictures", flush=True)
        state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
        torch.save(state, WEIGHTS / f"{family}.pt")


if __name__ == "__main__":
    sys.exit(main())
