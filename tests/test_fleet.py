"""`edgert fleet` over a fleet of real OpenSSH servers on loopback (tests/fleet.py), driven by Ansible: canary and
waves, the health gates, halt at --max-fail, automatic rollback, resume, --check, faults as one line each, status,
rollback, Prometheus targets, and the shipped collection from a plain ansible-playbook run."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgert.cli import cli
from edgert.errors import FleetError, InputDataError
from tests.fleet import Board, Fleet
from tests.sshd import _free_port

pytest.importorskip("ansible_runner", reason="edgert[fleet] is not installed (pip install 'edgert[fleet]')")

EDGERT = str(Path(sys.executable).parent / "edgert")
SERVE_PORTS = (_free_port(), _free_port())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet")
    boards = [Board("b1", groups=("canary",)), Board("b2", groups=("shop",)), Board("wrong", "wrong", ("shop",)),
              Board("b3", groups=("shop",), extra_vars=f"edgert_serve_port={SERVE_PORTS[0]}"),
              Board("b4", groups=("farm",), extra_vars=f"edgert_serve_port={SERVE_PORTS[1]}"),
              Board("b5", groups=("farm",)), Board("b6", groups=("farm",)),
              Board("b7", groups=("own",), extra_vars="edgert_delegate=xnnpack"),
              Board("readonly", "readonly", ("faulty",)), Board("full", "full", ("faulty",)),
              Board("down", "down", ("faulty",)), Board("locked", "locked", ("faulty",)),
              Board("nopython", "nopython", ("faulty",)), Board("hot", "hot", ("faulty",)),
              Board("arm32", "arm32", ("faulty",))]
    f = Fleet(folder, boards)
    why = f.start()
    if why:
        f.stop()
        pytest.skip(why)
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


def intact(fleet, host, name="digits") -> None:
    """Every file of the board's active version matches its manifest."""
    folder = fleet.root(host) / "models" / name / "current"
    manifest = json.loads((folder / "manifest.json").read_text())
    for rel, want in manifest["files"].items():
        assert hashlib.sha256((folder / rel).read_bytes()).hexdigest() == want["sha256"], (host, rel)


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
        intact(fleet, host)

    code, again = rollout(fleet, v1, "--limit", six)
    assert code == 0 and {b["result"] for b in again["boards"]} == {"unchanged"}

    code, report = rollout(fleet, v2, "--limit", six, "--max-slowdown", "50")
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
    code, report = rollout(fleet, v2, "--limit", five, "--waves", "50%,100%", "--max-slowdown", "50", name=name)
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

    code, report = rollout(fleet, v2, "--limit", five, "--waves", "50%,100%", "--max-fail", "50",
                           "--max-slowdown", "50", name=name)
    by = boards(report)
    assert code == 1 and not report["halted"]
    assert [by[h]["result"] for h in ("b1", "b2", "wrong", "b3", "b4")] == \
        ["unchanged", "unchanged", "rolled back", "updated", "updated"]

    code, report = rollout(fleet, v1, "--limit", five, "--waves", "50%,100%", "--rollback-all",
                           "--max-slowdown", "50", name=name)
    by = boards(report)
    assert code == 1 and report["halted"] and report["rolled_back_all"]
    assert (by["b1"]["result"], by["b1"]["after"]) == ("rolled back", version2)
    assert by["b2"]["reason"] == "--rollback-all after the halt"
    assert all(active(fleet, h, name) == version2 for h in ("b1", "b2", "b3", "b4"))
    for h in ("b1", "b2", "b3", "b4"):
        intact(fleet, h, name)


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
        "nopython": ("failed", "no Python on the board"),
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
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("edgert-??????"))  # what was sent is gone


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
            intact(fleet, h, name)
        else:
            assert h not in started or "rolled back" in rows[h]


def test_serve_restarts_the_server_and_checks_it_with_the_new_version(fleet, releases):
    v1, _ = releases
    name = "served"
    try:
        code, report = rollout(fleet, v1, "--limit", "b3,b4", "--serve", name=name)
        assert code == 0, report
        version = report["versions"]["any"]
        for port in SERVE_PORTS:
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
    assert targets[2]["targets"] == [f"127.0.0.1:{SERVE_PORTS[0]}"] and targets[0]["targets"] == ["127.0.0.1:8000"]
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
    from edgert.fleet.gates import check, make_reference

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
