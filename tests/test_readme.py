"""Every code block in the README is executed here, so the README cannot drift from what edgert does.

A block's kind comes from its fence (`sh`, `python`, `toml`), from a `$ ` first line (a transcript: each command
runs and its output is compared with the lines under it), or from a marker on the line above the fence,
`<!-- test: KIND [OPTION ...] -->`. Commands run in a fresh copy of what `make demo` writes (build/demo), as the
README tells the reader to `cd build/demo`; each block starts from that copy again.

Outputs are compared loosely where machines differ and strictly elsewhere: numbers match any number, hex strings
of 12 or more digits any hex string, runs of spaces any spacing; a line `...` stands for any lines, a line that
ends in `...` for any line that starts as it does, and `vary=WORD` lets the lines that start with WORD differ
after it (the machine's description, a search's choice).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import needs

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BIN = Path(sys.executable).parent
KINDS = ("sh", "transcript", "python", "toml", "demo", "benchmark", "layout", "make", "install", "serve",
         "inventory", "ansible")


@dataclass(frozen=True)
class Block:
    line: int  # where the fence opens, 1-based
    lang: str
    text: str
    kind: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"README.md:{self.line}:{self.kind}"


def parse_readme(text: str) -> list[Block]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```")
        body = "\n".join(lines[start + 1:end]) + "\n"
        marker = re.match(r"^<!-- test: (\S+)(.*?)-->\s*$", lines[start - 1]) if start else None
        if marker:
            kind, options = marker.group(1), dict(_option(o) for o in shlex.split(marker.group(2)))
        elif lang in ("sh", "python", "toml"):
            kind, options = lang, {}
        elif body.startswith("$ "):
            kind, options = "transcript", {}
        else:
            kind, options = "", {}
        blocks.append(Block(start + 1, lang, body, kind, options))
        i = end + 1
    return blocks


def _option(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key, value or "yes"


BLOCKS = parse_readme(README.read_text())


# -- loose comparison of outputs -------------------------------------------------------------------------------


NUMBER = re.compile(r"(?<![A-Za-z_\d.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")  # not in names (int8) or versions' tails
# Figures that depend on the machine and the moment, not on edgert: timings, rates, memory, temperature, free disk.
TIMING_UNITS = {"ms", "us", "s", "min", "mhz", "c"}
MACHINE_LINES = re.compile(r"\b(p50|p90|p99|mean ms|inferences/s|requests/s|RSS|temp|mJ|power|free in|cpu|took|"
                           r"in \d)", re.I)


def normalise(line: str, vary: tuple[str, ...] = (), marks: bool = False) -> str:
    """The line's shape: numbers as N and long hex strings as H, spacing collapsed (the numbers are compared by
    `numbers_fit`)."""
    if marks:  # a table's row markers (a search's Pareto front and choice) may differ between machines
        line = re.sub(r"^(\s*)[>*]+", r"\1", line)
    line = re.sub(r"\b[0-9a-f]{12,}\b", "H", line)
    line = NUMBER.sub("N", line)
    line = " ".join(line.split())
    first = line.split(" ", 1)[0] if line else ""
    return first if first.rstrip(":") in vary else line


def _numbers(line: str) -> list[tuple[float, int, str, str]]:
    """Each number of a line: (value, decimals printed, the word before it, the token after it)."""
    line = re.sub(r"\b[0-9a-f]{12,}\b", "H", line)
    out = []
    for m in NUMBER.finditer(line):
        text = m.group(0)
        decimals = len(text.split(".")[1].split("e")[0]) if "." in text else 0
        before = line[:m.start()].split()
        after = line[m.end():].split()
        out.append((float(text), decimals, before[-1].lower() if before else "",
                    after[0].lower().strip(",;()") if after else ""))
    return out


def number_fits(want: float, got: float, decimals: int, before: str, after: str, line: str) -> bool:
    """A README figure against the one measured now, within its band: machine figures (timings, rates, memory) are
    free; quality figures have a floor (a cosine 0.01 lower, SQNR 3 dB, an accuracy or agreement 2 points, recall and
    precision 0.05), a float's difference a ceiling (ten times, at most 1e-5); the rest +-2% (and the rounding of
    the digits shown), so a count or a size 10% off fails."""
    if after in TIMING_UNITS or MACHINE_LINES.search(line) or after.endswith("/s") or before in ("p50", "p90"):
        return True
    if before.rstrip("(") in ("cosine", "sample") or (before in ("recall", "precision")):
        return got >= want - (0.05 if before in ("recall", "precision") else 0.01)
    if after == "db":
        return got >= want - 3.0
    if after.startswith("%") and ("accuracy" in line or "agreement" in line or want >= 50):
        return got >= want - 2.0
    if after == "points" or (before.endswith("%") and after[:1].isdigit()):
        # accuracy points lost (`+0.89 points`, a table's drop column after its accuracy): the difference of two
        # accuracies, each held to 2 points above, so it may not grow by more than 2 points
        return got <= want + 2.0
    if before == "difference":
        return got <= max(10 * want, 1e-5)
    slack = 0.5 * 10 ** -decimals if decimals or abs(want) >= 1 else 0.0
    return abs(got - want) <= 0.02 * abs(want) + slack


def numbers_fit(expected: str, actual: str, free: frozenset[int] = frozenset()) -> bool:
    """Every number of the line within its band; the `free` positions (1-based: a table's timing column, whose
    heading carries the unit) are the machine's."""
    want, got = _numbers(expected), _numbers(actual)
    return len(want) == len(got) and all(i in free or i - len(want) - 1 in free or
                                         number_fits(w[0], g[0], w[1], w[2], w[3], expected)
                                         for i, (w, g) in enumerate(zip(want, got), 1))


