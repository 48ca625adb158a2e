"""edgert against an emulated Raspberry Pi (Debian bookworm arm64 under qemu-user, tests/emulated_board.py), as a
user works against a real one: deploy --setup --bench, run, bench, rollback, a bundle on the board's own Python,
edgert serve answered through an SSH tunnel, and a fleet rollout over it and x86 boards. `make board-test` runs this
module (EDGERT_BOARD=1); `make test` does not (the board takes minutes to build and every Python start under
emulation takes seconds).

Each test prints what a closing note quotes (the wheel tag, the output comparison, the emulated bench line, the
rollback); `pytest -s` shows them.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import edgert
from tests import needs

pytestmark = pytest.mark.skipif(not os.environ.get("EDGERT_BOARD"),
                                reason="the emulated arm64 board runs with `make board-test`")

from tests.sshd import _free_port  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

BIN = Path(sys.executable).parent
REMOTE = "/root/edgert"


@pytest.fixture(scope="module")
def pi(tmp_path_factory):
    """The board's ssh alias and the environment that reaches it; the board is brought up once (cached)."""
    from tests.emulated_board import ALIAS, BoardError, up

    started = time.monotonic()
    try:
        state = up()
    except BoardError as exc:
        pytest.fail(f"the emulated board cannot come up: {exc}")
    print(f"\nboard up in {time.monotonic() - started:.1f} s ({'cold' if state['last_up_cold'] else 'warm'}"
          + (f"; root filesystem {state.get('download_bytes', 0) / 2**20:.0f} MiB downloaded, built in "
             f"{state.get('build_seconds')} s" if state["last_up_cold"] else "") + ")")
    env = {**os.environ, "EDGERT_SSH_CONFIG": state["ssh_config"], "EDGERT_REMOTE_DIR": REMOTE,
           "EDGERT_REMOTE_PYTHON": "/usr/bin/python3"}
    return {"alias": ALIAS, "config": state["ssh_config"], "env": env}


def ssh(pi, command: str, *, data: bytes | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", pi["config"], pi["alias"], command], input=data, capture_output=True,
                          timeout=timeout)


def edgert_cli(pi, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "edgert", *args], capture_output=True, text=True, env=pi["env"], timeout=timeout)


@pytest.fixture(scope="module")
def mobilenet_96(tmp_path_factory):
    """A MediaPipe-sized real model: MobileNetV2 (alpha 0.35, 96 px, weights=None), float32 and int8."""
    from edgert.converters import convert
    from edgert.converters._tf import import_tf

    folder = tmp_path_factory.mktemp("mobilenet")
    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    h5 = folder / "mobilenet96.h5"
    keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35).save(h5)
    calibration = folder / "calibration.npy"
    np.save(calibration, np.random.default_rng(0).uniform(-1, 1, (16, 96, 96, 3)).astype(np.float32))
    return (convert(h5, folder / "mobilenet96.tflite").output_path,
            convert(h5, folder / "mobilenet96_int8.tflite", int8=True, calibration_data=calibration).output_path)


@pytest.fixture(scope="module")
def deployed(pi, int8_tflite):
    """digits_int8 deployed with --setup --bench to a board with nothing of edgert's on it yet: the venv there gets
    the aarch64 wheel."""
    assert ssh(pi, f"rm -rf {REMOTE}").returncode == 0
    done = edgert_cli(pi, "deploy", str(int8_tflite), "--to", pi["alias"], "--device", "rpi5", "--setup", "--bench",
                      "--runs", "20")
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_deploy_setup_installs_the_aarch64_wheel_and_bench_says_emulated(pi, deployed):
    assert ssh(pi, "uname -m").stdout.decode().strip() == "aarch64"
    wheel = ssh(pi, f"cat {REMOTE}/venv/lib/python3*/site-packages/ai_edge_litert-*.dist-info/WHEEL")
    tags = [line.split(": ", 1)[1] for line in wheel.stdout.decode().splitlines() if line.startswith("Tag: ")]
    print(f"\nwheel tags on the board: {tags}")
    assert tags and all(t.endswith("_aarch64") for t in tags), wheel
    emulated = [line for line in deployed.stdout.splitlines() if "emulated:" in line]
    print("deploy --bench: " + (emulated[0].strip() if emulated else "(none)"))
    assert emulated and emulated[0].strip().startswith("emulated: timings are not the board's (aarch64 userland, x86")
    assert "runtime installed in /root/edgert/venv" in deployed.stdout


