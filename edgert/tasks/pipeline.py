"""A model and a photograph: which task the model does, how a picture becomes its input, and how its outputs become
labels, boxes or a mask on the photograph.

The task comes from, in order: the caller (`task=`), the model's TFLite metadata (what `edgert metadata write`
records: the task, a detector's output layout, labels, normalisation), or the outputs' layout when only one task
fits it (a YOLO-family or SSD detector's outputs, a per-pixel map over the input, one row of class scores). The
plan says which, so `edgert run --image` can print it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgert.errors import InputDataError
from edgert.tasks import classes as classify_
from edgert.tasks import boxes as detect_
from edgert.tasks import masks as segment_
from edgert.tasks.image import Geometry, ImageInput, image_input, prepare, read_image
from edgert.tasks.labels import NONE, Labels, from_list, read_label_file
from edgert.tasks.results import Box, Classification, Detections, Label, Segmentation, Timings

TASKS = ("classify", "detect", "segment")


@dataclass(frozen=True)
class Plan:
    """How a model's pictures are prepared and decoded."""

    task: str  # classify, detect or segment
    why: str  # where the task came from, for the output ("the model's metadata", "its output (1, 84, 8400)")
    image: ImageInput
    labels: Labels
    layout: str | None = None  # a detector's output layout (edgert.tasks.boxes.LAYOUTS)
    mask_channel_first: bool = False  # a segmenter's map is (1, C, H, W)

    def describe(self) -> str:
        what = f"{self.task} ({self.why})" + (f", layout {self.layout}" if self.layout else "")
        labels = f"labels from {self.labels.source}" if self.labels.source else "no labels: class numbers"
        return f"{what}; {self.image.describe()}; {labels}"


def _open(model, delegate):
    if isinstance(model, (str, os.PathLike)):
        from edgert.runtime.model import load

        return load(model, delegate=delegate)
    return model


def _metadata(model):
    from edgert.errors import ModelFormatError
    from edgert.metadata.reader import read_metadata

    try:
        return read_metadata(model.path)
    except ModelFormatError:
        return None  # damaged metadata: the picture is read without it (the flags say the rest)


def plan(model, task: str | None = None, *, labels: str | os.PathLike | Sequence[str] | None = None,
         mean: Sequence[float] | None = None, std: Sequence[float] | None = None, bgr: bool | None = None,
         letterbox: bool | None = None, layout: str | None = None, metadata=None) -> Plan:
    """The plan for `model` (a loaded `edgert.Model`), each argument overriding what the model's metadata says.

    Raises:
        InputDataError: an unknown task or layout, a model whose task cannot be told (give `task`), outputs that
            do not fit the task asked for, labels that do not fit the classes.
    """
    if task is not None and task not in TASKS:
        raise InputDataError(f"--task {task!r} is not one of {', '.join(TASKS)}")
    if layout is not None and layout not in detect_.LAYOUTS:
        raise InputDataError(f"--layout {layout!r} is not one of {', '.join(detect_.LAYOUTS)}")
    metadata = _metadata(model) if metadata is None else metadata
    recorded = dict(getattr(metadata, "image_task", None) or {}) if metadata is not None else {}
    probe = image_input(model, mean, std, metadata=metadata)  # the input's size, before the task is known
    input_hw = (probe.height, probe.width)
    shapes = [tuple(o.shape) for o in model.outputs]
    recognised = detect_.recognise(shapes, input_hw)
    why = "given"
    if task is None and recorded.get("task") in TASKS:
        task, why = recorded["task"], "the model's metadata"
    if task is None and metadata is not None:
        kinds = _task_from_metadata(metadata)
        if kinds:
            task, why = kinds, "the model's metadata"
    if layout is None and recorded.get("layout") in detect_.LAYOUTS:
        layout = recorded["layout"]
    if task is None:
        task, why = _task_from_outputs(shapes, input_hw, recognised, layout)
    if task == "detect":
        layout = layout or recognised or (detect_.SSD if len(shapes) == 4 else None)
        if layout is None:
            raise InputDataError(f"the outputs {_shapes(shapes)} are not a detector layout edgert decodes for a "
                                 f"{input_hw[1]}x{input_hw[0]} input; give --layout ({', '.join(detect_.LAYOUTS)})")
    mask_first = False
    if task == "segment":
        found = segment_.segmentation_shape(shapes[0], input_hw) if len(shapes) == 1 else None
        if found is None:
            raise InputDataError(f"a segmenter has one per-pixel output over its input; this model has "
                                 f"{_shapes(shapes)} for a {input_hw[1]}x{input_hw[0]} input")
        mask_first = found
    if task == "classify" and (len(shapes) != 1 or classify_.classes_of(shapes[0]) is None):
        raise InputDataError(f"a classifier has one output of class scores (1, classes); this model has "
                             f"{_shapes(shapes)}: give --task detect or segment, or arrays with --input")
    if letterbox is None:
        letterbox = bool(recorded.get("letterbox", task == "detect" and layout != detect_.SSD))
    if bgr is None:
        bgr = bool(recorded.get("bgr", False))
    how = image_input(model, mean, std, letterbox=letterbox, bgr=bgr, metadata=metadata)
    if letterbox and layout in (detect_.YOLOX, detect_.YOLOX_RAW):  # YOLOX pads below and right, as it trained
        how = dataclasses.replace(how, top_left=True)
    chosen = _labels(labels, metadata)
    chosen.check(_classes(task, shapes, layout, mask_first))
    return Plan(task, why, how, chosen, layout if task == "detect" else None, mask_first)


