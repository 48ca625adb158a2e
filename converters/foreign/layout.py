"""Channel-first (PyTorch's and ONNX's NCHW) against channel-last (TFLite's NHWC) tensors: which layout a `.tflite`
takes, and arrays moved between the two for the user."""

from __future__ import annotations

import numpy as np

NCHW, NHWC = "nchw", "nhwc"
LAYOUTS = (NCHW, NHWC)

# Batch included: a channel-first tensor of rank 3, 4 or 5 (NCW, NCHW, NCDHW) to channel-last, and back.
_TO_LAST = {3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}


def transposable(rank: int) -> bool:
    """Whether a tensor of this rank (batch included) has a channel-first and a channel-last form."""
    return rank in _TO_LAST


def to_last_perm(rank: int) -> tuple[int, ...]:
    return _TO_LAST[rank]


def to_first_perm(rank: int) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(_TO_LAST[rank]))


def last_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The channel-last form of a channel-first shape (batch included)."""
    return tuple(shape[i] for i in _TO_LAST[len(shape)])


def to_last(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(_TO_LAST[a.ndim]))


def to_first(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a.transpose(to_first_perm(a.ndim)))


def moved(source_shape: tuple[int, ...], model_shape: tuple[int, ...]) -> bool:
    """Whether a tensor of `source_shape` in the source (channel-first) takes `model_shape` in the `.tflite` as
    its channel-last form: shapes batch included; a shape equal both ways counts as unmoved."""
    return (tuple(source_shape) != tuple(model_shape) and transposable(len(source_shape))
            and last_shape(tuple(source_shape)) == tuple(model_shape))


def describe(name: str, source_shape, model_shape) -> str:
    """`image (1, 64, 64, 3) NHWC, the source's (1, 3, 64, 64) NCHW` or `image (1, 8)`."""
    if moved(source_shape, model_shape):
        return (f"{name} {tuple(model_shape)} channel-last, the source's {tuple(source_shape)} channel-first")
    return f"{name} {tuple(model_shape)}"


# The .tflite's record of the inputs it takes channel-last where the source took them channel-first, so that the
# runtime can transpose arrays given in the source's layout (edgert.runtime.arrays.to_model_layout).
METADATA_NAME = "edgert_source_layout"


def with_source_layout(flatbuffer: bytes, channel_first_inputs: list[str]) -> bytes:
    """The flatbuffer with a metadata entry naming the inputs the source took channel-first (TensorFlow's
    flatbuffer object API: every other field carried over)."""
    import json

    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps({"channel_first_inputs": channel_first_inputs}).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))



def wanted(rank: int, layout: str) -> bool:
    """Whether a source tensor of this rank (batch included) is channel-last in the .tflite, for `--layout`."""
    return layout == NHWC and rank == 4


def layout_lines(names, source_shapes, model_shapes) -> tuple[str, ...]:
    """One line per tensor: its shape in the .tflite and the source's (`describe`)."""
    return tuple(describe(n, s, m) for n, s, m in zip(names, source_shapes, model_shapes))


def per_sample(run, arrays) -> dict[str, np.ndarray]:
    """A source run one sample at a time (a file exported with batch 1 takes no other), outputs concatenated."""
    results = [run([a[i:i + 1] for a in arrays]) for i in range(len(arrays[0]))]
    return {k: np.concatenate([r[k] for r in results]) for k in results[0]}