def mismatch(expected: list[str], actual: list[str], vary: tuple[str, ...] = (), marks: bool = False,
             free: frozenset[int] = frozenset()) -> str | None:
    """None when `actual` is what `expected` describes; else the first expected line that was not found. `free`:
    number positions that are the machine's in every line (the block's `free=6,7` option)."""
    want = [(normalise(e[:-3], vary, marks), True, e[:-3]) if e.endswith("...") and e.strip() != "..." else
            ("...", False, "") if e.strip() == "..." else (normalise(e, vary, marks), False, e) for e in expected]
    got = [(normalise(a, vary, marks), a) for a in actual if a.strip()]
    want = [w for w in want if w[0] or w[:2] == ("...", False)]

    def fits(w: tuple[str, bool, str], a: tuple[str, str]) -> bool:
        if w[1]:
            return a[0].startswith(w[0]) and (w[0].split(" ", 1)[0].rstrip(":") in vary
                                              or numbers_fit(w[2], a[1], free) or _prefix_numbers_fit(w, a))
        return a[0] == w[0] and (w[0].split(" ", 1)[0].rstrip(":") in vary or numbers_fit(w[2], a[1], free))

    def walk(wi: int, ai: int) -> bool:
        if wi == len(want):
            return ai == len(got)
        if want[wi][:2] == ("...", False):
            return any(walk(wi + 1, k) for k in range(ai, len(got) + 1))
        return ai < len(got) and fits(want[wi], got[ai]) and walk(wi + 1, ai + 1)

    if walk(0, 0):
        return None
    # Name the first line that cannot be placed, for the failure message.
    ai = 0
    for w in want:
        if w[:2] == ("...", False):
            continue
        found = next((k for k in range(ai, len(got)) if fits(w, got[k])), None)
        if found is None:
            shaped = next((g[1] for g in got[ai:] if g[0] == w[0] or (w[1] and g[0].startswith(w[0]))), None)
            return w[0] if shaped is None else f"{w[2].strip()}  (figures out of band; now: {shaped.strip()})"
        ai = found + 1
    if want and want[0][:2] != ("...", False) and (not got or not fits(want[0], got[0])):
        return "(the output starts with lines the README does not show; begin the block with ...)"
    return "(the output has lines the README does not show; put ... where they are)"


