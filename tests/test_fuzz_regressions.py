"""Every input the fuzzer ever found a problem with (fuzz/crashers/) now gives a clean, one-line EdgertError."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgert
from edgert.measure.bench import random_inputs
from edgert.errors import EdgertError

FINDINGS = Path(__file__).parent.parent / "fuzz" / "crashers"
CRASHERS = sorted(p for kind in ("crash", "oom", "timeout", "hang") for p in FINDINGS.glob(f"{kind}-*"))


@pytest.mark.parametrize("path", CRASHERS, ids=[p.name[:18] for p in CRASHERS])
def test_fuzz_finding_is_a_clean_error(path, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERT_MAX_TENSOR_BYTES", str(1 << 30))  # the fuzz target's limit (oom- findings)
    model_file = tmp_path / "finding.tflite"
    model_file.write_bytes(path.read_bytes())
    with pytest.raises(EdgertError) as caught:
        model = edgert.load(model_file, threads=1)
        model.run([random_inputs([spec])[0] for spec in model.inputs])
    assert "\n" not in str(caught.value)


def test_there_are_findings_to_replay():
    assert CRASHERS, "fuzz/crashers/ holds the fuzzer's findings; it should not be empty"
