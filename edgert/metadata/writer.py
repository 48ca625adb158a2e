"""TFLite Metadata: the `TFLITE_METADATA` buffer (metadata_schema.fbs) and the label files packed after the model.

This is the layout Android Studio's ML Model Binding, the LiteRT Support Library and tflite-support's
`MetadataPopulator`/`MetadataDisplayer` read and write: a `ModelMetadata` flatbuffer (file identifier `M001`) in a
model buffer named `TFLITE_METADATA`, and associated files in a zip archive appended to the flatbuffer, stored
uncompressed. The model itself is rewritten through the model schema's object API (ai-edge-litert's generated
code), never by hand.
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from edgert.errors import MetadataError
from edgert.files import atomic_path, check_output_path
from edgert.metadata.records import (
    CUSTOM_METADATA_PARSER_VERSION,
    IMAGE_TASK_NAME,
    LABELS_DESCRIPTION,
    METADATA_IDENTIFIER,
    METADATA_NAME,
    MIN_PARSER_VERSION,
    TASKS,
    ModelMetadata,
)
from edgert.metadata.reader import decode_metadata


@dataclass(frozen=True)
class MetadataSpec:
    """What to write. `mean`/`std` describe how a raw value (a pixel in `input_range`) becomes the model's input:
    `(value - mean) / std`, one number or one per channel; for a quantized input they are derived from its
    quantization when not given."""

    name: str
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    labels: tuple[str, ...] | None = None
    labels_file_name: str = "labels.txt"
    labels_data: bytes | None = None  # the label file's exact bytes, packed as they are (else the lines, joined)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_range: tuple[float, float] = (0.0, 255.0)
    task: str = "classification"
    layout: str | None = None  # a detector's output layout (edgert.tasks.boxes.LAYOUTS); found from its shape
    bgr: bool = False  # the model takes its channels as BGR (OpenCV-trained models)

    def __post_init__(self):
        if self.task not in TASKS:
            raise MetadataError(f"--task {self.task!r} is not one of {', '.join(TASKS)}")
        if not self.name.strip():
            raise MetadataError("--name is required and cannot be empty")
        if (self.mean is None) != (self.std is None):
            raise MetadataError("give --input-mean and --input-std together")
        if self.std is not None and any(s == 0 or not math.isfinite(s) for s in self.std):
            raise MetadataError(f"--input-std must be finite and non-zero, got {', '.join(map(str, self.std))}")
        if self.mean is not None and not all(math.isfinite(m) for m in self.mean):
            raise MetadataError("--input-mean must be finite")
        low, high = self.input_range
        if not low < high:
            raise MetadataError(f"--input-range LOW must be below HIGH, got {low},{high}")
        if self.labels is not None and (not self.labels or any(not label.strip() for label in self.labels)):
            raise MetadataError("the label file has empty lines; give one non-empty label per class")


@dataclass(frozen=True)
class InputNormalization:
    """The normalisation recorded for an image input, and the real range it maps `input_range` onto."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    min: tuple[float, ...]
    max: tuple[float, ...]
    derived: bool  # computed from the input's quantization rather than given


def read_labels(path: str | os.PathLike) -> tuple[str, ...]:
    """A label file's labels in class order, read as `edgert run --labels` reads it (one per line, or `ID LABEL`
    lines; an id a numbered file skips is written as its number).

    Raises:
        InputDataError: the file cannot be read, is not UTF-8 text, or holds no labels.
    """
    from edgert.tasks.labels import read_label_file

    labels = read_label_file(path)
    return tuple(labels(i) for i in range(max(labels.names) + 1))


