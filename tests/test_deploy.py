"""`edgert deploy` against a real OpenSSH server on loopback: upload, verify, switch, run, roll back, and every
remote failure as one line with the active model untouched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgert
from edgert import deploy
from edgert.measure.bench import random_inputs
from edgert.cli import cli
from edgert.deploy import Target
from edgert.deploy import ssh as transport
from edgert.devices import profiles as device_profiles
from edgert.errors import DeployError
from tests import needs
from tests.fleet import SYSTEM_PYTHON
from tests.sshd import SshServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    sshd = SshServer(tmp_path_factory.mktemp("sshd"))
    why = sshd.start()
    if why:
        sshd.stop()
        needs.missing(why)
    yield sshd
    sshd.stop()


@pytest.fixture
def board(server, tmp_path):
    """Keyword arguments that reach "the board": the alias from the test's ssh_config, a fresh remote directory,
    and this test run's Python (numpy and ai-edge-litert installed) as the board's runtime."""
    return {"ssh_config": str(server.ssh_config), "remote_dir": str(tmp_path / "board"),
            "remote_python": sys.executable}


@pytest.fixture
def models(float_tflite, int8_tflite, tmp_path):
    """Two versions of one model (same name, different bytes), as a user's successive releases."""
    v1, v2 = tmp_path / "v1" / "digits.tflite", tmp_path / "v2" / "digits.tflite"
    for src, dst in ((float_tflite, v1), (int8_tflite, v2)):
        dst.parent.mkdir()
        shutil.copy(src, dst)
    return v1, v2


def active(board_kwargs, name="digits") -> Path:
    return Path(board_kwargs["remote_dir"]) / "models" / name / "current"


