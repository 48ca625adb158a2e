"""What TFLite Metadata says, as records: the constants and the dataclasses that `edgert.metadata.writer` (writing) and
`edgert.metadata.reader` (reading) share, so neither imports the other to get them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
TASKS = ("classification", "detection", "segmentation", "generic")
# The oldest metadata parser that reads every field edgert writes (tflite-support's
# GetMinimumMetadataParserVersion gives this for these fields; tests/test_metadata.py checks it when it can).
MIN_PARSER_VERSION = "1.0.0"
# The picture task edgert records for `edgert run --image` (task, a detector's output layout, letterbox, BGR), as
# JSON in a CustomMetadata of the subgraph, which parsers since 1.5.0 read (and older ones skip).
IMAGE_TASK_NAME = "edgert.image_task"
CUSTOM_METADATA_PARSER_VERSION = "1.5.0"
LABELS_DESCRIPTION = "Labels for the classes the model recognises, one per line, in output order."


@dataclass(frozen=True)
class TensorMetadata:
    """What metadata says about one input or output tensor."""

    name: str
    description: str = ""
    content: str = ""  # "image", "feature", "bounding_box" or "" (none given)
    color_space: str = ""  # RGB, GRAYSCALE
    mean: tuple[float, ...] = ()  # NormalizationOptions: model input = (value - mean) / std
    std: tuple[float, ...] = ()
    min: tuple[float, ...] = ()  # Stats
    max: tuple[float, ...] = ()
    associated_files: tuple[tuple[str, str], ...] = ()  # (name, type)


@dataclass(frozen=True)
class ModelMetadata:
    """The metadata of a model: its descriptive fields, per-tensor metadata, and the files packed with it."""

    name: str
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    min_parser_version: str = ""
    inputs: tuple[TensorMetadata, ...] = ()
    outputs: tuple[TensorMetadata, ...] = ()
    associated_files: tuple[tuple[str, str], ...] = ()  # model-level (name, type)
    packed_files: tuple[str, ...] = ()  # the names in the zip section after the flatbuffer
    labels: tuple[str, ...] | None = None  # the first label file's lines, if one is packed
    image_task: dict | None = None  # what edgert recorded for pictures (IMAGE_TASK_NAME): task, layout, ...

    def to_dict(self) -> dict:
        return asdict(self)
