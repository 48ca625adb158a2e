"""Containers (`make container-test`; skipped elsewhere), see tests/container_image.py: the Dockerfile's image, and
a board with systemd for `edgert deploy --serve`'s unit.

The image serves a read-only repository as `edgert deploy` fills it, answers tritonclient as `edgert run` does,
runs as its own unprivileged user without TensorFlow, passes its own health check, and stops cleanly on SIGTERM.
On the board, deploy --serve makes a system unit for root and a user unit for another user; a later deploy
switches the served version without a restart, and --stop-serving stops and disables the unit.
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
from tests.waiting import wait_until  # noqa: E402

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module", params=["amd64", "arm64"])
def image(request):
    """The Dockerfile's image for linux/amd64 (this machine) and linux/arm64 (under qemu-user, registered for as
    long as the image's tests run)."""
    why = container_image.podman_works()
    if why:
        pytest.fail(why)  # make container-test installs it: a missing tool here is a failure, not a skip
    with container_image.emulation(request.param):
        started = time.monotonic()
        name = container_image.build(request.param)
        print(f"\n{name} built in {time.monotonic() - started:.0f} s")
        yield name


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
    # under emulation the server takes a while to start
    wait_until(client.is_server_ready, seconds=180, failure=lambda: _logs(name))
    yield name, client, version
    subprocess.run(["podman", "rm", "-f", name], capture_output=True)


def _logs(name: str) -> str:
    return subprocess.run(["podman", "logs", name], capture_output=True, text=True).stdout[-3000:]


def _exec(name: str, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "exec", name, "sh", "-c", command], capture_output=True, text=True)


def test_the_image_answers_as_edgert_run_does(container, image, float_tflite, int8_tflite, tmp_path):
    """Exactly, on this machine's platform. On arm64 (other kernels, under emulation) int8 answers are identical
    and float ones agree to 1e-5, relative: what the emulated board's tests allow."""
    name, client, version = container
    native = image.endswith(f"-{container_image.NATIVE}")
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
        expected = np.load(tmp_path / "y.npy")
        if native or model_name == "digits_int8":
            np.testing.assert_array_equal(got, expected)
        else:
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert client.get_model_metadata("digits_int8")["versions"] == [version]  # the deployed bundle's version


def test_the_image_runs_unprivileged_without_tensorflow_and_passes_its_health_check(container):
    name, _, _ = container
    assert _exec(name, "id -u").stdout.strip() == "10001"
    image = subprocess.run(["podman", "inspect", name, "--format", "{{.ImageName}}"], capture_output=True,
                           text=True).stdout.strip()
    machine = _exec(name, "python3 -c 'import platform; print(platform.machine())'").stdout.strip()
    assert machine == {"amd64": "x86_64", "arm64": "aarch64"}[image.rsplit("-", 1)[1]], (image, machine)
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


# -- `edgert deploy --serve` to a board where systemd runs --------------------------------------------------------