def check_every_file(folder: Path) -> dict:
    """Every file on the board against the manifest, by sha256; returns the manifest."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for rel, want in manifest["files"].items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == want["sha256"], rel
    return manifest


def load_agent():
    """The board side as a module (it is a standard-library file, importable anywhere)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("edgert_board_agent", deploy.AGENT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_target_grammar():
    assert Target.parse("pi@raspberrypi.local:2222") == Target("raspberrypi.local", "pi", 2222)
    assert Target.parse("board") == Target("board")
    assert Target.parse("root@[::1]:22") == Target("::1", "root", 22)
    for bad in ("pi@", "a b", "host:99999", "host:port"):
        with pytest.raises(DeployError, match=r"\[user@\]host\[:port\]|between 1 and 65535"):
            Target.parse(bad)


def test_deploy_verify_run_and_roll_back(models, board):
    v1, v2 = models
    first = deploy.deploy(str(v1), "board", "rpi5", **board)
    assert first.switched and first.previous is None and first.board.runtime_ok
    current = active(board)
    manifest = check_every_file(current)
    assert (current / "model" / "digits.tflite").read_bytes() == v1.read_bytes()
    assert manifest["version"] == first.version and os.readlink(current) == f"v-{first.version}"

    # Run it there: the same outputs as here, on the same seeded inputs.
    ran = deploy.remote_run("board", "digits", ("run", "--json"), **{k: board[k] for k in board})
    assert ran.returncode == 0, ran.stderr
    out = json.loads(ran.stdout)
    m = edgert.load(v1)
    np.testing.assert_array_equal(np.array(next(iter(out["outputs"].values()))["values"], np.float32),
                                  m.run(random_inputs(m.inputs))[0])

    second = deploy.deploy(str(v2), "board", "rpi5", **board)
    assert second.switched and second.previous == first.version and second.version != first.version
    assert (current / "model" / "digits.tflite").read_bytes() == v2.read_bytes()
    check_every_file(current.parent / "previous")

    same = deploy.deploy(str(v2), "board", "rpi5", **board)
    assert not same.switched and same.version == second.version  # nothing to switch

    back = deploy.rollback("board", "digits", **board)
    assert back.version == first.version and back.replaced == second.version
    assert (current / "model" / "digits.tflite").read_bytes() == v1.read_bytes()
    check_every_file(current)
    forward = deploy.rollback("board", "digits", **board)  # rolling back twice swaps back
    assert forward.version == second.version
    # Only the active and the previous version stay on the board.
    assert sorted(p.name for p in current.parent.glob("v-*")) == sorted(f"v-{v}" for v in (first.version,
                                                                                           second.version))
    assert not (current.parent / ".incoming").exists()


def test_roll_back_with_nothing_to_roll_back_to(models, board):
    with pytest.raises(DeployError, match="digits is not deployed under"):
        deploy.rollback("board", "digits", **board)
    deploy.deploy(str(models[0]), "board", "rpi5", **board)
    with pytest.raises(DeployError, match="no previous version on the board"):
        deploy.rollback("board", "digits", **board)


class Dropper:
    """Cuts the upload into small writes and, part-way through, kills the ssh client: a dropped connection."""

    def __init__(self, monkeypatch, board_kwargs, after_blocks=3):
        self.procs = []
        self.after = after_blocks
        self.incoming = Path(board_kwargs["remote_dir"]) / "models" / "digits" / ".incoming"
        real = subprocess.Popen

        def recording(*args, **kwargs):
            proc = real(*args, **kwargs)
            self.procs.append(proc)
            return proc

        monkeypatch.setattr(transport.subprocess, "Popen", recording)

    def __call__(self, data: bytes):
        block = 8 * 1024
        for i, start in enumerate(range(0, len(data), block)):
            if i == self.after:
                deadline = time.monotonic() + 10  # the first blocks have reached the board's temporary file
                while time.monotonic() < deadline and not any(p.stat().st_size for p in self.incoming.glob("*.zip")):
                    time.sleep(0.02)
                assert any(self.incoming.glob("*.zip")), "the upload never started on the board"
                self.procs[-1].send_signal(signal.SIGKILL)
                time.sleep(0.2)
            yield data[start:start + block]


def test_a_dropped_connection_leaves_the_previous_version_active(models, board, monkeypatch):
    v1, v2 = models
    first = deploy.deploy(str(v1), "board", "rpi5", **board)
    with pytest.raises(DeployError, match="connection to the board was lost"):
        deploy.deploy(str(v2), "board", "rpi5", chunks=Dropper(monkeypatch, board), **board)
    current = active(board)
    assert os.readlink(current) == f"v-{first.version}"
    assert (current / "model" / "digits.tflite").read_bytes() == v1.read_bytes()
    check_every_file(current)
    deadline = time.monotonic() + 10  # the board's side sees the end of its input and clears what it received
    while (current.parent / ".incoming").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (current.parent / ".incoming").exists()
    assert sorted(p.name for p in current.parent.glob("v-*")) == [f"v-{first.version}"]
    monkeypatch.undo()
    assert deploy.deploy(str(v2), "board", "rpi5", **board).previous == first.version  # and it recovers


def test_bytes_changed_in_transit_are_caught_by_the_checksum(models, board):
    v1, v2 = models
    first = deploy.deploy(str(v1), "board", "rpi5", **board)

    def corrupt(data: bytes):
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0x01
        yield bytes(damaged)

    with pytest.raises(DeployError, match="checksum mismatch after upload.*the active model was not touched"):
        deploy.deploy(str(v2), "board", "rpi5", chunks=corrupt, **board)
    assert os.readlink(active(board)) == f"v-{first.version}"
    assert not (active(board).parent / ".incoming").exists()


def test_a_full_disk_is_one_line_and_touches_nothing(models, board, tmp_path):
    if os.geteuid() != 0:
        needs.missing("mounting a small tmpfs as the board's disk needs root")
    small = tmp_path / "small-disk"
    small.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        needs.missing(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        kwargs = {**board, "remote_dir": str(small / "edgert")}
        with pytest.raises(DeployError, match=r"not enough disk space in .*MiB free, the bundle needs"):
            deploy.deploy(str(models[0]), "board", "rpi5", **kwargs)
        assert not (small / "edgert" / "models" / "digits" / "current").exists()
        assert not (small / "edgert" / "models" / "digits" / ".incoming").exists()
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_remote_failures_are_one_line_each(models, board, server, tmp_path, monkeypatch):
    v1 = str(models[0])
    stranger = tmp_path / "stranger_config"
    stranger.write_text(server.client_config("stranger_ed25519"))
    with pytest.raises(DeployError, match=r"the SSH login was refused \(.*publickey.*\); add your key with "
                                          r"`ssh-copy-id"):
        deploy.deploy(v1, "board", "rpi5", **{**board, "ssh_config": str(stranger)})

    closed = tmp_path / "closed_config"
    closed.write_text(server.client_config("client_ed25519").replace(f"Port {server.port}", "Port 1"))
    with pytest.raises(DeployError, match="cannot reach board: connection refused"):
        deploy.deploy(v1, "board", "rpi5", **{**board, "ssh_config": str(closed)})

    with pytest.raises(DeployError, match="python3.99 is not installed on the board"):
        deploy.deploy(v1, "board", "rpi5", **{**board, "remote_python": "python3.99"})

    # Mendel Linux's Python 3.7: the board's side of edgert says so before doing anything.
    old = tmp_path / "python3.7"
    old.write_text(f"#!{sys.executable}\nimport sys\nsys.version_info = (3, 7, 3, 'final', 0)\n"
                   "code = sys.argv[2]\nsys.argv = ['-c'] + sys.argv[3:]\n"
                   "exec(compile(code, '<string>', 'exec'), {'__name__': '__main__'})\n")
    old.chmod(0o755)
    with pytest.raises(DeployError, match=r"Python 3.7.3 at .* is too old: edgert needs 3.10 or newer"):
        deploy.deploy(v1, "board", "rpi5", **{**board, "remote_python": str(old)})

    # A profile that needs a newer Python than the board has.
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    text = (Path(device_profiles.__file__).parent / "profiles" / "rpi5.toml").read_text()
    (profiles / "future-pi.toml").write_text(text.replace('python = ">=3.10"', 'python = ">=3.99"'))
    monkeypatch.setenv("EDGERT_DEVICES_PATH", str(profiles))
    with pytest.raises(DeployError, match=r"Python 3\.\d+\.\d+ on the board is too old; this bundle needs 3.99"):
        deploy.deploy(v1, "board", "future-pi", **board)

    # No runtime on the board and no --setup: say what to do.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    bare = tmp_path / "bare" / "bin" / "python"  # a Python with nothing installed
    with pytest.raises(DeployError, match=f"the runtime is missing on the board: {bare} lacks numpy, click, "
                                          r"ai-edge-litert \(or tflite-runtime\); run again with --setup to install "
                                          f"it in {tmp_path}/board/venv"):
        deploy.deploy(v1, "board", "rpi5", **{**board, "remote_python": str(bare)})
    assert not active(board).exists()


def test_bench_on_the_board(models, board):
    done = deploy.deploy(str(models[1]), "board", "rpi5", bench_args=("--runs", "20", "--idle-seconds", "0"),
                         **board)
    assert done.bench["latency"]["count"] >= 20 and done.bench["latency"]["p50_ms"] > 0
    assert done.bench["delegation"]["used"] == "xnnpack"
    assert done.bench["model"].endswith("current/model/digits.tflite")


def test_cli_deploy_bench_and_rollback(models, board, monkeypatch):
    monkeypatch.setenv("EDGERT_SSH_CONFIG", board["ssh_config"])
    common = ["--to", "board", "--remote-dir", board["remote_dir"], "--remote-python", board["remote_python"]]
    runner = CliRunner()
    first = runner.invoke(cli, ["deploy", str(models[0]), "--device", "rpi5", *common])
    assert first.exit_code == 0, first.output
    assert "active (previous: none)" in first.output
    second = runner.invoke(cli, ["deploy", str(models[1]), "--device", "rpi5", "--bench", "--runs", "10", *common])
    assert second.exit_code == 0, second.output
    assert "board/local p50" in second.output and "this machine" in second.output
    back = runner.invoke(cli, ["deploy", "--rollback", "--name", "digits", *common, "--json"])
    assert back.exit_code == 0 and json.loads(back.output)["replaced"] is not None
    refused = runner.invoke(cli, ["deploy", str(models[0]), "--to", "nobody@", *common[2:]])
    assert refused.exit_code == 1 and refused.output.count("\n") == 1 and "Traceback" not in refused.output


@pytest.mark.slow
def test_setup_installs_the_runtime_in_a_venv_on_the_board(models, board):
    """--setup with the board's plain system Python: a venv with the bundle's requirements, from the package
    index (pip's cache makes this seconds after the first time)."""
    python = SYSTEM_PYTHON  # Debian's, with no pip packages: a board as it comes
    kwargs = {**board, "remote_python": python}
    done = deploy.deploy(str(models[0]), "board", "rpi5", setup=True, **kwargs)
    venv = Path(board["remote_dir"]) / "venv" / "bin" / "python"
    assert venv.exists() and done.setup_installed is True
    run = subprocess.run([str(active(board) / "run"), "run", "--json"], capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["delegation"]["used"] == "xnnpack"
    again = deploy.deploy(str(models[1]), "board", "rpi5", setup=True, **kwargs)
    assert again.setup_installed is False  # present already: nothing installed


def test_ctrl_c_during_the_upload_says_what_was_done_and_changes_nothing(models, board, monkeypatch):
    first = deploy.deploy(str(models[0]), "board", "rpi5", **board)

    def interrupted(data: bytes):
        yield data[:4096]
        raise KeyboardInterrupt

    monkeypatch.setattr(transport, "_chunks", interrupted)
    done = CliRunner().invoke(cli, ["deploy", str(models[1]), "--to", "board", "--device", "rpi5",
                                    "--ssh-config", board["ssh_config"], "--remote-dir", board["remote_dir"],
                                    "--remote-python", board["remote_python"]])
    assert done.exit_code == 130
    assert "interrupted (uploading to" in done.output and "the board's active model is unchanged" in done.output
    assert os.readlink(active(board)) == f"v-{first.version}"
    check_every_file(active(board))


def test_the_board_settings_come_from_the_environment(models, board, monkeypatch):
    """EDGERT_SSH_CONFIG, EDGERT_REMOTE_DIR and EDGERT_REMOTE_PYTHON stand in for the arguments, for the library
    and the CLI alike (a board you always use is configured once)."""
    monkeypatch.setenv("EDGERT_SSH_CONFIG", board["ssh_config"])
    monkeypatch.setenv("EDGERT_REMOTE_DIR", board["remote_dir"])
    monkeypatch.setenv("EDGERT_REMOTE_PYTHON", board["remote_python"])
    done = deploy.deploy(str(models[0]), "board", "rpi5")
    assert done.remote_path.startswith(board["remote_dir"]) and active(board).is_dir()
    assert deploy.remote_run("board", "digits", ("verify",)).returncode == 0
    again = CliRunner().invoke(cli, ["deploy", str(models[1]), "--to", "board"])
    assert again.exit_code == 0, again.output
    assert deploy.rollback("board", "digits").version == done.version


def test_the_serve_unit_is_one_systemd_accepts_and_keeps_odd_paths_whole(tmp_path):
    """Where systemd runs, deploy --serve writes edgert-serve.service: every argument survives systemd's quoting
    (a space, a quote, a backslash, `%` specifiers and `$` variables), and systemd-analyze accepts the unit."""
    import shlex

    remote_agent = load_agent()
    root = str(tmp_path / 'my "models" 100% $HOME \\x')
    argv = [sys.executable, "-m", "edgert", "serve", "--repository", root, "--port", "8000", "--instances", "2"]
    unit = remote_agent.unit_text(root, root + "/server/lib", argv, "10", "system")
    lines = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)
    literal = lines["ExecStart"].replace("%%", "%").replace("$$", "$")
    assert shlex.split(literal) == argv
    assert shlex.split(lines["Environment"].replace("%%", "%")) == [f"PYTHONPATH={root}/server/lib"]
    assert lines["TimeoutStopSec"] == "15" and lines["WantedBy"] == "multi-user.target"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("no systemd-analyze here to check the unit with")
    path = tmp_path / "edgert-serve.service"
    path.write_text(unit)
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_deploy_serve_runs_edgert_serve_on_the_board(models, board, digits):
    """--setup --serve with the board's plain Python: the venv gets the [serve] packages, the server runs from the
    board's own copy of edgert (here a background process: systemd does not run in this container), answers
    tritonclient, serves the next deploy by itself, and stops by its recorded process id."""
    import socket

    th = needs.module("tritonclient.http")
    python = SYSTEM_PYTHON  # Debian's, with no pip packages: a board as it comes
    kwargs = {**board, "remote_python": python}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    deploy.deploy(str(models[0]), "board", "rpi5", setup=True, **kwargs)  # the runtime, without the server's
    with pytest.raises(DeployError, match=r"cannot serve \(.*/board/venv/bin/python lacks uvicorn, starlette, "
                                          r"prometheus-client\); deploy with --setup --serve"):
        deploy.deploy(str(models[0]), "board", "rpi5", serve=deploy.ServeOptions(port=port), **kwargs)
    done = deploy.deploy(str(models[0]), "board", "rpi5", setup=True,
                         serve=deploy.ServeOptions(port=port, options=("--poll", "0.2")), **kwargs)
    root = Path(board["remote_dir"])
    assert done.serving["url"] == f"http://127.0.0.1:{port}/v2"
    assert "background process" in done.serving["how"] and "systemd is not running" in done.serving["how"]
    assert (root / "server" / "lib" / "edgert" / "serve" / "app.py").is_file()
    client = th.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        x = digits.x_test[:3].astype(np.float32)
        meta = client.get_model_metadata("digits")
        assert meta["versions"] == [done.version]
        item = th.InferInput(meta["inputs"][0]["name"], list(x.shape), "FP32")
        item.set_data_from_numpy(x)
        got = client.infer("digits", [item]).as_numpy(meta["outputs"][0]["name"])
        np.testing.assert_array_equal(got, edgert.load(models[0]).run(x)[0])
        second = deploy.deploy(str(models[1]), "board", "rpi5", **kwargs)  # a board that serves picks it up
        deadline = time.monotonic() + 20
        while client.get_model_metadata("digits")["versions"] != [second.version]:
            assert time.monotonic() < deadline, "the served version did not follow the deploy"
            time.sleep(0.1)
    finally:
        client.close()
        pid = int((root / "server" / "serve.pid").read_text())
        assert deploy.stop_serving("board", **kwargs) is True
    with pytest.raises(OSError):
        os.kill(pid, 0)  # ended by its id
    assert deploy.stop_serving("board", **kwargs) is False


def test_setup_on_32_bit_arm_says_there_is_no_wheel_and_what_to_do(tmp_path):
    """ai-edge-litert has no armv7l wheel: the board's agent says so in one line before pip runs (the machine type
    is stood in for, as an armhf userland would report it)."""
    agent = deploy.AGENT.read_text()  # the script sent to the board

    done = subprocess.run([sys.executable, "-c", agent, "setup", str(tmp_path / "board"), "-", "numpy>=1.23",
                           "ai-edge-litert>=2.3"], capture_output=True, text=True,
                          env={**os.environ, "EDGERT_MACHINE": "armv7l"})
    reply = json.loads(done.stdout)
    assert done.returncode == 1 and reply["kind"] == "no_wheel"
    assert reply["message"].startswith("ai-edge-litert has no wheel for armv7l (32-bit ARM); install a 64-bit OS")
    assert "tflite-runtime" in reply["message"] and not (tmp_path / "board" / "venv").exists()