def _shapes(shapes) -> str:
    return ", ".join(str(tuple(s)) for s in shapes)


def _task_from_metadata(metadata) -> str | None:
    """Metadata written by the Support Library's writers (or edgert's): what its outputs' names and contents say."""
    outputs = metadata.outputs
    if any(o.content == "bounding_box" or o.name == "location" for o in outputs) and len(outputs) == 4:
        return "detect"
    if len(outputs) == 1 and outputs[0].name == "segmentation masks":
        return "segment"
    if len(outputs) == 1 and outputs[0].name == "probability":
        return "classify"
    return None


def _task_from_outputs(shapes, input_hw, recognised, layout) -> tuple[str, str]:
    if layout is not None or recognised is not None:
        return "detect", f"its output{'s' if len(shapes) > 1 else ''} {_shapes(shapes)}"
    if len(shapes) == 1:
        if segment_.segmentation_shape(shapes[0], input_hw) is not None:
            return "segment", f"its output {_shapes(shapes)}, a map over the input"
        if classify_.classes_of(shapes[0]) is not None:
            return "classify", f"its output {_shapes(shapes)}, one score a class"
    raise InputDataError(f"cannot tell this model's task from its outputs {_shapes(shapes)}; give --task "
                         f"({', '.join(TASKS)})")


def _classes(task, shapes, layout, mask_first) -> int | None:
    if task == "classify":
        return classify_.classes_of(shapes[0])
    if task == "segment":
        return shapes[0][1] if mask_first else shapes[0][-1]
    if layout == detect_.YOLOV8:
        return shapes[0][1] - 4
    if layout in (detect_.YOLOV5, detect_.YOLOX, detect_.YOLOX_RAW):
        return shapes[0][-1] - 5
    return None  # SSD and NMS models: the classes are values, not a dimension


def _labels(labels, metadata) -> Labels:
    if labels is None:
        found = getattr(metadata, "labels", None) if metadata is not None else None
        return from_list(found) if found else NONE
    if isinstance(labels, (str, os.PathLike)):
        return read_label_file(labels)
    if isinstance(labels, Labels):
        return labels
    return from_list(tuple(str(v) for v in labels), "the labels given")