def _prefix_numbers_fit(w: tuple[str, bool, str], a: tuple[str, str]) -> bool:
    """A line the README ends with `...`: its numbers against the first numbers of the measured line."""
    want, got = _numbers(w[2]), _numbers(a[1])
    return len(got) >= len(want) and all(number_fits(x[0], y[0], x[1], x[2], x[3], w[2])
                                         for x, y in zip(want, got))


def test_the_comparison_is_strict_where_it_should_be():
    assert mismatch(["size 14.5 KiB"], ["size  14.7 KiB"]) is None
    assert mismatch(["size 14.5 KiB"], ["size 16.0 KiB"]) is not None  # 10% off
    assert mismatch(["size 14.5 KiB"], ["size 14.5 MiB"]) == "size N KiB"
    assert mismatch(["6 boards: 6 updated"], ["6 boards: 5 updated"]) is not None
    assert mismatch(["p50 ms 0.004 0.003"], ["p50 ms 0.009 0.011"]) is None  # the machine's timing
    assert mismatch(["ran in 0.56 ms"], ["ran in 3.1 ms"]) is None
    assert mismatch(["int8  98.2%  41.6K  0.005"], ["int8  98.0%  41.4K  0.012"], free=frozenset({3})) is None
    assert mismatch(["int8  98.2%  41.6K  0.005"], ["int8  98.0%  46.4K  0.005"], free=frozenset({3})) is not None
    assert mismatch(["prune75  97.77%  0.89  6.1K"], ["prune75  98.00%  0.45  6.1K"]) is None  # points lost: fewer
    assert mismatch(["prune75  97.77%  0.89  6.1K"], ["prune75  96.00%  3.10  6.1K"]) is not None  # 2.2 more
    assert mismatch(["chosen (6.8x smaller, +0.89 points)"], ["chosen (6.8x smaller, +3.00 points)"]) is not None
    assert mismatch(["int8  98.2%  41.6K  0.005"], ["int8  98.0%  20.1K  0.005"]) is not None  # a size stays +-2%
    assert mismatch(["cam-1  rpi5  0.004  -"], ["cam-1  rpi5  0.012  -"], free=frozenset({-1})) is None
    assert mismatch(["cosine 1.0000 (worst sample 0.9990), SQNR 49.7 dB"],
                    ["cosine 0.9995 (worst sample 0.9950), SQNR 47.0 dB"]) is None
    assert mismatch(["cosine 1.0000 (worst sample 0.9990), SQNR 49.7 dB"],
                    ["cosine 0.9000 (worst sample 0.8990), SQNR 49.7 dB"]) is not None  # a floor for cosines
    assert mismatch(["accuracy 98.66%"], ["accuracy 88.00%"]) is not None
    assert mismatch(["max relative difference 8.9e-07"], ["max relative difference 2.0e-06"]) is None
    assert mismatch(["max relative difference 8.9e-07"], ["max relative difference 3.0e-04"]) is not None
    assert mismatch(["ai_edge_litert 2.3.0"], ["ai_edge_litert 2.4.0"]) is not None
    assert mismatch(["int8"], ["int16"]) is not None
    assert mismatch(["a", "...", "z"], ["a", "b", "c", "z"]) is None
    assert mismatch(["a", "z"], ["a", "b", "z"]) is not None
    assert mismatch(["a"], ["a", "b"]) is not None
    assert mismatch(["a", "..."], ["a", "b"]) is None
    assert mismatch(["delegation: xnnpack ..."], ["delegation: xnnpack (threads=2): 5/6"]) is None
    assert mismatch(["version 5eb088b178f63dab"], ["version 0123456789abcdef"]) is None
    assert mismatch(["machine AMD EPYC"], ["machine Intel Xeon"], vary=("machine",)) is None
    assert mismatch(["chosen: a"], ["picked: a"], vary=("chosen",)) is not None
    assert mismatch(["  >*prune80 1.0"], ["   *prune80 1.0"], marks=True) is None
    assert mismatch(["  >*prune80 1.0"], ["   *prune75 2.0"], marks=True) is not None