def _remote_outputs(pi, name: str, x: np.ndarray) -> list[np.ndarray]:
    """`edgert run` on the board (the deployed bundle, the venv's Python) on inputs sent from here."""
    from io import BytesIO

    buffer = BytesIO()
    np.save(buffer, x)
    sent = ssh(pi, f"cat > /tmp/{name}_x.npy", data=buffer.getvalue())
    assert sent.returncode == 0, sent.stderr
    done = ssh(pi, f"{REMOTE}/models/{name}/current/run run --input /tmp/{name}_x.npy --json")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    reply = json.loads(done.stdout)
    return [np.asarray(o["values"], np.float32) for o in reply["outputs"].values()], reply


def _compare(name: str, local: np.ndarray, board: np.ndarray, int8: bool) -> None:
    if int8:
        differ = int((local != board).sum())
        print(f"{name}: int8 outputs, {differ} of {local.size} elements differ" + (
            f" (max {np.abs(local - board).max():.3g}, one quantization step is the output scale)" if differ else
            ", identical"))
        assert differ <= max(1, local.size // 100)  # ARM and x86 int8 kernels may round one step apart
    else:
        rel = float(np.abs(local - board).max() / max(np.abs(local).max(), 1e-12))
        print(f"{name}: float outputs, max relative difference {rel:.2e}")
        assert rel <= 1e-5


def test_run_on_the_board_matches_this_machine(pi, deployed, float_tflite, int8_tflite, mobilenet_96, digits):
    x = digits.x_test[:8].astype(np.float32)
    cases = [("digits_int8", int8_tflite, x, True), ("digits", float_tflite, x, False)]
    rng = np.random.default_rng(1)
    m96 = rng.uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    cases += [("mobilenet96", mobilenet_96[0], m96, False), ("mobilenet96_int8", mobilenet_96[1], m96, True)]
    for name, path, inputs, int8 in cases:
        if name != "digits_int8":
            done = edgert_cli(pi, "deploy", str(path), "--to", pi["alias"], "--device", "rpi5")
            assert done.returncode == 0, done.stderr[-2000:]
        (board,), _ = _remote_outputs(pi, name, inputs)
        local = edgert.load(path).run(inputs)[0]
        _compare(name, local, board.reshape(local.shape), int8)


def test_bench_on_the_board_says_aarch64_and_emulated(pi, deployed):
    done = ssh(pi, f"{REMOTE}/models/digits_int8/current/run bench --runs 20 --json")
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    machine = json.loads(done.stdout)["results"][0]["machine"] if "results" in json.loads(done.stdout) else \
        json.loads(done.stdout)["machine"]
    print(f"\nbench machine on the board: platform {machine['platform']}, emulated: {machine['emulated']}")
    assert "aarch64" in machine["platform"] and machine["emulated"]
    text = ssh(pi, f"{REMOTE}/models/digits_int8/current/run bench --runs 20").stdout.decode()
    line = next(line for line in text.splitlines() if line.startswith("emulated:"))
    print(line)
    assert line.startswith("emulated: timings are not the board's")


def test_rollback_on_the_board(pi, deployed, float_tflite, int8_tflite):
    first = json.loads(edgert_cli(pi, "deploy", str(int8_tflite), "--to", pi["alias"], "--device", "rpi5",
                                  "--json").stdout)["version"]
    second = edgert_cli(pi, "deploy", str(float_tflite), "--name", "digits_int8", "--to", pi["alias"], "--device",
                        "rpi5")
    assert second.returncode == 0, second.stderr
    back = edgert_cli(pi, "deploy", "--rollback", "--name", "digits_int8", "--to", pi["alias"])
    print(f"\n{back.stdout.strip()}")
    assert back.returncode == 0 and f"rolled back to version {first}" in back.stdout
    current = ssh(pi, f"readlink {REMOTE}/models/digits_int8/current").stdout.decode().strip()
    assert current == f"v-{first}"


def test_a_bundle_on_the_boards_own_python(pi, int8_tflite, tmp_path):
    bundle = tmp_path / "digits_int8.edgert"
    made = edgert_cli(pi, "bundle", str(int8_tflite), "--device", "rpi5", "-o", str(bundle))
    assert made.returncode == 0, made.stderr
    assert ssh(pi, "cat > /root/digits_int8.edgert", data=bundle.read_bytes()).returncode == 0
    verify = ssh(pi, "python3 /root/digits_int8.edgert verify")
    print(f"\npython3 digits_int8.edgert verify: {verify.stdout.decode().strip()}")
    assert verify.returncode == 0 and verify.stdout.decode().startswith("ok:")
    bare = ssh(pi, "python3 /root/digits_int8.edgert run")  # Debian's python3 alone: no numpy, no interpreter
    message = (bare.stdout + bare.stderr).decode().strip()
    print(f"python3 digits_int8.edgert run (system Python): {message}")
    assert bare.returncode != 0 and len(message.splitlines()) == 1 and "Traceback" not in message
    run = ssh(pi, f"{REMOTE}/venv/bin/python /root/digits_int8.edgert run")
    assert run.returncode == 0 and b"ran in" in run.stdout, run.stderr


def test_serve_on_the_board_through_an_ssh_tunnel(pi, deployed, int8_tflite, digits):
    th = needs.module("tritonclient.http")
    done = edgert_cli(pi, "deploy", str(int8_tflite), "--to", pi["alias"], "--device", "rpi5", "--setup", "--serve",
                      "--serve-port", "8000")
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"\n{[line for line in done.stdout.splitlines() if 'serving' in line][0].strip()}")
    local = _free_port()
    tunnel = subprocess.Popen(["ssh", "-F", pi["config"], "-N", "-L", f"{local}:127.0.0.1:8000", pi["alias"]])
    try:
        client = th.InferenceServerClient(f"127.0.0.1:{local}")
        wait_until(lambda: client.is_model_ready("digits_int8"), seconds=120,  # the tunnel comes up first
                   failure=lambda: "the board's server did not answer through the tunnel")
        x = digits.x_test[:4].astype(np.float32)
        meta = client.get_model_metadata("digits_int8")
        item = th.InferInput(meta["inputs"][0]["name"], list(x.shape), "FP32")
        item.set_data_from_numpy(x)
        got = client.infer("digits_int8", [item]).as_numpy(meta["outputs"][0]["name"])
        _compare("digits_int8 served on the board", edgert.load(int8_tflite).run(x)[0], got, True)
        client.close()
    finally:
        tunnel.terminate()
        tunnel.wait(10)
        stopped = edgert_cli(pi, "deploy", "--to", pi["alias"], "--stop-serving")
        assert "stopped" in stopped.stdout, stopped.stdout + stopped.stderr