def plan_normalization(spec, meta: MetadataSpec, channels: int) -> InputNormalization:
    """Check (or derive) the input normalisation against the input tensor.

    Raises:
        MetadataError: a float input without mean/std; per-channel values for the wrong number of channels; a
            quantized input whose quantization cannot represent the normalised range.
    """
    low, high = meta.input_range
    real = spec.real_range()
    if meta.mean is None:
        if real is None:
            raise MetadataError(f"input '{spec.name}' is {spec.dtype}: give --input-mean and --input-std (how a raw "
                                f"value in {low:g}..{high:g} becomes the model's input, (value - mean) / std)")
        std = (high - low) / (real[1] - real[0])
        mean = low - real[0] * std
        mean, std = float(f"{mean:.6g}"), float(f"{std:.6g}")  # 255, not 254.99998 from a float32 scale
        means, stds, derived = (mean,) * channels, (std,) * channels, True
    else:
        from edgert.tasks.image import per_channel

        means = per_channel(meta.mean, channels, "--input-mean", MetadataError)
        stds, derived = per_channel(meta.std, channels, "--input-std", MetadataError), False
    lows = tuple((low - m) / s for m, s in zip(means, stds))
    highs = tuple((high - m) / s for m, s in zip(means, stds))
    mins = tuple(min(a, b) for a, b in zip(lows, highs))
    maxs = tuple(max(a, b) for a, b in zip(lows, highs))
    if real is not None and not derived:
        step = spec.scale[0]
        if min(mins) < real[0] - step or max(maxs) > real[1] + step:
            std = (high - low) / (real[1] - real[0])
            raise MetadataError(
                f"input '{spec.name}' is {spec.dtype} representing {real[0]:.4g}..{real[1]:.4g} (scale "
                f"{spec.scale[0]:.6g}, zero point {spec.zero_point[0]}), but --input-mean/--input-std map "
                f"{low:g}..{high:g} to {min(mins):.4g}..{max(maxs):.4g}; for this input use --input-mean "
                f"{low - real[0] * std:.6g} --input-std {std:.6g}, or leave both out")
    return InputNormalization(means, stds, mins, maxs, derived)


@dataclass
class _Plan:
    inputs: list = field(default_factory=list)   # metadata_schema TensorMetadataT
    outputs: list = field(default_factory=list)
    files: dict = field(default_factory=dict)    # name -> bytes, packed after the model
    image_task: dict | None = None  # recorded as IMAGE_TASK_NAME


def _yolo_family(info, meta: MetadataSpec, labels) -> dict:
    """A one-output detector's layout (given, or recognised from its shape) and classes against the labels."""
    from edgert.tasks import boxes as detect

    h, w, _ = _image_layout(info.inputs[0])
    shapes = [tuple(o.shape) for o in info.outputs]
    layout = meta.layout or detect.recognise(shapes, (h, w))
    if layout is None or layout == detect.SSD:
        raise MetadataError(f"a detector (SSD post-processing) has 4 outputs: boxes, classes, scores and the number "
                            f"of detections, or one YOLO-family output; {info.path} has "
                            f"{', '.join(str(list(s)) for s in shapes)}, not a layout edgert knows for a {w}x{h} "
                            f"input: give --layout ({', '.join(detect.LAYOUTS)}) or --task generic")
    shape = shapes[0]
    classes = {detect.YOLOV8: shape[1] - 4 if len(shape) == 3 else None, detect.NMS: None}.get(
        layout, shape[-1] - 5 if len(shape) == 3 else None)
    if classes is not None:
        _check_labels(labels, classes, meta)
    return {"task": "detect", "layout": layout, "letterbox": layout != detect.SSD}


def _image_layout(spec) -> tuple[int, int, int]:
    shape = spec.shape
    if len(shape) == 4 and shape[3] not in (1, 3) and shape[1] in (1, 3):  # channel-first, as ONNX sources take it
        return shape[2], shape[3], shape[1]
    if len(shape) != 4 or shape[3] not in (1, 3):
        raise MetadataError(f"input '{spec.name}' has shape {list(shape)}; an image input is [1, height, width, "
                            "1 or 3 channels] (use --task generic for other inputs)")
    return shape[1], shape[2], shape[3]


