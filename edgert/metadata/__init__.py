"""TFLite Metadata: what a model says about itself (task, labels, normalisation), read and written.

- `records`: the constants and records reading and writing share;
- `reader`: `read_metadata`, for the runtime and the picture tasks (below `edgert.tasks`);
- `writer`: `write_metadata` and the checks of a model against its task (it asks `edgert.tasks.boxes` which
  detector head a model has, so it sits above the tasks);
- `_schema`: flatc's output for metadata_schema.fbs, as tflite-support ships it.

The names below are this package's face; each loads its module on first use (PEP 562), so reading metadata never
loads the writer.
"""

_FACE = {
    "reader": ("read_metadata", "decode_metadata", "labels_file_bytes"),
    "records": ("CUSTOM_METADATA_PARSER_VERSION", "IMAGE_TASK_NAME", "LABELS_DESCRIPTION", "METADATA_IDENTIFIER",
                "METADATA_NAME", "MIN_PARSER_VERSION", "TASKS", "ModelMetadata", "TensorMetadata"),
    "writer": ("MetadataSpec", "InputNormalization", "build_metadata", "detection_roles", "embed", "parse_floats",
               "plan_normalization", "read_labels", "write_metadata"),
}
_LAZY = {name: module for module, names in _FACE.items() for name in names}


def __getattr__(name: str):
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = sorted(_LAZY)
