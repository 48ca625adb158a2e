"""What `edgert.tasks` returns: a photograph's classes, boxes or mask, and the time each stage took."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Timings:
    """One picture's stages in milliseconds: preparing the pixels (resize or letterbox, normalise), the model,
    and decoding its outputs (for detectors: candidates, NMS, boxes mapped back)."""

    pre_ms: float
    infer_ms: float
    post_ms: float

    @property
    def total_ms(self) -> float:
        return self.pre_ms + self.infer_ms + self.post_ms

    def to_dict(self) -> dict:
        return {"pre_ms": round(self.pre_ms, 3), "infer_ms": round(self.infer_ms, 3),
                "post_ms": round(self.post_ms, 3), "total_ms": round(self.total_ms, 3)}


@dataclass(frozen=True)
class Label:
    """A class and its score (a classifier's top-k)."""

    label: str
    score: float
    index: int

    def to_dict(self) -> dict:
        return {"label": self.label, "score": round(self.score, 6), "index": self.index}


@dataclass(frozen=True)
class Box:
    """A detection: its label, score and box (x1, y1, x2, y2) in the photograph's pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]
    class_id: int

    def to_dict(self) -> dict:
        return {"label": self.label, "score": round(self.score, 6), "box": [round(v, 2) for v in self.box],
                "class_id": self.class_id}


@dataclass(frozen=True)
class _Result:
    image: str  # the picture's path, or "" for an array
    width: int  # the photograph's size
    height: int
    timings: Timings


@dataclass(frozen=True)
class Classification(_Result):
    classes: tuple[Label, ...] = ()  # best first
    task: str = "classify"

    def to_dict(self) -> dict:
        return {"image": self.image, "task": self.task, "width": self.width, "height": self.height,
                "classes": [c.to_dict() for c in self.classes], "timings": self.timings.to_dict()}


@dataclass(frozen=True)
class Detections(_Result):
    detections: tuple[Box, ...] = ()  # best first
    layout: str = ""  # the output layout decoded (edgert.tasks.boxes)
    task: str = "detect"

    def to_dict(self) -> dict:
        return {"image": self.image, "task": self.task, "width": self.width, "height": self.height,
                "layout": self.layout, "detections": [d.to_dict() for d in self.detections],
                "timings": self.timings.to_dict()}


@dataclass(frozen=True)
class Segmentation(_Result):
    mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int32))  # class per photograph pixel
    labels: tuple[str, ...] = ()  # the label of each class index
    task: str = "segment"

    def areas(self) -> list[tuple[str, int, float]]:
        """(label, class index, share of the picture) of each class present, largest first."""
        counts = np.bincount(self.mask.ravel(), minlength=len(self.labels)) if self.mask.size else np.zeros(0)
        total = max(self.mask.size, 1)
        found = [(self.labels[i] if i < len(self.labels) else str(i), int(i), float(n) / total)
                 for i, n in enumerate(counts) if n]
        return sorted(found, key=lambda r: -r[2])

    def to_dict(self) -> dict:
        return {"image": self.image, "task": self.task, "width": self.width, "height": self.height,
                "classes": [{"label": label, "index": i, "share": round(share, 6)} for label, i, share in self.areas()],
                "timings": self.timings.to_dict()}


Result = Classification | Detections | Segmentation