class Pipeline:
    """A model with its plan: call it with a picture (a path, a Pillow image or an array of pixels) for its result.

    Raises (from the constructor): see `plan`.
    """

    def __init__(self, model, task: str | None = None, *, labels=None, mean=None, std=None, bgr=None,
                 letterbox=None, layout=None, conf: float = 0.25, iou: float = 0.45, top_k: int = 5,
                 max_detections: int = 300, delegate=None):
        if not 0.0 <= conf <= 1.0:
            raise InputDataError(f"--conf {conf:g} is not a score; give a value from 0 to 1")
        if not 0.0 < iou <= 1.0:
            raise InputDataError(f"--iou {iou:g} is not an overlap; give a value above 0, at most 1")
        if top_k < 1:
            raise InputDataError(f"--top-k {top_k} must be at least 1")
        self.model = _open(model, delegate)
        self.plan = plan(self.model, task, labels=labels, mean=mean, std=std, bgr=bgr, letterbox=letterbox,
                         layout=layout)
        self.conf, self.iou, self.top_k, self.max_detections = conf, iou, top_k, max_detections
        self._layout = self.plan.layout
        # YOLOX's decoded and raw exports share a shape: the first picture's outputs tell them apart, once
        self._layout_known = self._layout not in (detect_.YOLOX, detect_.YOLOX_RAW)

    @property
    def task(self) -> str:
        return self.plan.task

    def prepare(self, pixels: np.ndarray) -> tuple[np.ndarray, Geometry]:
        return prepare(pixels, self.plan.image)

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.model.run([batch])

    def decode(self, outputs: list[np.ndarray], geometry: Geometry, image: str = "",
               timings: Timings | None = None):
        """The outputs of one picture as its result, in the photograph's pixels."""
        timings = timings or Timings(0.0, 0.0, 0.0)
        how, labels = self.plan.image, self.plan.labels
        if self.plan.task == "classify":
            best = classify_.top_k(outputs[0], self.top_k)
            return Classification(image, geometry.width, geometry.height, timings,
                                  tuple(Label(labels(i), s, i) for i, s in best))
        if self.plan.task == "segment":
            mask = segment_.class_map(outputs[0], self.plan.mask_channel_first)
            photo = segment_.to_photo(mask, geometry, (how.height, how.width))
            shape = self.model.outputs[0].shape
            classes = shape[1] if self.plan.mask_channel_first else shape[-1]
            return Segmentation(image, geometry.width, geometry.height, timings, photo,
                                tuple(labels(i) for i in range(max(int(classes), 2))))
        if not self._layout_known:
            self._layout = detect_.recognise([o.shape for o in outputs], (how.height, how.width), outputs) or \
                self._layout
            self._layout_known = True
        found = detect_.decode(self._layout, outputs, (how.height, how.width), self.conf, self.iou,
                               max_detections=self.max_detections)
        boxes = geometry.to_photo(np.array([d.box for d in found], np.float64)) if found else np.zeros((0, 4))
        kept = tuple(Box(labels(d.class_id), d.score, tuple(float(v) for v in b), d.class_id)
                     for d, b in zip(found, boxes) if b[2] > b[0] and b[3] > b[1])  # boxes all in the padding go
        return Detections(image, geometry.width, geometry.height, timings, kept, self._layout)

    def __call__(self, image):
        """One picture's result, with the time of each stage (reading the file is not counted)."""
        name = str(image) if isinstance(image, (str, os.PathLike)) else ""
        pixels = read_image(image, "L" if self.plan.image.channels == 1 else "RGB")
        return self.run_pixels(pixels, name)

    def run_pixels(self, pixels: np.ndarray, name: str = ""):
        t0 = time.perf_counter_ns()
        batch, geometry = self.prepare(pixels)
        t1 = time.perf_counter_ns()
        outputs = self.infer(batch)
        t2 = time.perf_counter_ns()
        result = self.decode(outputs, geometry, name)
        t3 = time.perf_counter_ns()
        timings = Timings((t1 - t0) / 1e6, (t2 - t1) / 1e6, (t3 - t2) / 1e6)
        return dataclasses.replace(result, timings=timings)
