"""The flatbuffer reader: agrees with the interpreter on good models, refuses broken ones before native code."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import edgert
from edgert.errors import ModelFormatError
from edgert.runtime.backend import get_backend
from edgert.tflite import flatbuffer
from edgert.tflite.info import describe


@pytest.mark.parametrize("mode", ["float32", "dynamic", "int8"])
def test_description_matches_interpreter(converted, mode):
    path = converted[mode].output_path
    info = edgert.inspect_model(path)
    interpreter = get_backend().interpreter_class(model_path=str(path))
    for specs, details in ((info.inputs, interpreter.get_input_details()),
                           (info.outputs, interpreter.get_output_details())):
        assert len(specs) == len(details)
        for spec, d in zip(specs, details):
            assert spec.tensor_name == d["name"]
            assert spec.shape == tuple(d["shape"])
            assert spec.dtype == np.dtype(d["dtype"]).name
            q = d["quantization_parameters"]
            assert spec.scale == pytest.approx(tuple(q["scales"]))
            assert spec.zero_point == tuple(q["zero_points"])
    ops = sorted(op["op_name"] for op in interpreter._get_ops_details())
    assert sorted(name for name, n in info.operators for _ in range(n)) == ops
    # The names come from the signature, as the interpreter's own signature runner reads it.
    listed = interpreter.get_signature_list()[info.signature]
    assert sorted(s.name for s in info.inputs) == sorted(listed["inputs"])
    assert sorted(s.name for s in info.outputs) == sorted(listed["outputs"])


def test_quantization_modes_are_named(converted):
    assert edgert.inspect_model(converted["float32"].output_path).quantization == "float32"
    assert edgert.inspect_model(converted["dynamic"].output_path).quantization == "dynamic range (int8 weights)"
    assert edgert.inspect_model(converted["int8"].output_path).quantization == "full integer (int8)"


def test_custom_operators_are_named(custom_op_tflite):
    info = edgert.inspect_model(custom_op_tflite)
    assert info.custom_operators == ("Igamma",)
    assert dict(info.operators) == {"ADD": 1, "Igamma": 1}


@pytest.mark.parametrize("data, message", [
    (b"", "too short"),
    (b"hello world, this is text\n", "file identifier"),
    (b"\x10\x00\x00\x00TFL3" + b"\x00" * 4, "points outside the file"),
    (b"\xff\xff\xff\x7fTFL3" + b"\x00" * 64, "points outside the file"),
])
def test_garbage_is_refused(data, message):
    with pytest.raises(ModelFormatError, match=message):
        describe(data)


def test_every_truncation_is_refused(int8_tflite):
    data = open(int8_tflite, "rb").read()
    accepted = []
    for cut in range(0, len(data), 7):
        try:
            describe(data[:cut])
            accepted.append(cut)
        except ModelFormatError:
            pass
    assert accepted == []


def test_bad_indices_are_refused(int8_tflite):
    data = bytearray(open(int8_tflite, "rb").read())
    fm = flatbuffer.parse(bytes(data))
    n_tensors = len(fm.subgraphs[0].tensors)
    # Find the subgraph's output index vector by value and point it past the tensor table.
    out = fm.subgraphs[0].outputs[0]
    needle = (1).to_bytes(4, "little") + out.to_bytes(4, "little", signed=True)
    pos = data.index(needle)
    data[pos + 4:pos + 8] = (n_tensors + 5).to_bytes(4, "little")
    with pytest.raises(ModelFormatError, match="refers to tensor"):
        describe(bytes(data))


def test_corrupt_models_never_crash_the_process(float_tflite, int8_tflite, tmp_path):
    """Random truncations and byte flips, loaded and run in a child: every one gives an EdgertError or runs."""
    script = textwrap.dedent(f"""
        import numpy as np, edgert
        rng = np.random.default_rng(0)
        refused = ran = 0
        for path in ({str(float_tflite)!r}, {str(int8_tflite)!r}):
            data = open(path, 'rb').read()
            for trial in range(150):
                b = bytearray(data[:int(rng.integers(0, len(data)))] if trial % 3 == 0 else data)
                for _ in range(int(rng.integers(1, 4))):
                    b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
                target = {str(tmp_path / 'fuzzed.tflite')!r}
                open(target, 'wb').write(bytes(b))
                try:
                    m = edgert.load(target)
                    m.run([np.zeros(s.shape, np.float32) for s in m.inputs])
                    ran += 1
                except edgert.EdgertError:
                    refused += 1
        print(refused, ran)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    refused, ran = map(int, result.stdout.split())
    assert refused + ran == 300 and refused > 100


