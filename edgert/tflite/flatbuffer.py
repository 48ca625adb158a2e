"""A bounds-checked reader of the TFLite flatbuffer that validates a model before any native code sees it.

The interpreter's own loader trusts offsets inside the file, so a truncated or corrupt model can crash the
process. This reader follows every offset the schema defines with bounds checks, checks every index against the
table it points into, and raises `ModelFormatError` on the first inconsistency. Field numbers follow
`tensorflow/compiler/mlir/lite/schema/schema.fbs` (Model, SubGraph, Tensor, Operator, OperatorCode, Buffer).
"""

from __future__ import annotations

import math
import struct

from edgert.errors import ModelFormatError
from edgert.tflite.records import (
    CUSTOM_OPCODE,
    FILE_IDENTIFIER,
    ITEM_BYTES,
    MAX_RANK,
    SCHEMA_VERSION,
    TENSOR_TYPES,
    FlatModel,
    OperatorInfo,
    Quantization,
    SignatureInfo,
    SubgraphInfo,
    TensorInfo,
    max_tensor_bytes,
    size_text,
)

_U8, _U16, _I32, _U32, _I64, _U64 = (struct.Struct(f) for f in ("<B", "<H", "<i", "<I", "<q", "<Q"))


class _Reader:
    """Raw little-endian reads that never leave the buffer."""

    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)

    def read(self, fmt: struct.Struct, pos: int, what: str):
        if pos < 0 or pos + fmt.size > self.size:
            raise ModelFormatError(f"{what} points outside the file (offset {pos}, file size {self.size})")
        return fmt.unpack_from(self.data, pos)[0]

    def table(self, pos: int, what: str) -> _Table:
        return _Table(self, pos, what)