def _plan(info, meta: MetadataSpec):
    """Check the model against the task and build the schema objects."""
    from edgert.metadata import _schema as md

    plan = _Plan()
    image_tasks = ("classification", "detection", "segmentation")
    if meta.task in image_tasks and len(info.inputs) != 1:
        raise MetadataError(f"{info.path} has {len(info.inputs)} inputs; --task {meta.task} expects one image "
                            "input (use --task generic)")
    for spec in info.inputs:
        tm = md.TensorMetadataT()
        tm.name, tm.description = spec.name, ""
        if meta.task in image_tasks:
            _h, _w, channels = _image_layout(spec)
            norm = plan_normalization(spec, meta, channels)
            tm.name, tm.description = "image", f"Input image, normalised as (pixel - mean) / std from " \
                                               f"{meta.input_range[0]:g}..{meta.input_range[1]:g}."
            props = md.ImagePropertiesT()
            props.colorSpace = md.ColorSpaceType.RGB if channels == 3 else md.ColorSpaceType.GRAYSCALE
            tm.content = md.ContentT()
            tm.content.contentPropertiesType = md.ContentProperties.ImageProperties
            tm.content.contentProperties = props
            tm.processUnits = [_normalization_unit(md, norm.mean, norm.std)]
            tm.stats = _stats(md, norm.min, norm.max)
        elif meta.mean is not None:
            tm.processUnits = [_normalization_unit(md, meta.mean, meta.std)]
        plan.inputs.append(tm)

    labels = meta.labels
    if meta.task == "classification":
        if len(info.outputs) != 1 or len(info.outputs[0].shape) != 2:
            shapes = ", ".join(str(list(o.shape)) for o in info.outputs)
            raise MetadataError(f"a classifier has one [1, classes] output; {info.path} has {shapes} (use --task "
                                "generic, detection or segmentation)")
        _check_labels(labels, info.outputs[0].shape[-1], meta)
        plan.image_task = {"task": "classify"}
        plan.outputs.append(_output(md, "probability", "Scores of the classes, in the label file's order.",
                                    labels, meta, md.AssociatedFileType.TENSOR_AXIS_LABELS, plan))
    elif meta.task == "detection" and len(info.outputs) != 4:
        plan.image_task = _yolo_family(info, meta, labels)
        plan.outputs.append(_output(md, "detections", f"Boxes and class scores, {plan.image_task['layout']} "
                                    "layout (edgert.tasks.boxes).", labels, meta,
                                    md.AssociatedFileType.TENSOR_VALUE_LABELS, plan))
    elif meta.task == "detection":
        roles = detection_roles(info.outputs, info.path)
        plan.image_task = {"task": "detect", "layout": "ssd", "letterbox": False}
        names = (("location", "Boxes: [top, left, bottom, right], normalised to 0..1."),
                 ("category", "Class index of each box."), ("score", "Score of each box."),
                 ("number of detections", "How many boxes are valid."))
        for index in range(len(info.outputs)):  # metadata lists tensors in the model's own output order
            role = roles.index(index)
            name, description = names[role]
            plan.outputs.append(_output(md, name, description, labels if role == 1 else None, meta,
                                        md.AssociatedFileType.TENSOR_VALUE_LABELS, plan))
    elif meta.task == "segmentation":
        plan.image_task = {"task": "segment"}
        out = info.outputs[0]
        if len(info.outputs) != 1 or len(out.shape) != 4:
            raise MetadataError(f"a segmenter has one [1, height, width, classes] output; {info.path} has "
                                f"{', '.join(str(list(o.shape)) for o in info.outputs)}")
        _check_labels(labels, out.shape[-1], meta)
        plan.outputs.append(_output(md, "segmentation masks", "Per-pixel class scores.", labels, meta,
                                    md.AssociatedFileType.TENSOR_AXIS_LABELS, plan))
    else:
        for k, out in enumerate(info.outputs):
            fits = labels is not None and k == 0 and out.shape and out.shape[-1] == len(labels)
            if labels is not None and k == 0 and not fits:
                _check_labels(labels, out.shape[-1] if out.shape else 0, meta)
            plan.outputs.append(_output(md, out.name, "", labels if fits else None, meta,
                                        md.AssociatedFileType.TENSOR_AXIS_LABELS, plan))
    return plan


