"""A synthetic detection data set: circles, squares and triangles of random size and colour on textured
backgrounds, with their exact boxes. Seeded, so that `train.py` and the tests draw the same pictures."""

from __future__ import annotations

import numpy as np

CLASSES = ("circle", "square", "triangle")


def picture(rng: np.random.Generator, size: int = 160, max_objects: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """One RGB picture (size x size x 3, uint8) and its boxes: rows of (x1, y1, x2, y2, class) in pixels."""
    from PIL import Image, ImageDraw

    base = rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, size)[None, :, None] * rng.integers(-80, 80, 3)
    noise = rng.normal(0, rng.uniform(4, 24), (size, size, 3))
    background = np.clip(base + ramp + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    boxes = []
    for _ in range(rng.integers(1, max_objects + 1)):
        cls = int(rng.integers(0, len(CLASSES)))
        side = int(rng.integers(size // 10, size // 2))
        x1, y1 = (int(v) for v in rng.integers(0, size - side, 2))
        x2, y2 = x1 + side, y1 + side
        if any(_iou((x1, y1, x2, y2), b[:4]) > 0.3 for b in boxes):
            continue
        colour = tuple(int(c) for c in (base + rng.choice([-1, 1], 3) * rng.integers(70, 150, 3)) % 256)
        if cls == 0:
            draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=colour)
        elif cls == 1:
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=colour)
        else:
            draw.polygon(((x1 + side / 2, y1), (x2 - 1, y2 - 1), (x1, y2 - 1)), fill=colour)
        boxes.append((x1, y1, x2, y2, cls))
    return np.asarray(image), np.array(boxes, np.float32).reshape(-1, 5)


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def batch(rng: np.random.Generator, n: int, size: int = 160) -> tuple[np.ndarray, list[np.ndarray]]:
    """`n` pictures as float NCHW in 0..1 (as the detectors take them) and their boxes."""
    pictures = [picture(rng, size) for _ in range(n)]
    images = np.stack([p[0] for p in pictures]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return images, [p[1] for p in pictures]