class _Table:
    """One flatbuffer table: a position plus its vtable, with checked field access."""

    def __init__(self, reader: _Reader, pos: int, what: str):
        self.r, self.pos, self.what = reader, pos, what
        vtable = pos - reader.read(_I32, pos, what)
        self.vt_len = reader.read(_U16, vtable, f"{what} vtable")
        self.obj_len = reader.read(_U16, vtable + 2, f"{what} vtable")
        if self.vt_len < 4 or self.vt_len % 2 or vtable + self.vt_len > reader.size:
            raise ModelFormatError(f"{what} has a corrupt vtable")
        if self.obj_len < 4 or pos + self.obj_len > reader.size:
            raise ModelFormatError(f"{what} extends past the end of the file")
        self.vtable = vtable

    def _field(self, index: int) -> int | None:
        slot = 4 + 2 * index
        if slot + 2 > self.vt_len:
            return None
        off = self.r.read(_U16, self.vtable + slot, self.what)
        if off == 0:
            return None
        if off >= self.obj_len:
            raise ModelFormatError(f"{self.what} field {index} lies outside its table")
        return self.pos + off

    def scalar(self, index: int, fmt: struct.Struct, default):
        pos = self._field(index)
        return default if pos is None else self.r.read(fmt, pos, f"{self.what} field {index}")

    def _indirect(self, index: int) -> int | None:
        pos = self._field(index)
        return None if pos is None else pos + self.r.read(_U32, pos, f"{self.what} field {index}")

    def table(self, index: int, what: str) -> _Table | None:
        pos = self._indirect(index)
        return None if pos is None else self.r.table(pos, what)

    def _vector(self, index: int, elem_size: int, what: str) -> tuple[int, int]:
        pos = self._indirect(index)
        if pos is None:
            return 0, 0
        length = self.r.read(_U32, pos, what)
        start = pos + 4
        if start + length * elem_size > self.r.size:
            raise ModelFormatError(f"{what} declares {length} elements, more than the file holds")
        return start, length

    def scalars(self, index: int, code: str, what: str) -> tuple:
        fmt = struct.Struct("<" + code)
        start, length = self._vector(index, fmt.size, what)
        if not length:
            return ()
        return struct.unpack_from(f"<{length}{code}", self.r.data, start)

    def byte_span(self, index: int, what: str) -> tuple[int, int]:
        """(start, length) of a [ubyte] vector, without copying it."""
        return self._vector(index, 1, what)

    def string(self, index: int, what: str) -> str:
        start, length = self._vector(index, 1, what)
        try:
            return bytes(self.r.data[start:start + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFormatError(f"{what} is not valid UTF-8 (corrupt file?)") from None

    def tables(self, index: int, what: str) -> list[_Table]:
        start, length = self._vector(index, 4, what)
        return [self.r.table(start + 4 * i + self.r.read(_U32, start + 4 * i, what), f"{what}[{i}]")
                for i in range(length)]


# Builtin option tables whose fields decide delegate support: union type -> ((name, field index, format, default)).
# Field numbers follow schema.fbs (Conv2DOptions, DepthwiseConv2DOptions, Pool2DOptions, ...).
_OPTION_FIELDS: dict[int, tuple[tuple[str, int, str, int], ...]] = {
    1: (("padding", 0, "B", 0), ("stride_w", 1, "i", 0), ("stride_h", 2, "i", 0), ("activation", 3, "B", 0),
        ("dilation_w", 4, "i", 1), ("dilation_h", 5, "i", 1)),                       # Conv2DOptions
    2: (("padding", 0, "B", 0), ("stride_w", 1, "i", 0), ("stride_h", 2, "i", 0), ("depth_multiplier", 3, "i", 0),
        ("activation", 4, "B", 0), ("dilation_w", 5, "i", 1), ("dilation_h", 6, "i", 1)),  # DepthwiseConv2DOptions
    5: (("padding", 0, "B", 0), ("stride_w", 1, "i", 0), ("stride_h", 2, "i", 0), ("filter_w", 3, "i", 0),
        ("filter_h", 4, "i", 0), ("activation", 5, "B", 0)),                          # Pool2DOptions
    8: (("activation", 0, "B", 0), ("weights_format", 1, "B", 0), ("keep_num_dims", 2, "B", 0)),  # FullyConnected
    10: (("axis", 0, "i", 0), ("activation", 1, "B", 0)),                             # ConcatenationOptions
    11: (("activation", 0, "B", 0),),  # AddOptions
    21: (("activation", 0, "B", 0),),  # MulOptions
    28: (("activation", 0, "B", 0),),  # SubOptions
    29: (("activation", 0, "B", 0),),  # DivOptions
    # Control flow: which subgraphs an operator runs (checked for range and cycles after all are read).
    92: (("then_subgraph", 0, "i", 0), ("else_subgraph", 1, "i", 0)),                # IfOptions
    93: (("cond_subgraph", 0, "i", 0), ("body_subgraph", 1, "i", 0)),                # WhileOptions
    103: (("init_subgraph", 0, "i", 0),),                                             # CallOnceOptions
}
_FORMATS = {"i": _I32, "B": _U8}


def _builtin_names() -> dict[int, str]:
    from edgert.tflite._builtin_operators import BuiltinOperator  # carried with edgert: no interpreter package needed

    return {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


_NAMES: dict[int, str] | None = None


def builtin_name(code: int) -> str:
    global _NAMES
    if _NAMES is None:
        _NAMES = _builtin_names()
    return _NAMES.get(code, f"BUILTIN_{code}")


def check_batch(flat: FlatModel, batch: int, source: str = "model") -> None:
    """Refuse running the main subgraph at `batch` when some tensor whose batch dimension is dynamic (-1 in its
    signature) would then be over the limit.

    Delegates such as XNNPACK size their activations internally, so the interpreter's own tensor list does not
    show them; the signature says which tensors follow the batch.

    Raises:
        ModelFormatError: a tensor would exceed `max_tensor_bytes()` at that batch.
    """
    limit = max_tensor_bytes()
    for t in flat.subgraphs[0].tensors if flat.subgraphs else ():
        if t.dtype not in ITEM_BYTES or not t.shape_signature or t.shape_signature[0] != -1 or not t.shape:
            continue
        nbytes = batch * math.prod(t.shape[1:]) * ITEM_BYTES[t.dtype]
        if nbytes > limit:
            raise ModelFormatError(
                f"{source}: tensor {t.index} ({t.name or 'unnamed'}) needs {size_text(nbytes)} at batch {batch} "
                f"([{batch}, {', '.join(map(str, t.shape[1:]))}] {t.dtype}), over the limit of {size_text(limit)} "
                "(this machine's memory, or EDGERT_MAX_TENSOR_BYTES); use a smaller batch")


def parse(data: bytes, source: str = "model") -> FlatModel:
    """Validate a TFLite flatbuffer and return its structure.

    Raises:
        ModelFormatError: the bytes are not a complete, self-consistent TFLite model.
    """
    try:
        return _parse(data, source)
    except ModelFormatError as exc:
        if str(exc).startswith(source):
            raise
        # A low-level read failed (an offset or a length past the end): name the file.
        raise ModelFormatError(f"{source} is truncated or corrupt: {exc}") from None


def _parse(data: bytes, source: str) -> FlatModel:
    from edgert.tflite.checks import check_dataflow, check_operator, check_subgraph_calls

    if len(data) < 8:
        raise ModelFormatError(f"{source} is not a TFLite model: {len(data)} bytes is too short")
    if data[4:8] != FILE_IDENTIFIER:
        raise ModelFormatError(
            f"{source} is not a TFLite model: file identifier {bytes(data[4:8])!r}, expected {FILE_IDENTIFIER!r}")
    limit = max_tensor_bytes()
    r = _Reader(data)
    model = r.table(r.read(_U32, 0, "root offset"), "model")
    version = model.scalar(0, _U32, 0)
    if version != SCHEMA_VERSION:
        raise ModelFormatError(f"{source} has schema version {version}; edgert reads version {SCHEMA_VERSION}")

    buffer_sizes, buffer_offsets = [], []
    for i, buf in enumerate(model.tables(4, "buffers")):
        start, length = buf.byte_span(0, f"buffer {i} data")
        offset, size = buf.scalar(1, _U64, 0), buf.scalar(2, _U64, 0)
        if offset > 1:  # models over 2 GB keep buffers after the flatbuffer, addressed by offset
            if offset + size > r.size:
                raise ModelFormatError(f"{source}: buffer {i} ends past the end of the file (truncated?)")
            start, length = offset, size
        buffer_sizes.append(length)
        buffer_offsets.append(start)

    opcodes = []
    for i, oc in enumerate(model.tables(1, "operator_codes")):
        code = max(oc.scalar(0, _U8, 0), oc.scalar(3, _I32, 0))
        if code == CUSTOM_OPCODE:
            opcodes.append((oc.string(1, f"operator code {i} custom name") or "<unnamed custom op>", True))
        else:
            opcodes.append((builtin_name(code), False))

    subgraphs = []
    raw_subgraphs = model.tables(2, "subgraphs")
    if not raw_subgraphs:
        raise ModelFormatError(f"{source} has no subgraph")
    for g, sg in enumerate(raw_subgraphs):
        where = f"subgraph {g}"
        tensors = []
        variables: set[int] = set()
        for t, tt in enumerate(sg.tables(0, f"{where} tensors")):
            shape = tt.scalars(0, "i", f"{where} tensor {t} shape")
            signature = tt.scalars(7, "i", f"{where} tensor {t} shape_signature") or shape
            type_code = tt.scalar(1, _U8, 0)
            buffer = tt.scalar(2, _U32, 0)
            if type_code not in TENSOR_TYPES:
                raise ModelFormatError(f"{source}: {where} tensor {t} has unknown type {type_code}")
            if any(d < 0 for d in shape):
                raise ModelFormatError(f"{source}: {where} tensor {t} has a negative dimension {shape}")
            if len(shape) > MAX_RANK:
                raise ModelFormatError(f"{source}: {where} tensor {t} has {len(shape)} dimensions; TFLite tensors "
                                       f"have at most {MAX_RANK}")
            if buffer >= len(buffer_sizes):
                raise ModelFormatError(f"{source}: {where} tensor {t} refers to missing buffer {buffer}")
            dtype = TENSOR_TYPES[type_code]
            sparse = tt.table(6, "sparsity") is not None
            if tt.scalar(5, _U8, 0):  # is_variable: state that stateful kernels keep between runs
                variables.add(t)
            if dtype in ITEM_BYTES:
                nbytes = math.prod(shape) * ITEM_BYTES[dtype]
                if nbytes > limit:
                    raise ModelFormatError(
                        f"{source}: {where} tensor {t} declares shape {list(shape)} {dtype}, {size_text(nbytes)}, "
                        f"over the limit of {size_text(limit)} (this machine's memory, or EDGERT_MAX_TENSOR_BYTES)")
                stored = buffer_sizes[buffer]
                if stored and not sparse and stored != nbytes:
                    raise ModelFormatError(
                        f"{source}: {where} tensor {t} declares shape {list(shape)} {dtype} ({nbytes} bytes) but its "
                        f"buffer {buffer} holds {stored} bytes (corrupt file?)")
            # The signature repeats the shape with -1 where a dimension is unknown. XNNPACK plans from the stored
            # shape, so a file where they disagree can corrupt memory in the delegate (found by fuzzing).
            if len(signature) != len(shape) or any(s < -1 or (s != -1 and s != d) for s, d in zip(signature, shape)):
                raise ModelFormatError(f"{source}: {where} tensor {t} declares shape {list(shape)} but its shape "
                                       f"signature is {list(signature)} (corrupt file?)")
            q = tt.table(4, f"{where} tensor {t} quantization")
            quant = None
            if q is not None:
                scale = q.scalars(2, "f", "quantization scale")
                zero_point = q.scalars(3, "q", "quantization zero_point")
                if scale:
                    quant = Quantization(tuple(scale), tuple(zero_point) or (0,) * len(scale), q.scalar(6, _I32, 0))
            tensors.append(TensorInfo(t, tt.string(3, f"{where} tensor {t} name") or "", tuple(shape),
                                      tuple(signature), dtype, buffer, quant, sparse))
        n = len(tensors)

        def indices(values, what, optional=False):
            low = -1 if optional else 0
            for v in values:
                if not low <= v < n:
                    raise ModelFormatError(f"{source}: {where} {what} refers to tensor {v}, but it has {n}")
            return tuple(values)

        operators = []
        for o, op in enumerate(sg.tables(3, f"{where} operators")):
            idx = op.scalar(0, _U32, 0)
            if idx >= len(opcodes):
                raise ModelFormatError(f"{source}: {where} operator {o} uses missing operator code {idx}")
            name, custom = opcodes[idx]
            options = ()
            options_type = op.scalar(3, _U8, 0)  # builtin_options_type; the union value is field 4
            fields = _OPTION_FIELDS.get(options_type)
            table = op.table(4, f"{where} operator {o} options") if fields else None
            if table is not None:
                options = tuple((key, table.scalar(i, _FORMATS[fmt], default)) for key, i, fmt, default in fields)
            inputs = op.scalars(1, "i", f"operator {o} inputs")
            outputs = op.scalars(2, "i", f"operator {o} outputs")
            check_operator(source, where, o, name, custom, options_type, inputs, outputs, tensors, buffer_sizes,
                            dict(options))
            operators.append(OperatorInfo(
                name, custom, indices(inputs, f"operator {o} input", optional=True),
                indices(outputs, f"operator {o} output", optional=True), options))
        info = SubgraphInfo(sg.string(4, f"{where} name") or "", tuple(tensors),
                            indices(sg.scalars(1, "i", f"{where} inputs"), "input"),
                            indices(sg.scalars(2, "i", f"{where} outputs"), "output"), tuple(operators))
        check_dataflow(source, where, info, buffer_sizes, variables)
        subgraphs.append(info)

    check_subgraph_calls(source, subgraphs)
    metadata = []
    for i, md in enumerate(model.tables(6, "metadata")):
        buffer = md.scalar(1, _U32, 0)
        if buffer >= len(buffer_sizes):
            raise ModelFormatError(f"{source}: metadata {i} refers to missing buffer {buffer}")
        metadata.append((md.string(0, f"metadata {i} name") or "", buffer))

    signatures = []
    for i, sd in enumerate(model.tables(7, "signature_defs")):
        where = f"signature {i}"
        graph = sd.scalar(4, _U32, 0)
        if graph >= len(subgraphs):
            raise ModelFormatError(f"{source}: {where} refers to missing subgraph {graph}")
        n = len(subgraphs[graph].tensors)
        maps = []
        for field, what in ((0, "input"), (1, "output")):
            entries = []
            for tm in sd.tables(field, f"{where} {what}s"):
                index = tm.scalar(1, _U32, 0)
                if index >= n:
                    raise ModelFormatError(f"{source}: {where} {what} refers to tensor {index}, but subgraph {graph} "
                                           f"has {n}")
                entries.append((tm.string(0, f"{where} {what} name") or "", index))
            maps.append(tuple(entries))
        signatures.append(SignatureInfo(sd.string(2, f"{where} key") or "", graph, maps[0], maps[1]))

    return FlatModel(version, model.string(3, "description") or "", tuple(subgraphs), tuple(buffer_sizes),
                     tuple(metadata), tuple(buffer_offsets), tuple(signatures))
