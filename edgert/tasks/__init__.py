"""Images in, labels and boxes out.

    from edgert import tasks
    result = tasks.detect("yolo.tflite", "street.jpg")         # Detections: boxes in the photograph's pixels
    result = tasks.classify("mobilenet.tflite", "cat.jpg")      # Classification: top-k labels and scores
    result = tasks.segment("deeplab.tflite", "room.jpg")        # Segmentation: a class per photograph pixel

Each takes a model (a path or a loaded `edgert.Model`) and a picture (a path, a Pillow image or RGB pixels), and
`labels`, `mean`/`std` (pixel units), `conf`, `iou`, `top_k`, `layout` as `Pipeline` does. For many pictures, build
one `Pipeline` and call it on each. The decoders are plain functions over arrays (`edgert.tasks.boxes`,
`classes`, `masks`); pictures are read with Pillow (`edgert[images]`), videos with OpenCV (`edgert[video]`).
The runtime imports none of this until it is used.
"""

from __future__ import annotations

_LAZY = {
    "Pipeline": "edgert.tasks.pipeline", "Plan": "edgert.tasks.pipeline", "plan": "edgert.tasks.pipeline",
    "Classification": "edgert.tasks.results", "Detections": "edgert.tasks.results",
    "Segmentation": "edgert.tasks.results", "Box": "edgert.tasks.results", "Label": "edgert.tasks.results",
    "Timings": "edgert.tasks.results", "annotate": "edgert.tasks.draw", "bench_pictures": "edgert.tasks.bench",
    "list_images": "edgert.tasks.image", "read_image": "edgert.tasks.image",
}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'edgert.tasks' has no attribute {name!r}")


def run(model, image, task: str | None = None, **options):
    """`image` through `model` for its task (from `task`, the model's metadata or its outputs): a Classification,
    Detections or Segmentation."""
    from edgert.tasks.pipeline import Pipeline

    return Pipeline(model, task, **options)(image)


def classify(model, image, **options):
    """The picture's best classes (`top_k`, default 5), best first: a `Classification`."""
    return run(model, image, "classify", **options)


def detect(model, image, **options):
    """The objects in the picture (`conf` 0.25, `iou` 0.45 by default), boxes in its pixels: a `Detections`."""
    return run(model, image, "detect", **options)


def segment(model, image, **options):
    """A class for every pixel of the picture: a `Segmentation`."""
    return run(model, image, "segment", **options)