# -- the sandbox -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> tuple[Path, str]:
    """`make demo` in a folder of its own: (its build/demo, what it printed)."""
    root = tmp_path_factory.mktemp("readme")
    done = subprocess.run([sys.executable, str(REPO / "examples" / "digits_demo.py")], cwd=root, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(root), timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:]
    return root / "build" / "demo", done.stdout


def _env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGERT_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", EDGERT_CACHE_DIR=str(home / "cache"),
               MPLBACKEND="Agg", COLUMNS="120", **(extra or {}))
    return env


@pytest.fixture
def sandbox(demo, tmp_path) -> Path:
    """A fresh copy of build/demo, under a build/ of its own (so that `cd build/demo` works from its root)."""
    work = tmp_path / "build" / "demo"
    shutil.copytree(demo[0], work, symlinks=True)
    return work


def _run(command: str, cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)


def transcript(text: str) -> list[tuple[str, list[str]]]:
    """`$ command` lines (with `\\` continuations) and the output lines under each."""
    steps: list[tuple[str, list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            command = line[2:]
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            steps.append((command, []))
        else:
            assert steps, f"output before the first command: {line!r}"
            steps[-1][1].append(line)
        i += 1
    return steps


# -- boards and fixture trees the blocks may ask for -----------------------------------------------------------


def _rpi5_with_coral(root: Path) -> dict[str, str]:
    """A Raspberry Pi 5's device tree with a Coral USB Accelerator (firmware loaded) on port 3-1."""
    model = root / "proc" / "device-tree" / "model"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    for port, vendor, product in (("usb1", "1d6b", "0002"), ("3-1", "18d1", "9302")):
        folder = root / "sys" / "bus" / "usb" / "devices" / port
        folder.mkdir(parents=True)
        (folder / "idVendor").write_text(vendor + "\n")
        (folder / "idProduct").write_text(product + "\n")
    return {"EDGERT_SYSFS_ROOT": str(root), "EDGERT_MACHINE": "aarch64", "EDGERT_GETPROP": str(root / "no-getprop")}


SYSFS = {"rpi5-coral": _rpi5_with_coral}


@pytest.fixture(scope="session")
def ssh_board(tmp_path_factory):
    from tests.sshd import SshServer

    server = SshServer(tmp_path_factory.mktemp("sshd"))
    why = server.start()
    if why:
        server.stop()
        needs.missing(why)
    yield server
    server.stop()


def _inventory_hosts(text: str) -> list[str]:
    """The host names of an INI inventory, in order (not the [group:vars] sections' keys)."""
    hosts, section = [], ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif line and not line.startswith("#") and not section.endswith(":vars]"):
            name = line.split()[0]
            if name not in hosts:
                hosts.append(name)
    return hosts


@pytest.fixture(scope="session")
def readme_fleet(tmp_path_factory):
    """The README inventory's boards, each an sshd on loopback (tests/fleet.py)."""
    needs.module("ansible_runner", "edgert[fleet] is not installed")
    from tests.fleet import Board, Fleet

    (block,) = [b for b in BLOCKS if b.kind == "inventory"]
    fleet = Fleet(tmp_path_factory.mktemp("readme-fleet"), [Board(h) for h in _inventory_hosts(block.text)])
    why = fleet.start()
    if why:
        fleet.stop()
        needs.missing(why)
    yield fleet
    fleet.stop()


def _fleet_inventory(fleet, sandbox: Path) -> None:
    """hosts.ini in the sandbox: the README's inventory, then each board's loopback address, key and folders (host
    variables given later win, as they would in the reader's own group_vars)."""
    import getpass

    (block,) = [b for b in BLOCKS if b.kind == "inventory"]
    lines = [f"{b.name} ansible_host=127.0.0.1 ansible_port={b.port} ansible_user={getpass.getuser()} "
             f"ansible_ssh_private_key_file={fleet.folder / 'fleet_ed25519'} "
             f"edgert_remote_dir={fleet.root(b.name)} edgert_python={sys.executable} "
             f"ansible_python_interpreter={sys.executable}" for b in fleet.boards]
    (sandbox / "hosts.ini").write_text(block.text + "\n[readme_loopback]\n" + "\n".join(lines)
                                       + f"\n\n[readme_loopback:vars]\nansible_ssh_common_args='{fleet.ssh_args()}'\n")


def _block_env(block: Block, sandbox: Path, request) -> dict[str, str]:
    extra: dict[str, str] = {}
    if "fleet" in block.options:  # each fleet block starts from new boards, whichever block ran before it
        fleet = request.getfixturevalue("readme_fleet")
        fleet.wipe()
        _fleet_inventory(fleet, sandbox)
    if "sysfs" in block.options:
        extra.update(SYSFS[block.options["sysfs"]](sandbox.parent.parent / "sysfs"))
    if "board" in block.options:
        server = request.getfixturevalue("ssh_board")
        # The README's board is pi@raspberrypi.local; here it is the test's sshd, reached the same way.
        root = sandbox.parent.parent
        (root / "ssh_config").write_text(server.client_config("client_ed25519", alias="raspberrypi.local"))
        # board=fresh: a new Pi, whose only Python is the system's (no runtime, so that --setup installs one).
        fresh = block.options["board"] == "fresh"
        extra.update(EDGERT_SSH_CONFIG=str(root / "ssh_config"),
                     EDGERT_REMOTE_DIR=str(root / ("fresh_board" if fresh else "board")),
                     EDGERT_REMOTE_PYTHON="/usr/bin/python3" if fresh else sys.executable)
    return _env(sandbox.parent.parent, extra)


def _as_board_user(text: str) -> str:
    """The README logs in as pi@; the test's sshd knows only the user running the tests."""
    import getpass

    return text.replace("pi@raspberrypi.local", f"{getpass.getuser()}@raspberrypi.local")


# -- the blocks ------------------------------------------------------------------------------------------------


def test_every_block_has_a_test():
    untested = [b.line for b in BLOCKS if b.kind not in KINDS]
    assert not untested, f"README blocks without a kind (add <!-- test: KIND --> above them): lines {untested}"
    assert len(BLOCKS) > 20
    # A Python block's claims are asserts, so that running it checks them (exit code 0 alone proves little).
    unchecked = [b.line for b in BLOCKS if b.kind == "python" and not re.search(r"^\s*assert ", b.text, re.M)]
    assert not unchecked, f"README Python blocks that assert nothing they claim: lines {unchecked}"


RUN_KINDS = ("sh", "transcript", "python", "ansible")


@pytest.mark.slow
@pytest.mark.parametrize("block", [pytest.param(b, marks=pytest.mark.heavy) if "heavy" in b.options else b
                                   for b in BLOCKS if b.kind in RUN_KINDS], ids=lambda b: b.id)
def test_block_runs(block: Block, sandbox: Path, request):
    env = _block_env(block, sandbox, request)
    for name in filter(None, block.options.get("files", "").split(",")):  # repository files the block uses
        if "torch" in name:
            needs.module("litert_torch")
            needs.module("onnx2tf")
        shutil.copy(REPO / name, sandbox)
    timeout = int(block.options.get("timeout", 900))
    if block.kind == "sh":
        text = _as_board_user(block.text) if "board" in block.options else block.text
        cwd = sandbox.parent.parent if text.startswith("cd build/demo") else sandbox
        done = _run("set -e\n" + text, cwd, env, timeout)
        assert done.returncode == 0, done.stdout[-3000:]
        return
    if block.kind == "ansible":  # a playbook of the reader's own, with the bundle and reference its comments make
        (sandbox / "site.yml").write_text(block.text)
        done = _run("set -e\nedgert bundle digits_int8.tflite --device rpi5 --force\n"
                    "edgert fleet reference digits_int8.tflite --force\n"
                    "ANSIBLE_COLLECTIONS_PATH=$(edgert fleet collection-path) ansible-playbook -i hosts.ini site.yml",
                    sandbox, env, timeout)
        assert done.returncode == 0 and "failed=0" in done.stdout, done.stdout[-3000:]
        return
    if block.kind == "python":
        script = sandbox / "readme_block.py"
        text = _as_board_user(block.text) if "board" in block.options else block.text
        with contextlib.ExitStack() as stack:
            if "serve" in block.options:  # the client examples talk to the README's own `edgert serve`
                port, _ = stack.enter_context(_served(sandbox, env))
                text = text.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            script.write_text(text)
            done = subprocess.run([sys.executable, script.name], cwd=sandbox, env=env, text=True, timeout=timeout,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert done.returncode == 0, done.stdout[-3000:]
        return
    vary = tuple(filter(None, block.options.get("vary", "").split(",")))
    marks = "marks" in block.options
    free = frozenset(int(i) for i in block.options.get("free", "").split(",") if i)  # table columns: machine's
    for command, expected in transcript(block.text):
        done = _run(_as_board_user(command) if "board" in block.options else command, sandbox, env, timeout)
        output = done.stdout.splitlines()
        shown = "\n".join(output[-60:])
        if done.returncode != 0:
            assert any(e.startswith("Error:") for e in expected), f"$ {command}\nexit {done.returncode}\n{shown}"
        problem = mismatch([_as_board_user(e) for e in expected], output, vary, marks, free) if expected else None
        assert problem is None, f"$ {command}\nthe README's line\n  {problem}\nis not in the output:\n{shown}"


@contextlib.contextmanager
def _served(sandbox: Path, env: dict[str, str]):
    """The README's `edgert serve` command, running in the background on a free port until the block is done."""
    import socket
    import urllib.request

    (block,) = [b for b in BLOCKS if b.kind == "serve"]
    ((command, expected),) = transcript(block.text)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(["bash", "-c", f"exec {command} --port {port}"], cwd=sandbox, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, f"$ {command}: did not start"
            time.sleep(0.1)
        yield port, expected
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    served_lines = out.splitlines()
    assert process.returncode == 0, out
    problem = mismatch([e.replace(":8000/", f":{port}/") for e in expected], served_lines, (), False)
    assert problem is None, f"$ {command}\nthe README's line\n  {problem}\nis not in the output:\n{out}"


@pytest.mark.slow
def test_the_serve_block_starts_and_stops_as_shown(sandbox):
    """The server's banner is what the README shows, and SIGTERM ends it with exit 0 (checked in _served)."""
    (block,) = [b for b in BLOCKS if b.kind == "serve"]
    with _served(sandbox, _block_env(block, sandbox, None)):
        pass


@pytest.mark.slow
def test_the_demo_output_is_what_make_demo_prints(demo):
    (block,) = [b for b in BLOCKS if b.kind == "demo"]
    problem = mismatch(block.text.splitlines(), demo[1].splitlines())
    assert problem is None, f"the README's line\n  {problem}\nis not in make demo's output:\n{demo[1]}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "toml"], ids=lambda b: b.id)
def test_toml_blocks_parse_and_name_real_entry_point_groups(block):
    data = tomllib.loads(block.text)
    ours = tomllib.loads((REPO / "pyproject.toml").read_text())
    for group in data.get("project", {}).get("entry-points", {}):
        assert group in ours["project"]["entry-points"], group


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.kind == "benchmark"], ids=lambda b: b.id)
def test_benchmark_tables_are_what_their_script_prints(block):
    """A benchmark's table in the README comes from the script it names: each column heading is printed by it.
    (The runs themselves take minutes to an hour and are reported, not repeated here.)"""
    script = REPO / block.options["script"]
    assert script.is_file(), script
    source = script.read_text()
    header = next(line for line in block.text.splitlines() if line.strip())
    missing = [w for w in header.split() if w not in source]
    assert not missing, f"{script.name} prints no column {missing}"


def test_the_layout_block_names_what_is_there():
    (block,) = [b for b in BLOCKS if b.kind == "layout"]
    for line in block.text.splitlines():
        if line and not line.startswith(" "):
            path = line.split()[0]
            assert (REPO / path).exists(), path
    named = {line.split()[0] for line in block.text.splitlines() if line and not line.startswith(" ")}
    for package in (REPO / "edgert").glob("*/__init__.py"):  # every subpackage has its line
        assert f"edgert/{package.parent.name}/" in named, package.parent.name


def test_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    for block in (b for b in BLOCKS if b.kind == "make"):
        for line in block.text.splitlines():
            words = line.split("#")[0].split()
            if words[:1] == ["make"]:
                assert set(words[1:]) <= targets, line


@pytest.mark.slow
def test_the_install_block_installs_the_runtime_alone(tmp_path, int8_tflite, h5_path):
    """The README's install, word for word, on a copy of the source in a fresh venv: the runtime comes without
    TensorFlow and runs a model; the [convert] line is resolved (--dry-run) but not installed, as TensorFlow is
    half a gigabyte."""
    (block,) = [b for b in BLOCKS if b.kind == "install"]
    source = tmp_path / "edgert"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {**_env(tmp_path), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    script = "\n".join(line.replace(" install ", " install --dry-run ", 1)
                         if "[convert]" in line and line.startswith("python3 -m pip install") else line
                         for line in block.text.splitlines())  # the TensorFlow stack: resolved, not installed
    done = _run("set -e\n" + script, source, env, 1800)
    assert done.returncode == 0, done.stdout[-3000:]
    wheel = next((source / "dist").glob("edgert-*-py3-none-any.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("edgert/py.typed", "edgert/cli/runtime.py", "edgert/devices/profiles/rpi5.toml",
                   "edgert/android/templates/Model.kt", "edgert/delegates/xnnpack.py", "edgert/converters/keras3.py",
                   "edgert/serve/app.py", "edgert/tasks/pipeline.py", "edgert/plugin_api.py", "edgert/bundled.py",
                   "edgert/deploy/collections/ansible_collections/edgert/fleet/plugins/module_utils/agent.py"):
        assert needed in names, needed
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "edgert").rglob("__init__.py")
                if "collections" not in p.parts}
    assert packages <= {n.rpartition("/")[0] for n in names}, packages  # every subpackage: tflite, runtime, ...
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "tensorflow" in done.stdout.lower()  # the dry run would bring the TensorFlow stack
    run = _run(f"edgert run {shlex.quote(str(int8_tflite))}", tmp_path, env, 300)
    assert run.returncode == 0 and "ran in" in run.stdout and "ai_edge_litert" in run.stdout, run.stdout
    (tmp_path / "p.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # pictures without the [images] extra: one line
    picture = _run(f"edgert run {shlex.quote(str(int8_tflite))} --image p.png", tmp_path, env, 300)
    assert picture.returncode == 1 and "pip install 'edgert[images]'" in picture.stdout, picture.stdout
    listed = _run("python3 -m pip list --format=freeze", tmp_path, env).stdout.lower()
    assert "tensorflow" not in listed and "edgert==" in listed
    convert = _run(f"edgert convert {shlex.quote(str(h5_path))}", tmp_path, env, 300)
    assert convert.returncode == 1 and "conversion needs the [convert] extra" in convert.stdout, convert.stdout
    # the [serve] line was installed for real: the runtime-only server (what the Dockerfile installs) answers
    assert "uvicorn==" in listed and "starlette==" in listed
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(venv / "bin" / "edgert"), "serve", str(int8_tflite), "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/digits_int8/ready") as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "edgert serve did not start"
                time.sleep(0.1)
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert server.returncode == 0 and "serving on http://127.0.0.1:" in out, out