def detection_roles(outputs, source: str = "the model") -> tuple[int, int, int, int]:
    """The output indices of (boxes, classes, scores, count) of an SSD-style detector.

    The converter may store outputs in any order. The signature's names are tried first where they say the role
    (`detection_boxes`, `detection_classes`, `detection_scores`, `num_detections`); then the tensor names, which keep
    the function's order (`X`, `X:1`, `X:2`, `X:3` from TFLite_Detection_PostProcess, `StatefulPartitionedCall:k`
    from TensorFlow); then the shapes: boxes are [1, N, 4], the count has one element, classes come before scores.

    Raises:
        MetadataError: not four outputs of those shapes.
    """
    shapes = ", ".join(str(list(o.shape)) for o in outputs)
    if len(outputs) != 4:
        raise MetadataError(f"a detector (SSD post-processing) has 4 outputs: boxes, classes, scores and the number "
                            f"of detections; {source} has {len(outputs)} ({shapes})")

    def key(i):
        tensor = getattr(outputs[i], "tensor_name", outputs[i].name)
        base, _, k = tensor.rpartition(":")
        return (base, int(k)) if base and k.isdigit() else (tensor, 0)

    def fits(order) -> bool:
        boxes, classes, scores, count = (outputs[i].shape for i in order)
        n = boxes[1] if len(boxes) == 3 and boxes[2] == 4 else None
        return n is not None and classes[-1:] == (n,) and scores[-1:] == (n,) and math.prod(count) == 1

    words = (("box", "location"), ("class", "categor", "label"), ("score", "confidence"), ("num", "count"))
    by_role = [[i for i in range(4) if any(w in outputs[i].name.lower() for w in role)] for role in words]
    if all(len(found) == 1 for found in by_role) and len({f[0] for f in by_role}) == 4:
        named = tuple(f[0] for f in by_role)
        if fits(named):
            return named
    if len({key(i)[0] for i in range(4)}) == 1:
        by_name = tuple(sorted(range(4), key=key))
        if fits(by_name):
            return by_name
    boxes = [i for i in range(4) if len(outputs[i].shape) == 3]
    count = [i for i in range(4) if math.prod(outputs[i].shape) == 1]
    rest = [i for i in range(4) if i not in boxes + count]
    if len(boxes) == 1 and len(count) == 1 and len(rest) == 2 and fits((boxes[0], rest[0], rest[1], count[0])):
        return boxes[0], rest[0], rest[1], count[0]
    raise MetadataError(f"a detector outputs boxes [1, N, 4], classes [1, N], scores [1, N] and a count [1]; "
                        f"{source} has {shapes}")


def _check_labels(labels, classes: int, meta: MetadataSpec) -> None:
    if labels is not None and len(labels) != classes:
        raise MetadataError(f"the label file {meta.labels_file_name} has {len(labels)} labels but the model's "
                            f"output has {classes} classes; give one label per class")


def _output(md, name, description, labels, meta, file_type, plan):
    tm = md.TensorMetadataT()
    tm.name, tm.description = name, description
    tm.content = md.ContentT()
    tm.content.contentPropertiesType = md.ContentProperties.FeatureProperties
    tm.content.contentProperties = md.FeaturePropertiesT()
    if labels is not None:
        af = md.AssociatedFileT()
        af.name, af.description, af.type = meta.labels_file_name, LABELS_DESCRIPTION, file_type
        tm.associatedFiles = [af]
        plan.files[meta.labels_file_name] = meta.labels_data or ("\n".join(labels) + "\n").encode()
    return tm


def _normalization_unit(md, mean, std):
    unit = md.ProcessUnitT()
    unit.optionsType = md.ProcessUnitOptions.NormalizationOptions
    unit.options = md.NormalizationOptionsT()
    unit.options.mean, unit.options.std = [float(m) for m in mean], [float(s) for s in std]
    return unit


def _stats(md, mins, maxs):
    stats = md.StatsT()
    stats.min, stats.max = [float(v) for v in mins], [float(v) for v in maxs]
    return stats


