"""What a .tflite flatbuffer says, as records: the schema's constants and the NamedTuples that the reader
(`edgert.tflite.flatbuffer`) builds and its checks (`edgert.tflite.checks`) read, so neither imports the other for
them."""

from __future__ import annotations

import os
from typing import NamedTuple

from edgert.errors import ModelFormatError

FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3
CUSTOM_OPCODE = 32  # BuiltinOperator.CUSTOM

# TensorType enum of schema.fbs -> numpy dtype name.
TENSOR_TYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
    8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64", 13: "resource", 14: "variant",
    15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16", 19: "int2",
}

# Bytes per element of the fixed-size types; the others (string, int4, resources...) are not size-checked.
ITEM_BYTES = {"float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "bool": 1, "int16": 2,
              "complex64": 8, "int8": 1, "float64": 8, "complex128": 16, "uint64": 8, "uint32": 4, "uint16": 2,
              "bfloat16": 2}


def max_tensor_bytes() -> int:
    """The largest tensor a model may declare: `EDGERT_MAX_TENSOR_BYTES`, else this machine's physical memory."""
    raw = os.environ.get("EDGERT_MAX_TENSOR_BYTES", "").strip()
    if raw:
        try:
            return int(float(raw))
        except ValueError:
            raise ModelFormatError(f"EDGERT_MAX_TENSOR_BYTES={raw!r} is not a number of bytes") from None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 1 << 40


def size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"

ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
SAME, VALID = 0, 1  # schema.fbs Padding
POINTER_BYTES = 8

# The most dimensions a TFLite kernel handles (e.g. BROADCAST_TO, the widest); XNNPACK stops at 6.
MAX_RANK = 8
SUBGRAPH_OPTIONS = ("then_subgraph", "else_subgraph", "cond_subgraph", "body_subgraph", "init_subgraph")


# The records below are NamedTuples rather than frozen dataclasses: a frozen dataclass costs about 0.6 ms to create
# at import, a NamedTuple 0.08 ms, and every `edgert run` imports them (start-up is a target, benchmarks/startup.py).


class Quantization(NamedTuple):
    """Affine quantization of one tensor: real = scale * (q - zero_point), per tensor or per channel."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    quantized_dimension: int = 0

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1


class TensorInfo(NamedTuple):
    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: str
    buffer: int
    quantization: Quantization | None
    sparse: bool


class OperatorInfo(NamedTuple):
    opcode: str
    custom: bool
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: tuple[tuple[str, int], ...] = ()  # the builtin options delegates care about (see _OPTION_FIELDS)

    def option(self, name: str, default: int = 0) -> int:
        return dict(self.options).get(name, default)


class SubgraphInfo(NamedTuple):
    name: str
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    operators: tuple[OperatorInfo, ...]


class SignatureInfo(NamedTuple):
    """One SignatureDef: the names its author gave a subgraph's inputs and outputs, as (name, tensor index)."""

    key: str
    subgraph: int
    inputs: tuple[tuple[str, int], ...]
    outputs: tuple[tuple[str, int], ...]


class FlatModel(NamedTuple):
    """What the flatbuffer says, after validation."""

    version: int
    description: str
    subgraphs: tuple[SubgraphInfo, ...]
    buffer_sizes: tuple[int, ...]
    metadata: tuple[tuple[str, int], ...]  # (name, buffer index)
    buffer_offsets: tuple[int, ...] = ()  # where each buffer's bytes start in the file
    signatures: tuple[SignatureInfo, ...] = ()

    def main_signature(self) -> SignatureInfo | None:
        """The signature of the main subgraph that a user addresses: `serving_default` where there is one, else the
        first that runs subgraph 0."""
        mains = [s for s in self.signatures if s.subgraph == 0]
        return next((s for s in mains if s.key == "serving_default"), mains[0] if mains else None)

    def signature_names(self) -> dict[int, str]:
        """Main-subgraph input and output tensor index -> its signature name (only tensors the signature names,
        each name once: a file whose signature repeats a name keeps tensor names for those)."""
        sig = self.main_signature()
        if sig is None:
            return {}
        main = self.subgraphs[0]
        names: dict[int, str] = {}
        for entries, allowed in ((sig.inputs, set(main.inputs)), (sig.outputs, set(main.outputs))):
            counts: dict[str, int] = {}
            for name, _ in entries:
                counts[name] = counts.get(name, 0) + 1
            for name, index in entries:
                if name and counts[name] == 1 and index in allowed:
                    names[index] = name
        return names

    def buffer(self, data: bytes, index: int) -> bytes:
        """The bytes of buffer `index` (weights, metadata) of the model `data` this was parsed from."""
        start = self.buffer_offsets[index]
        return bytes(data[start:start + self.buffer_sizes[index]])
