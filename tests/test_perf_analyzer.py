"""Triton's own load generator, perf_analyzer, drives `edgert serve` unchanged and with no --shape: it reads the
model config and metadata and finds every dimension there. `make perf-analyzer-test` installs it (tritonclient
2.41's wheel, CUDA's runtime library, Debian's libb64) into build/perf_analyzer and runs this file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sshd import _free_port
from tests.waiting import wait_until

ROOT = Path(os.environ.get("EDGERT_PERF_ANALYZER", "build/perf_analyzer"))
BINARY = ROOT / "bin" / "perf_analyzer"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not BINARY.exists(), reason=(
    "perf_analyzer is not installed: `make perf-analyzer-test` installs it and runs this"))]


@pytest.fixture(scope="module")
def fixed_batch_tflite(h5_path, calibration_npy, models_dir):
    """The digits model with its batch fixed to 1 (the Edge TPU path): a model that does not batch."""
    from edgert.converters import ConvertRecipe, Quantization, convert

    return convert(h5_path, models_dir / "digits_batch1.tflite", recipe=ConvertRecipe(Quantization.EDGETPU),
                   calibration_data=calibration_npy).output_path


@pytest.fixture(scope="module")
def server(float_tflite, fixed_batch_tflite):
    """`edgert serve` with a dynamic-batch model (batching up to 4 rows) and a batch-1 model."""
    import tritonclient.http as th

    port = _free_port()
    process = subprocess.Popen([Path(sys.executable).parent / "edgert", "serve", f"dynamic={float_tflite}",
                                f"batch1={fixed_batch_tflite}", "--port", str(port), "--max-batch", "4",
                                "--no-access-log"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = th.InferenceServerClient(f"127.0.0.1:{port}")

    try:
        wait_until(client.is_server_ready, seconds=60, failure=lambda: f"edgert serve did not start: "
                   f"{process.stderr.read()[-2000:] if process.poll() is not None else 'not ready in 60 s'}",
                   alive=lambda: process.poll() is None)
        yield port, client
    finally:
        process.terminate()
        process.wait(30)


def _perf_analyzer(port: int, model: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(ROOT / "nvidia" / "cuda_runtime" / "lib"),
                                                    env.get("LD_LIBRARY_PATH")]))
    return subprocess.run([str(BINARY), "-m", model, "-u", f"127.0.0.1:{port}", "-i", "http",
                           "--concurrency-range", "1:2", "--measurement-interval", "1000", "--max-trials", "10",
                           "--stability-percentage", "100",  # this checks that it runs, not how steadily
                           *extra], capture_output=True, text=True, timeout=240, env=env)


@pytest.mark.parametrize("model, batch, config", [
    ("batch1", "1", {"max_batch_size": 0, "dims": [1, 8, 8, 1]}),
    ("dynamic", "4", {"max_batch_size": 4, "dims": [8, 8, 1]}),
])
def test_perf_analyzer_runs_with_no_shape(server, model, batch, config):
    port, client = server
    got = client.get_model_config(model)
    assert got["max_batch_size"] == config["max_batch_size"] and got["input"][0]["dims"] == config["dims"]
    assert got["input"][0]["data_type"].startswith("TYPE_")
    done = _perf_analyzer(port, model, *(("-b", batch) if batch != "1" else ()))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    throughput = [float(x) for x in re.findall(r"Throughput: ([\d.]+) infer/sec", done.stdout)]
    assert throughput and min(throughput) > 0, done.stdout[-2000:]