def _patched_shape(data: bytes, old: tuple[int, ...], new: tuple[int, ...]) -> bytes:
    """Rewrite every int32 shape vector equal to `old` (length prefix included) as `new` (same rank)."""
    import struct

    before = struct.pack(f"<{len(old) + 1}i", len(old), *old)
    assert before in data
    return data.replace(before, struct.pack(f"<{len(new) + 1}i", len(new), *new))


def test_a_huge_declared_tensor_is_refused_before_the_interpreter(float_tflite, tmp_path, monkeypatch):
    data = open(float_tflite, "rb").read()
    spec = edgert.inspect_model(float_tflite).inputs[0]
    huge = tmp_path / "huge.tflite"
    huge.write_bytes(_patched_shape(data, spec.shape, (1, 100_000, 100_000, 1)))  # 40 GB of float32
    with pytest.raises(ModelFormatError, match=r"declares shape \[1, 100000, 100000, 1\] float32, 37.3 GiB, over "
                                                r"the limit of .* \(this machine's memory, or EDGERT_MAX_TENSOR_BYTES\)"):
        edgert.load(huge)
    monkeypatch.setenv("EDGERT_MAX_TENSOR_BYTES", "1000")  # a small board's own limit
    with pytest.raises(ModelFormatError, match=r"over the limit of 1000 bytes"):
        edgert.load(float_tflite)
    monkeypatch.setenv("EDGERT_MAX_TENSOR_BYTES", "lots")
    with pytest.raises(ModelFormatError, match="EDGERT_MAX_TENSOR_BYTES='lots' is not a number"):
        edgert.load(float_tflite)


def test_weights_shorter_than_their_shape_are_refused(float_tflite, tmp_path):
    data = open(float_tflite, "rb").read()
    flat = flatbuffer.parse(data)
    graph = flat.subgraphs[0]
    weights = next(t for t in graph.tensors if flat.buffer_sizes[t.buffer] > 0 and len(t.shape) == 4)
    grown = (weights.shape[0] + 1, *weights.shape[1:])
    bad = tmp_path / "short_weights.tflite"
    bad.write_bytes(_patched_shape(data, weights.shape, grown))
    with pytest.raises(ModelFormatError, match=rf"declares shape \[{grown[0]}, .*but its buffer \d+ holds "
                                                rf"{flat.buffer_sizes[weights.buffer]} bytes"):
        edgert.load(bad)


def test_a_signature_that_names_a_missing_tensor_is_refused(converted, tmp_path):
    """The signature's tensor indices are checked like every other index: LiteRT's signature runner would read
    past the subgraph's tensors."""
    from tensorflow.lite.tools import flatbuffer_utils

    from edgert.errors import ModelFormatError

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(open(converted["float32"].output_path, "rb").read()))
    model.signatureDefs[0].outputs[0].tensorIndex = 99999
    bad = tmp_path / "bad_signature.tflite"
    bad.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    with pytest.raises(ModelFormatError, match=r"signature 0 output refers to tensor 99999, but subgraph 0 has \d+"):
        edgert.inspect_model(bad)
    model.signatureDefs[0].outputs[0].tensorIndex = model.subgraphs[0].inputs[0]  # an input named as an output
    odd = tmp_path / "odd_signature.tflite"
    odd.write_bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    info = edgert.inspect_model(odd)  # valid indices: the model loads, and that tensor keeps its tensor name
    assert info.outputs[0].name == info.outputs[0].tensor_name