def build_metadata(info, meta: MetadataSpec) -> tuple[bytes, dict[str, bytes]]:
    """The `M001` metadata flatbuffer for the model described by `info`, and the files to pack after it."""
    import flatbuffers

    from edgert.metadata import _schema as md

    plan = _plan(info, meta)
    model = md.ModelMetadataT()
    model.name, model.description, model.version = meta.name, meta.description, meta.version
    model.author, model.license = meta.author, meta.license
    model.minParserVersion = MIN_PARSER_VERSION
    subgraph = md.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = plan.inputs, plan.outputs
    # Recorded only where the standard fields cannot say it (a YOLO-family layout, BGR channels): a classifier's,
    # segmenter's or SSD's metadata stays readable by parsers older than 1.5.0, as Android apps ship them.
    needed = plan.image_task is not None and (plan.image_task.get("layout", "ssd") != "ssd" or meta.bgr)
    if needed and meta.task != "generic":
        import json

        task = dict(plan.image_task, bgr=meta.bgr) if meta.bgr else plan.image_task
        custom = md.CustomMetadataT()
        custom.name, custom.data = IMAGE_TASK_NAME, list(json.dumps(task, sort_keys=True).encode())
        subgraph.customMetadata = [custom]
        model.minParserVersion = CUSTOM_METADATA_PARSER_VERSION
    model.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), METADATA_IDENTIFIER)
    return bytes(builder.Output()), plan.files


def _schema():
    """The model schema's generated object API, from whichever package ships it (the same flatc output)."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated as schema
        except ImportError:
            raise MetadataError("writing metadata needs the TFLite model schema, which ai-edge-litert ships: "
                                "pip install ai-edge-litert") from None
    return schema


def embed(data: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """The model `data` with `metadata` as its TFLITE_METADATA buffer (replacing any) and `files` packed after it
    (replacing any packed before)."""
    import flatbuffers
    import numpy as np

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata, dtype=np.uint8)
    entries = [m for m in model.metadata or [] if m.name.decode() != METADATA_NAME]
    old = [m for m in model.metadata or [] if m.name.decode() == METADATA_NAME]
    if old:  # reuse the old buffer's slot: other tables may not refer to it, and indices stay put
        model.buffers[old[0].buffer] = buffer
        index = old[0].buffer
    else:
        model.buffers.append(buffer)
        index = len(model.buffers) - 1
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME.encode(), index
    model.metadata = entries + [entry]
    builder = flatbuffers.Builder(len(data) + len(metadata) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    out = io.BytesIO(bytes(builder.Output()))
    if files:
        out.seek(0, io.SEEK_END)
        with zipfile.ZipFile(out, "a") as archive:  # appended after the flatbuffer, stored (not deflated)
            for name, content in files.items():
                archive.writestr(name, content)
    return out.getvalue()


def write_metadata(model_path: str | os.PathLike, meta: MetadataSpec, output: str | os.PathLike | None = None,
                   *, force: bool = False) -> tuple[str, ModelMetadata]:
    """Write `meta` into a copy of the model (default `<stem>_metadata.tflite` beside it), atomically.

    Raises:
        ModelFormatError: not a valid model.
        MetadataError: the metadata does not fit the model (task, labels, normalisation).
        OutputExistsError: the output exists and `force` is false.
    """
    from edgert.tflite.flatbuffer import parse
    from edgert.tflite.info import describe, read_model_bytes

    model_path = Path(model_path)
    out = Path(output) if output else model_path.with_name(f"{model_path.stem}_metadata.tflite")
    check_output_path(out, force=force)
    data = read_model_bytes(model_path)
    info = describe(data, str(model_path), parse(data, str(model_path)))
    metadata, files = build_metadata(info, meta)
    result = embed(data, metadata, files)
    parse(result, str(out))  # never write a model edgert could not read back
    with atomic_path(out) as tmp:
        tmp.write_bytes(result)
    return str(out), decode_metadata(result, str(out))


def parse_floats(text: str, what: str) -> tuple[float, ...]:
    """`127.5` or `123.7,116.3,103.5`.

    Raises:
        MetadataError: not numbers.
    """
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise MetadataError(f"--{what} {text!r} is not a number or a comma-separated list of numbers") from None
    return values

