"""The bad-input catalogue: files a user (or an OTA update) might hand edgert, each with the one-line error it must
give. Generated from a real model, never committed as binaries:

    python tests/bad_inputs/make.py OUT_DIR --base model.tflite

`tests/test_bad_inputs.py` builds the catalogue in a temporary folder and checks every entry through the CLI.
"""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Entry:
    """One bad file: its name, what reads it (`model`: inspect and run; `keras`: convert; `array`: run --input and
    convert --calibration-data), how to make it from the base model's bytes, and the error it must give."""

    name: str
    kind: str
    make: Callable[[bytes], bytes]
    error: str  # a regular expression the one-line error must match


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # the same flatc output ships with TensorFlow (EDGERT_TEST_HIDE=ai_edge_litert runs)
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _edit(base: bytes, change: Callable) -> bytes:
    """Unpack the model with the schema's object API, let `change` edit it, pack it again."""
    import flatbuffers

    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(bytearray(base), 0)
    change(model, schema)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _call_once(model, schema, subgraph: int, target: int) -> None:
    code = schema.OperatorCodeT()
    code.builtinCode = schema.BuiltinOperator.CALL_ONCE
    code.deprecatedBuiltinCode = 127  # the placeholder for codes above 127
    code.version = 1
    model.operatorCodes.append(code)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = len(model.operatorCodes) - 1, [], []
    op.builtinOptionsType = schema.BuiltinOptions.CallOnceOptions
    op.builtinOptions = schema.CallOnceOptionsT()
    op.builtinOptions.initSubgraphIndex = target
    model.subgraphs[subgraph].operators = [op] + list(model.subgraphs[subgraph].operators or [])


def _self_call(model, schema) -> None:
    _call_once(model, schema, 0, 0)


def _two_cycle(model, schema) -> None:
    empty = schema.SubGraphT()
    empty.tensors, empty.inputs, empty.outputs, empty.operators, empty.name = [], [], [], [], "init"
    model.subgraphs.append(empty)
    _call_once(model, schema, 0, 1)
    _call_once(model, schema, 1, 0)


def _missing_subgraph(model, schema) -> None:
    _call_once(model, schema, 0, 7)


def _negative_index(model, _schema) -> None:
    op = model.subgraphs[0].operators[0]
    op.inputs = [-5] + list(op.inputs[1:])


def _read_before_written(model, _schema) -> None:
    second = model.subgraphs[0].operators[1]
    third = model.subgraphs[0].operators[2]
    second.inputs = [third.outputs[0]] + list(second.inputs[1:])  # reads what only a later operator writes


def _written_twice(model, _schema) -> None:
    ops = model.subgraphs[0].operators
    ops[2].outputs = [ops[1].outputs[0]]


def _huge_input(model, _schema) -> None:
    tensor = model.subgraphs[0].tensors[model.subgraphs[0].inputs[0]]
    tensor.shape = [1, 100_000, 100_000, 1]
    tensor.shapeSignature = [-1, 100_000, 100_000, 1]


def section_boundaries(base: bytes) -> list[int]:
    """Where each table (model, subgraphs, tensors, operators, operator codes, buffers, metadata) starts, and where
    each buffer's bytes start and end: truncating there cuts the file at a section boundary."""
    schema = _schema()
    model = schema.Model.GetRootAs(base, 0)
    cuts = {8, model._tab.Pos}
    for i in range(model.SubgraphsLength()):
        sg = model.Subgraphs(i)
        cuts.add(sg._tab.Pos)
        cuts.update(sg.Tensors(j)._tab.Pos for j in range(sg.TensorsLength()))
        cuts.update(sg.Operators(j)._tab.Pos for j in range(sg.OperatorsLength()))
    cuts.update(model.OperatorCodes(i)._tab.Pos for i in range(model.OperatorCodesLength()))
    cuts.update(model.Metadata(i)._tab.Pos for i in range(model.MetadataLength()))
    for i in range(model.BuffersLength()):
        buf = model.Buffers(i)
        cuts.add(buf._tab.Pos)
        if buf.DataLength():
            start = buf._tab.Vector(buf._tab.Offset(4))
            cuts.update((start, start + buf.DataLength()))
    return sorted(c for c in cuts if 0 < c < len(base))


def _hdf5_without_model_config(_base: bytes) -> bytes:
    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("weights", data=np.zeros((3, 3), np.float32))  # weights only, as save_weights() writes
    return buffer.getvalue()


def _keras_without_config(_base: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.10.0"}))
        z.writestr("model.weights.h5", b"")
    return buffer.getvalue()


def _object_npy(_base: bytes) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    return buffer.getvalue()


def _object_npz(_base: bytes) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array(["a", 1], dtype=object))
    return buffer.getvalue()


def catalogue(base: bytes) -> list[Entry]:
    """Every entry, made from `base` (a valid float .tflite with one input)."""
    wrong_id = bytearray(base)
    wrong_id[4:8] = b"XXXX"
    entries = [
        Entry("empty.tflite", "model", lambda b: b"", r"is not a TFLite model: 0 bytes is too short"),
        Entry("random-bytes.tflite", "model", lambda b: np.random.default_rng(7).bytes(4096),
              r"is not a TFLite model: file identifier .*, expected b'TFL3'"),
        Entry("wrong-identifier.tflite", "model", lambda b: bytes(wrong_id), r"file identifier b'XXXX'"),
        Entry("huge-tensor.tflite", "model", lambda b: _edit(b, _huge_input),
              r"declares shape \[1, 100000, 100000, 1\] float32, 37.3 GiB, over the limit"),
        Entry("negative-tensor-index.tflite", "model", lambda b: _edit(b, _negative_index),
              r"operator 0 input refers to tensor -5"),
        Entry("read-before-written.tflite", "model", lambda b: _edit(b, _read_before_written),
              r"operator 1 \(\w+\) reads tensor \d+, which no earlier operator writes"),
        Entry("written-twice.tflite", "model", lambda b: _edit(b, _written_twice),
              r"operator 2 \(\w+\) writes tensor \d+, which is another operator's output"),
        Entry("cyclic-subgraph.tflite", "model", lambda b: _edit(b, _self_call),
              r"subgraphs call each other in a cycle \(0 -> 0\)"),
        Entry("cyclic-two-subgraphs.tflite", "model", lambda b: _edit(b, _two_cycle),
              r"subgraphs call each other in a cycle \(0 -> 1 -> 0\)"),
        Entry("missing-subgraph.tflite", "model", lambda b: _edit(b, _missing_subgraph),
              r"runs subgraph 7, but the model has 1"),
        Entry("weights-only.h5", "keras", _hdf5_without_model_config, r"no model config|weights only"),
        Entry("no-config.keras", "keras", _keras_without_config, r"config\.json"),
        Entry("object-dtype.npy", "array", _object_npy, r"holds Python objects"),
        Entry("object-dtype.npz", "array", _object_npz, r"holds Python objects"),
    ]
    for cut in section_boundaries(base):
        entries.append(Entry(f"truncated-at-{cut}.tflite", "model", lambda b, cut=cut: b[:cut],
                             r"truncated|past the end|out of range|outside the file|is not a TFLite model|too short"))
    return entries


def write(folder: Path, base: bytes) -> list[tuple[Entry, Path]]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for entry in catalogue(base):
        path = folder / entry.name
        path.write_bytes(entry.make(base))
        made.append((entry, path))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--base", type=Path, required=True, help="a valid float .tflite with one input")
    args = parser.parse_args()
    made = write(args.out, args.base.read_bytes())
    for entry, path in made:
        print(f"{path}  ->  {entry.error}")


if __name__ == "__main__":
    main()