def test_the_ssh_commands_used_here_are_what_a_user_types(pi):
    """The alias works with plain ssh and the config file, as ~/.ssh/config would."""
    done = subprocess.run(["ssh", "-F", pi["config"], pi["alias"], "python3 -c " + shlex.quote(
        "import platform, sys; print(platform.machine(), sys.version.split()[0])")], capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0 and done.stdout.startswith("aarch64 3.11"), done.stderr


def test_one_rollout_covers_the_arm64_board_and_x86_boards(pi, float_tflite, int8_tflite, tmp_path):
    """`edgert fleet rollout --setup` to the emulated arm64 board as it comes (a remote directory nothing has set up,
    reached as a Pi is: ansible_python_interpreter=/usr/bin/python3, no edgert_python) and two fresh x86 boards on
    loopback sshd (only Debian's system Python): each makes its venv (the aarch64 wheels on the Pi), both
    architectures install, and the gates hold on both (outputs against this machine's, within a quantization step
    for int8 under qemu, and the p50 check against the version each board ran). A rerun changes nothing, and a
    rollback puts the first release back everywhere."""
    needs.module("ansible_runner", "edgert[fleet] is not installed")
    import getpass

    from tests.fleet import SYSTEM_PYTHON, Board, Fleet

    remote = "/root/edgert-fleet"  # nothing of edgert's there yet: a new board for the fleet
    assert ssh(pi, f"rm -rf {remote}").returncode == 0
    fleet = Fleet(tmp_path / "x86", [Board("x86-1", "fresh"), Board("x86-2", "fresh")])
    why = fleet.start()
    if why:
        fleet.stop()
        needs.missing(why)
    try:
        inventory = tmp_path / "hosts.ini"
        x86 = [f"{b.name} ansible_host=127.0.0.1 ansible_port={b.port} ansible_user={getpass.getuser()} "
               f"ansible_ssh_private_key_file={fleet.folder / 'fleet_ed25519'} edgert_remote_dir={fleet.root(b.name)} "
               f"ansible_python_interpreter={SYSTEM_PYTHON} ansible_ssh_common_args='{fleet.ssh_args()}'"
               for b in fleet.boards]
        board = (f"{pi['alias']} ansible_ssh_common_args='-F {pi['config']}' edgert_remote_dir={remote} "
                 f"edgert_device=rpi5 ansible_python_interpreter=/usr/bin/python3")
        inventory.write_text("[pis]\n" + board + "\n\n[x86]\n" + "\n".join(x86) + "\n")

        def rollout(model, *args):
            done = edgert_cli(pi, "fleet", "rollout", str(model), "-i", str(inventory), "--name", "fleet_digits",
                              "--setup", "--runs", "10", "--json", *args)
            assert done.stdout.strip().startswith("{"), done.stdout[-3000:] + done.stderr[-3000:]
            return done.returncode, json.loads(done.stdout)

        reports = []
        for model in (float_tflite, int8_tflite):  # two releases in waves: the second is timed against the first
            code, report = rollout(model, "--canary", "1", "--waves", "100%")
            assert code == 0, report
            reports.append(report)
        for report in reports:
            boards = {b["host"]: b for b in report["boards"]}
            print("\n" + "; ".join(f"{h} {b['arch']} {b['result']} cosine {b['min_cosine']:.4f} "
                                   f"p50 {b['p50_ms']:.3f} ms" for h, b in boards.items()))
            assert boards[pi["alias"]]["wave"] == 1 and boards[pi["alias"]]["arch"] == "aarch64"
            assert {boards[h]["arch"] for h in ("x86-1", "x86-2")} == {"x86_64"}
            assert all(b["result"] == "updated" and b["min_cosine"] >= 0.98 for b in boards.values())
        assert all(b["baseline_p50_ms"] for b in reports[1]["boards"])
        wheel = ssh(pi, f"cat {remote}/venv/lib/python3*/site-packages/ai_edge_litert-*.dist-info/WHEEL")
        assert b"_aarch64" in wheel.stdout, wheel
        code, again = rollout(int8_tflite)
        assert code == 0 and {b["result"] for b in again["boards"]} == {"unchanged"}
        status = json.loads(edgert_cli(pi, "fleet", "status", "-i", str(inventory), "--model", "fleet_digits",
                                       "--json").stdout)
        rows = {r["host"]: r for r in status["boards"]}
        assert rows[pi["alias"]]["device"] == "rpi5" and rows[pi["alias"]]["arch"] == "aarch64"
        assert len({r["models"][0]["active"] for r in status["boards"]}) == 2  # a version for rpi5, one for any
        back = edgert_cli(pi, "fleet", "rollback", str(int8_tflite), "--name", "fleet_digits", "-i", str(inventory),
                          "--json")
        assert back.returncode == 0 and {b["result"] for b in json.loads(back.stdout)["boards"]} == {"switched back"}
        firsts = {b["host"]: b["after"] for b in reports[0]["boards"]}
        current = ssh(pi, f"readlink {remote}/models/fleet_digits/current").stdout.decode().strip()
        assert current == f"v-{firsts[pi['alias']]}"
    finally:
        fleet.stop()
