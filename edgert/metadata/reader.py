"""Reading TFLite Metadata back: the `TFLITE_METADATA` buffer of any model (edgert's or another tool's) decoded into
`ModelMetadata`, and the files packed after the flatbuffer. `edgert.metadata.writer` writes them."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from edgert.errors import MetadataError, ModelFormatError
from edgert.metadata.records import IMAGE_TASK_NAME, METADATA_IDENTIFIER, METADATA_NAME, ModelMetadata, TensorMetadata


def read_metadata(model_path: str | os.PathLike) -> ModelMetadata | None:
    """The metadata of a model (written by edgert or anything else), or None when it has none.

    Raises:
        ModelFormatError: not a valid model, or its metadata buffer is damaged.
    """
    from edgert.tflite.info import read_model_bytes

    return decode_metadata(read_model_bytes(model_path), str(model_path))


def decode_metadata(data: bytes, source: str) -> ModelMetadata | None:
    """The metadata of the model `data` (bytes), or None; see `read_metadata`."""
    from edgert.metadata import _schema as md
    from edgert.tflite.flatbuffer import parse

    flat = parse(data, source)
    index = next((buf for name, buf in flat.metadata if name == METADATA_NAME), None)
    if index is None:
        return None
    raw = flat.buffer(data, index)
    if len(raw) < 8 or raw[4:8] != METADATA_IDENTIFIER:
        raise ModelFormatError(f"{source}: its {METADATA_NAME} buffer is not TFLite metadata (identifier "
                               f"{bytes(raw[4:8])!r}, expected {METADATA_IDENTIFIER!r})")
    try:
        root = md.ModelMetadataT.InitFromPackedBuf(bytearray(raw), 0)
    except Exception as exc:  # flatbuffers raises struct.error, IndexError, ... on a damaged table
        raise ModelFormatError(f"{source}: its {METADATA_NAME} buffer is damaged ({type(exc).__name__})") from None
    packed, labels = _packed_files(data)
    file_types = {v: k for k, v in vars(md.AssociatedFileType).items() if not k.startswith("_")}

    def files(items) -> tuple[tuple[str, str], ...]:
        return tuple((_text(f.name), file_types.get(f.type, str(f.type))) for f in (items or []))

    def tensor(t) -> TensorMetadata:
        content, color = "", ""
        if t.content is not None:
            kind = t.content.contentPropertiesType
            content = {md.ContentProperties.ImageProperties: "image",
                       md.ContentProperties.FeatureProperties: "feature",
                       md.ContentProperties.BoundingBoxProperties: "bounding_box"}.get(kind, "")
            if kind == md.ContentProperties.ImageProperties and t.content.contentProperties is not None:
                color = {md.ColorSpaceType.RGB: "RGB", md.ColorSpaceType.GRAYSCALE: "GRAYSCALE"}.get(
                    t.content.contentProperties.colorSpace, "")
        mean = std = ()
        for unit in t.processUnits or []:
            if unit.optionsType == md.ProcessUnitOptions.NormalizationOptions and unit.options is not None:
                mean = tuple(float(v) for v in (unit.options.mean if unit.options.mean is not None else []))
                std = tuple(float(v) for v in (unit.options.std if unit.options.std is not None else []))
        stats = t.stats
        return TensorMetadata(
            _text(t.name), _text(t.description), content, color, mean, std,
            tuple(float(v) for v in (stats.min if stats is not None and stats.min is not None else [])),
            tuple(float(v) for v in (stats.max if stats is not None and stats.max is not None else [])),
            files(t.associatedFiles))

    graph = root.subgraphMetadata[0] if root.subgraphMetadata else None
    inputs = tuple(tensor(t) for t in (graph.inputTensorMetadata or [])) if graph else ()
    outputs = tuple(tensor(t) for t in (graph.outputTensorMetadata or [])) if graph else ()
    label_file = next((name for t in inputs + outputs for name, kind in t.associated_files
                       if kind in ("TENSOR_AXIS_LABELS", "TENSOR_VALUE_LABELS")), None)
    image_task = None
    for custom in (graph.customMetadata or []) if graph else []:
        if _text(custom.name) == IMAGE_TASK_NAME and custom.data is not None:
            import json

            try:
                image_task = json.loads(bytes(bytearray(custom.data)).decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                image_task = None  # another tool's or a damaged record: the outputs' layout decides instead
            if not isinstance(image_task, dict):
                image_task = None
    return ModelMetadata(
        _text(root.name), _text(root.description), _text(root.version), _text(root.author), _text(root.license),
        _text(root.minParserVersion), inputs, outputs, files(root.associatedFiles), tuple(packed),
        labels.get(label_file) if label_file else None, image_task)


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _packed_files(data: bytes) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """Names in the zip section after the flatbuffer, and the text files' lines."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            labels = {}
            for name in names:
                try:
                    text = archive.read(name).decode("utf-8")
                except (UnicodeDecodeError, zipfile.BadZipFile, KeyError, OSError):
                    continue
                labels[name] = tuple(line.strip() for line in text.rstrip("\n").split("\n"))
            return names, labels
    except zipfile.BadZipFile:
        return [], {}


def labels_file_bytes(model_path: str | os.PathLike, name: str) -> bytes:
    """The exact bytes of a file packed after the model (what the Support Library extracts).

    Raises:
        MetadataError: no such file is packed.
    """
    data = Path(model_path).read_bytes()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.read(name)
    except (zipfile.BadZipFile, KeyError):
        raise MetadataError(f"{model_path} has no packed file {name!r}") from None
