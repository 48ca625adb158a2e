"""TFLite metadata: written by edgert, read by tflite-support (an independent implementation), and the reverse;
the model still runs the same; bad input is one line and writes nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgert
from edgert import metadata
from edgert.cli import cli
from edgert.errors import MetadataError, OutputExistsError
from edgert.metadata import MetadataSpec
from edgert.tflite.flatbuffer import parse
from tests import needs
from tests import tflite_support

LABELS = [f"digit {i}" for i in range(10)]


@pytest.fixture(scope="module")
def support():
    why = tflite_support.ensure()
    if why:
        needs.missing(why)
    return tflite_support


@pytest.fixture
def labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes(("\r\n".join(LABELS)).encode())  # CRLF, no final newline: packed byte for byte all the same
    return path


def spec(labels_path=None, **kw):
    fields = dict(name="Digits", description="8x8 handwritten digits", version="3", author="edgert tests",
                  license="Apache-2.0")
    if labels_path:
        fields.update(labels=metadata.read_labels(labels_path), labels_data=Path(labels_path).read_bytes(),
                      labels_file_name=Path(labels_path).name)
    return MetadataSpec(**{**fields, **kw})


def test_int8_model_round_trip_through_tflite_support(int8_tflite, labels, tmp_path, support):
    out, written = metadata.write_metadata(int8_tflite, spec(labels), tmp_path / "m.tflite")
    shown = support.run(support.DISPLAY, out)
    md = shown["metadata"]
    assert (md["name"], md["description"], md["version"], md["author"], md["license"]) == (
        "Digits", "8x8 handwritten digits", "3", "edgert tests", "Apache-2.0")
    image = md["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert image["content"]["content_properties"]["color_space"] == "GRAYSCALE"
    # Derived from the int8 input's quantization (scale 1/255, zero point -128): pixels 0..255 -> 0..1.
    norm = image["process_units"][0]["options"]
    assert norm["mean"] == [0.0] and norm["std"] == [255.0]
    assert image["stats"] == {"max": [1.0], "min": [0.0]}
    out_md = md["subgraph_metadata"][0]["output_tensor_metadata"][0]
    assert out_md["associated_files"][0] == {"name": "labels.txt", "description": metadata.LABELS_DESCRIPTION,
                                             "type": "TENSOR_AXIS_LABELS"}
    assert shown["files"] == ["labels.txt"]
    assert bytes(shown["file_bytes"]["labels.txt"]) == labels.read_bytes()  # byte-exact from the zip section
    # tflite-support's own reckoning of the oldest parser: a classifier needs nothing past 1.0.0 (the picture task
    # is told by its output's name), so older Support Libraries keep reading it
    assert md["min_parser_version"] == shown["min_version"] == metadata.MIN_PARSER_VERSION
    assert written.image_task is None and "custom_metadata" not in md["subgraph_metadata"][0]
    assert written.labels == tuple(LABELS) and written.inputs[0].std == (255.0,)
    assert metadata.labels_file_bytes(out, "labels.txt") == labels.read_bytes()


def test_the_model_runs_the_same_after_metadata(int8_tflite, float_tflite, digits, labels, tmp_path):
    for model, extra in ((int8_tflite, {}), (float_tflite, {"mean": (0.0,), "std": (1.0,), "input_range": (0, 1)})):
        out, _ = metadata.write_metadata(model, spec(labels, **extra), tmp_path / f"{Path(model).stem}_m.tflite")
        before = edgert.load(model).run(digits.x_test[:32])[0]
        after = edgert.load(out).run(digits.x_test[:32])[0]
        np.testing.assert_array_equal(before, after)
        assert edgert.inspect_model(out).inputs == edgert.inspect_model(model).inputs


def test_rewriting_replaces_the_metadata_and_the_packed_files(int8_tflite, labels, tmp_path):
    first, _ = metadata.write_metadata(int8_tflite, spec(labels), tmp_path / "a.tflite")
    other = tmp_path / "classes.txt"
    other.write_text("\n".join(f"class {i}" for i in range(10)) + "\n")
    again, meta = metadata.write_metadata(first, spec(other, name="Renamed"), tmp_path / "b.tflite")
    assert meta.name == "Renamed" and meta.packed_files == ("classes.txt",)
    assert meta.labels == tuple(f"class {i}" for i in range(10))
    flat = parse(Path(again).read_bytes())
    assert [name for name, _ in flat.metadata].count(metadata.METADATA_NAME) == 1
    assert len(flat.buffer_sizes) == len(parse(Path(first).read_bytes()).buffer_sizes)


def test_reads_metadata_written_by_tflite_support(float_tflite, labels, tmp_path, support):
    out = tmp_path / "theirs.tflite"
    support.run(support.WRITE_CLASSIFIER, str(float_tflite), str(labels), str(out), "0", "255")
    meta = metadata.read_metadata(out)
    assert meta.inputs[0].content == "image" and meta.inputs[0].mean == (0.0,) and meta.inputs[0].std == (255.0,)
    assert meta.outputs[0].associated_files == (("labels.txt", "TENSOR_AXIS_LABELS"),)
    assert meta.labels == tuple(LABELS) and meta.packed_files == ("labels.txt",)
    result = CliRunner().invoke(cli, ["metadata", "read", str(out)])
    assert result.exit_code == 0 and "labels       digit 0, digit 1" in result.output


def test_the_vendored_schema_is_tflite_supports_unchanged(support):
    original = support.run("""