def _ssh(board, command: str, user: str = "root") -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", board["config"], board["alias"][user], command], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def systemd_board(tmp_path_factory):
    """A board with systemd as PID 1 and OpenSSH (tests/container_image.py), reached by an ssh alias."""
    why = container_image.podman_works()
    if why:
        pytest.fail(why)
    image, key = container_image.systemd_board()
    ssh_port, serve_port = _free_port(), _free_port()
    name = f"edgert-board-{ssh_port}"
    subprocess.run(["podman", "run", "-d", "--name", name, "--systemd=always", *container_image.RUN_FLAGS,
                    "-p", f"127.0.0.1:{ssh_port}:22", "-p", f"127.0.0.1:{serve_port}:8000", image],
                   check=True, capture_output=True)
    home = tmp_path_factory.mktemp("systemd-board")
    board = {"alias": {"root": "root@systemd-board", "pi": "pi@systemd-board"}, "config": str(home / "ssh_config"),
             "name": name, "serve_port": serve_port}
    try:
        deadline = time.monotonic() + 120
        while True:
            state = subprocess.run(["podman", "exec", name, "systemctl", "is-system-running"], capture_output=True,
                                   text=True).stdout.strip()
            host_key = subprocess.run(["podman", "exec", name, "cat", "/etc/ssh/ssh_host_ed25519_key.pub"],
                                      capture_output=True, text=True).stdout.split()
            if state in ("running", "degraded") and host_key:
                break
            assert time.monotonic() < deadline, f"systemd in the board did not come up: {state}"
            time.sleep(0.5)
        (home / "known_hosts").write_text(f"[127.0.0.1]:{ssh_port} {host_key[0]} {host_key[1]}\n")
        (home / "ssh_config").write_text(
            f"Host systemd-board\n    HostName 127.0.0.1\n    Port {ssh_port}\n    IdentityFile {key}\n"
            f"    IdentitiesOnly yes\n    UserKnownHostsFile {home / 'known_hosts'}\n    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n    ConnectTimeout 30\n")
        while _ssh(board, "true").returncode != 0:
            assert time.monotonic() < deadline, "sshd in the board did not answer"
            time.sleep(0.5)
        # what the README asks of a user whose server should outlive the login
        subprocess.run(["podman", "exec", name, "loginctl", "enable-linger", "pi"], check=True, capture_output=True)
        board["env"] = {**os.environ, "EDGERT_SSH_CONFIG": board["config"]}
        yield board
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True)


def _deploy(board, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "edgert", "deploy", *args], capture_output=True, text=True, env=board["env"],
                          timeout=1800)


@pytest.mark.parametrize("user,scope", [("root", "system"), ("pi", "user")])
def test_deploy_serve_runs_a_systemd_unit_that_later_deploys_switch_and_stop_serving_stops(systemd_board,
                                                                                            int8_tflite,
                                                                                            float_tflite, user,
                                                                                            scope):
    """A system unit when the SSH user is root, a user unit otherwise: started by deploy --serve, serving what
    edgert run answers, switched to a new version by a plain deploy without a restart, stopped (draining, exit 0)
    and disabled by --stop-serving."""
    board = systemd_board
    alias = board["alias"][user]

    def unit(what: str) -> str:
        ctl = "systemctl" + (" --user" if scope == "user" else "")
        return _ssh(board, f"{ctl} show -p {what} --value edgert-serve.service", user).stdout.strip()

    done = _deploy(board, str(int8_tflite), "--to", alias, "--setup", "--serve", "--serve-host", "0.0.0.0",
                   "--serve-port", "8000")
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\n{[line.strip() for line in done.stdout.splitlines() if 'serving' in line]}")
    assert f"systemd {scope} unit" in done.stdout, done.stdout
    assert unit("ActiveState") == "active" and unit("UnitFileState") == "enabled"
    pid = unit("MainPID")

    client = th.InferenceServerClient(f"127.0.0.1:{board['serve_port']}")
    wait_until(lambda: client.is_model_ready("digits_int8"), seconds=60,
               failure=lambda: "the board's server did not answer")
    x = np.random.default_rng(1).uniform(0, 16, (2, 8, 8, 1)).astype(np.float32)
    model = edgert.load(int8_tflite)
    item = th.InferInput(model.inputs[0].name, list(x.shape), "FP32")
    item.set_data_from_numpy(x)
    got = client.infer("digits_int8", [item]).as_numpy(model.outputs[0].name)
    np.testing.assert_array_equal(got, model.run(x)[0])
    first = client.get_model_metadata("digits_int8")["versions"]

    # A later deploy without --serve: the unit keeps running, and serves the new version within seconds.
    done = _deploy(board, str(float_tflite), "--name", "digits_int8", "--to", alias)
    assert done.returncode == 0, done.stderr[-3000:]
    deadline = time.monotonic() + 20
    while client.get_model_metadata("digits_int8")["versions"] == first:
        assert time.monotonic() < deadline, "the new version was not served"
        time.sleep(0.2)
    assert unit("MainPID") == pid  # switched without a restart
    client.close()

    stopped = _deploy(board, "--to", alias, "--stop-serving")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    assert unit("ActiveState") == "inactive" and unit("UnitFileState") == "disabled"
    assert unit("Result") == "success"  # SIGTERM drained and exited 0
