"""Typed descriptions of a TFLite model read from its flatbuffer alone: tensors, operators, size."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass

from edgert.errors import ModelFormatError
from edgert.tflite import flatbuffer
from edgert.tflite.records import FlatModel, SubgraphInfo, TensorInfo


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: what `Model.run` expects or returns before (de)quantization.

    `name` is the name the model's author gave it, from the `.tflite` signature (`image`, `box`); `tensor_name` is
    the converter's internal tensor name (`serving_default_image:0`, `StatefulPartitionedCall:1`), accepted as an
    alias. A file without a signature has only tensor names, and then both are the same.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    index: int
    shape_signature: tuple[int, ...] = ()
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0
    tensor_name: str = ""

    def __post_init__(self):
        if not self.tensor_name:
            object.__setattr__(self, "tensor_name", self.name)

    @property
    def quantized(self) -> bool:
        """True when the tensor holds integers that stand for real values (`scale` is set and non-zero); a float
        tensor's quantization parameters, if a file carries any, mean nothing to the kernels."""
        return bool(self.scale) and any(s != 0 for s in self.scale) and self.dtype.startswith(("int", "uint"))

    def real_range(self) -> tuple[float, float] | None:
        """The real values an integer input's levels stand for (its lowest and highest level through its scale and
        zero point), or None for a float or unquantized tensor."""
        bits = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}.get(self.dtype)
        if not self.quantized or bits is None:
            return None
        scale, zero = self.scale[0], self.zero_point[0]
        return (bits[0] - zero) * scale, (bits[1] - zero) * scale

    @property
    def dynamic_dims(self) -> tuple[int, ...]:
        """Positions of dimensions the model declares as unknown (-1 in its shape signature)."""
        return tuple(i for i, d in enumerate(self.shape_signature) if d < 0)

    def describe_quantization(self) -> str:
        if not self.quantized:
            return "-"
        if len(self.scale) == 1:
            return f"scale={self.scale[0]:.6g} zero_point={self.zero_point[0]}"
        return f"per-channel ({len(self.scale)} scales, axis {self.quantized_dimension})"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["quantized"] = self.quantized
        return d

    @classmethod
    def from_flat(cls, t: TensorInfo, name: str | None = None) -> TensorSpec:
        """`name`: the tensor's signature name, where the file's signature gives it one."""
        q = t.quantization
        return cls(name or t.name, t.shape, t.dtype, t.index, t.shape_signature,
                   q.scale if q else (), q.zero_point if q else (), q.quantized_dimension if q else 0, t.name)


@dataclass(frozen=True)
class ModelInfo:
    """A validated model's structure: what `edgert inspect` prints."""

    path: str
    size_bytes: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    operators: tuple[tuple[str, int], ...]  # (op name, count), most frequent first
    custom_operators: tuple[str, ...]
    tensor_count: int
    subgraph_count: int
    schema_version: int
    description: str
    metadata: tuple[str, ...]
    quantization: str  # float32, float16 weights, dynamic range, full integer, int16x8
    signature: str = ""  # the signature whose names `inputs` and `outputs` carry; "" for a file without one

    @property
    def operator_count(self) -> int:
        return sum(n for _, n in self.operators)

    def to_dict(self) -> dict:
        return {
            "path": self.path, "size_bytes": self.size_bytes, "quantization": self.quantization,
            "inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs],
            "operators": dict(self.operators), "operator_count": self.operator_count,
            "custom_operators": list(self.custom_operators), "tensor_count": self.tensor_count,
            "subgraph_count": self.subgraph_count, "schema_version": self.schema_version,
            "description": self.description, "metadata": list(self.metadata), "signature": self.signature or None,
        }


def read_model_bytes(path: str | os.PathLike) -> bytes:
    """Read a model file with errors that say what to do.

    Raises:
        ModelFormatError: the path is missing, a directory, or unreadable.
    """
    p = os.fspath(path)  # os.path, not pathlib: `edgert run` on a board does not pay for pathlib's import
    if not os.path.exists(p):
        raise ModelFormatError(f"{p}: no such file")
    if os.path.isdir(p):
        raise ModelFormatError(f"{p} is a directory; give the path of a .tflite file")
    try:
        with open(p, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ModelFormatError(f"{p}: cannot read ({exc.strerror})") from None


def describe(data: bytes, source: str = "model", flat: FlatModel | None = None) -> ModelInfo:
    """Validate model bytes and describe them (the main subgraph's inputs and outputs).

    `flat` is `flatbuffer.parse(data)` when the caller has already validated the bytes, so they are read once.
    """
    fm = flat if flat is not None else flatbuffer.parse(data, source)
    main = fm.subgraphs[0]
    ops = Counter(op.opcode for sg in fm.subgraphs for op in sg.operators)
    custom = sorted({op.opcode for sg in fm.subgraphs for op in sg.operators if op.custom})
    tensors = [t for sg in fm.subgraphs for t in sg.tensors]
    weight_types = {t.dtype for t in tensors if fm.buffer_sizes[t.buffer] > 0}
    names = fm.signature_names()
    return ModelInfo(
        path=source, size_bytes=len(data),
        inputs=tuple(TensorSpec.from_flat(main.tensors[i], names.get(i)) for i in main.inputs),
        outputs=tuple(TensorSpec.from_flat(main.tensors[i], names.get(i)) for i in main.outputs),
        operators=tuple(ops.most_common()), custom_operators=tuple(custom),
        tensor_count=len(tensors), subgraph_count=len(fm.subgraphs), schema_version=fm.version,
        description=fm.description, metadata=tuple(name for name, _ in fm.metadata),
        quantization=_quantization_mode(main, weight_types),
        signature=(fm.main_signature().key or "(unnamed)") if names else "",
    )


def _quantization_mode(main: SubgraphInfo, weight_types: set[str]) -> str:
    io = {main.tensors[i].dtype for i in main.inputs + main.outputs}
    activations = {t.dtype for op in main.operators for i in op.outputs for t in (main.tensors[i],)}
    if "int16" in activations and "int8" in weight_types:
        return "int16x8"
    if io & {"int8", "uint8"}:
        return "full integer (int8)"
    if "int8" in activations:
        return "full integer (int8), float I/O"
    if "float16" in weight_types:
        return "float16 weights"
    if "int8" in weight_types:
        return "dynamic range (int8 weights)"
    return "float32"


def inspect_model(path: str | os.PathLike) -> ModelInfo:
    """Describe the `.tflite` file at `path` without running it (no interpreter, no delegate).

    Raises:
        ModelFormatError: the file is missing or is not a valid TFLite model.
    """
    return describe(read_model_bytes(path), str(path))
