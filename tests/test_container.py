"""The Dockerfile's image, built and run (`make container-test`; skipped elsewhere): see tests/container_image.py.

It serves a read-only repository as `edgert deploy` fills it, answers tritonclient as `edgert run` does, runs as
its own unprivileged user without TensorFlow, passes its own health check, and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import edgert

if os.environ.get("EDGERT_CONTAINER") != "1":
    pytest.skip("the image is built and run by `make container-test`", allow_module_level=True)

th = pytest.importorskip("tritonclient.http")

from tests import container_image  # noqa: E402
from tests.sshd import _free_port  # noqa: E402
from tests.test_serve import _deploy_locally  # noqa: E402

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def image():
    why = container_image.podman_works()
    if why:
        pytest.fail(why)  # make container-test installs it: a missing tool here is a failure, not a skip
    return container_image.build()


@pytest.fixture
def container(image, tmp_path, float_tflite, int8_tflite):
    """The image serving a repository (one deployed model, one plain file), mounted read-only."""
    repository = tmp_path / "edgert"
    models = repository / "models"
    models.mkdir(parents=True)
    version = _deploy_locally(models, "digits_int8", Path(int8_tflite))
    (models / "digits.tflite").write_bytes(Path(float_tflite).read_bytes())
    port = _free_port()
    name = f"edgert-test-{port}"
    # As the Dockerfile's comment runs it: the default port inside, published on loopback.
    subprocess.run(["podman", "run", "-d", "--name", name, *container_image.RUN_FLAGS, "-p", f"127.0.0.1:{port}:8000",
                    "-v", f"{repository}:/models:ro", image], check=True, capture_output=True)
    client = th.InferenceServerClient(f"127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.is_server_ready():
                break
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        assert time.monotonic() < deadline, _logs(name)
        time.sleep(0.2)
    yield name, client, version
    subprocess.run(["podman", "rm", "-f", name], capture_output=True)


def _logs(name: str) -> str:
    return subprocess.run(["podman", "logs", name], capture_output=True, text=True).stdout[-3000:]


def _exec(name: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "exec", name, "sh", "-c", command], capture_output=True, text=True)


def test_the_image_answers_as_edgert_run_does(container, float_tflite, int8_tflite, tmp_path):
    name, client, version = container
    x = np.random.default_rng(0).uniform(0, 16, (4, 8, 8, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for model_name, path in (("digits_int8", int8_tflite), ("digits", float_tflite)):
        spec = edgert.load(path)
        item = th.InferInput(spec.inputs[0].name, list(x.shape), "FP32")
        item.set_data_from_numpy(x)
        got = client.infer(model_name, [item]).as_numpy(spec.outputs[0].name)
        done = subprocess.run([BIN / "edgert", "run", str(path), "--input", str(tmp_path / "x.npy"), "-o",
                               str(tmp_path / "y.npy"), "--force"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        np.testing.assert_array_equal(got, np.load(tmp_path / "y.npy"))
    assert client.get_model_metadata("digits_int8")["versions"] == [version]  # the deployed bundle's version


def test_the_image_runs_unprivileged_without_tensorflow_and_passes_its_health_check(container):
    name, _, _ = container
    assert _exec(name, "id -u").stdout.strip() == "10001"
    probe = _exec(name, "python3 -c 'import tensorflow'")
    assert probe.returncode != 0 and "No module named 'tensorflow'" in probe.stderr
    dockerfile = (container_image.REPO / "Dockerfile").read_text()
    health = next(line for line in dockerfile.splitlines() if line.startswith("HEALTHCHECK"))
    command = health.split(" CMD ", 1)[1]
    assert _exec(name, command).returncode == 0  # what Docker runs every 30 s


def test_sigterm_stops_the_container_cleanly(container):
    name, _, _ = container
    started = time.monotonic()
    subprocess.run(["podman", "stop", "-t", "15", name], check=True, capture_output=True)
    assert time.monotonic() - started < 15  # not killed at the end of the grace period
    state = subprocess.run(["podman", "inspect", name, "--format", "{{.State.ExitCode}}"], capture_output=True,
                           text=True).stdout.strip()
    assert state == "0" and _logs(name).rstrip().endswith("stopped"), _logs(name)