import json, hashlib, tensorflow_lite_support.metadata.metadata_schema_py_generated as m
print(json.dumps(hashlib.sha256(open(m.__file__, 'rb').read()).hexdigest()))""")
    ours = (Path(metadata.__file__).parent / "_schema.py").read_text()
    body = ours[ours.index("import flatbuffers"):]
    assert hashlib.sha256(body.encode()).hexdigest() == original


def test_a_model_without_metadata(float_tflite):
    assert metadata.read_metadata(float_tflite) is None
    result = CliRunner().invoke(cli, ["metadata", "read", str(float_tflite), "--json"])
    assert result.exit_code == 0 and result.output.strip() == "null"


@pytest.mark.parametrize("kw, message", [
    ({"task": "generic", "labels": ("a",)}, "has 1 labels but the model's output has 10 classes"),
    ({"mean": (127.5,), "std": (127.5,)}, r"int8 representing 0\.\.1 .* use --input-mean 0 --input-std 255"),
    ({"mean": (1.0, 2.0, 3.0), "std": (1.0, 2.0, 3.0)}, "--input-mean has 3 values but the input has 1 channel"),
])
def test_what_does_not_fit_the_model(int8_tflite, tmp_path, kw, message):
    with pytest.raises(MetadataError, match=message):
        metadata.write_metadata(int8_tflite, spec(**kw), tmp_path / "x.tflite")
    assert not list(tmp_path.iterdir())


def test_bad_input_from_the_cli(int8_tflite, float_tflite, two_input_tflite, labels, tmp_path):
    runner = CliRunner()
    three = tmp_path / "three.txt"
    three.write_text("a\nb\nc\n")
    out = tmp_path / "out.tflite"
    cases = [
        (["metadata", "write", str(int8_tflite), "--labels", str(three), "-o", str(out)],
         "has 3 labels but the model's output has 10 classes"),
        (["metadata", "write", str(two_input_tflite), "-o", str(out)], "has 2 inputs; --task classification"),
        (["metadata", "write", str(float_tflite), "-o", str(out)], "give --input-mean and --input-std"),
        (["metadata", "write", str(int8_tflite), "--input-std", "0", "--input-mean", "0", "-o", str(out)],
         "must be finite and non-zero"),
        (["metadata", "write", str(int8_tflite), "--input-mean", "x", "--input-std", "1", "-o", str(out)],
         "is not a number"),
        (["metadata", "write", str(int8_tflite), "--labels", str(tmp_path / "none.txt"), "-o", str(out)],
         "--labels .*none.txt: no such file"),
        (["metadata", "write", str(three), "-o", str(out)], "not a TFLite model"),
        (["metadata", "read", str(three)], "not a TFLite model"),
    ]
    import re

    for args, message in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 1 and result.output.count("\n") == 1, (args, result.output)
        assert re.search(message, result.output), (args, result.output)
    assert not out.exists()
    out.write_bytes(b"keep")
    with pytest.raises(OutputExistsError, match="--force"):
        metadata.write_metadata(int8_tflite, spec(labels), out)
    assert out.read_bytes() == b"keep"
