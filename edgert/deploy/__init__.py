"""`edgert deploy`: put a bundle on a board over SSH, switch to it atomically, roll back, run and benchmark there.

SSH is the system's OpenSSH client, run as a subprocess: host aliases, `~/.ssh/config` (Match, ProxyJump, ...),
keys, the agent, known_hosts and ControlMaster all behave exactly as they do for `ssh` on the command line, which no
Python SSH library matches. The board side is the Ansible collection's `module_utils/agent.py` (see `AGENT`), a
standard-library script sent with each call (`edgert.deploy.agent`), so `edgert deploy` and `edgert fleet` do the same
on a board.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from edgert.deploy import agent
from edgert.deploy.bundle import Manifest, build
from edgert.errors import DeployError

# What every call uses when not told otherwise: set once for a board you always use (the tests' board too).
ENV_REMOTE_DIR, ENV_REMOTE_PYTHON, ENV_SSH_CONFIG = "EDGERT_REMOTE_DIR", "EDGERT_REMOTE_PYTHON", "EDGERT_SSH_CONFIG"
CONNECT_TIMEOUT_S = 10
# The Ansible collection edgert ships (`edgert fleet collection-path`): its module_utils hold the board side.
COLLECTIONS = Path(__file__).parent / "collections"
COLLECTION = COLLECTIONS / "ansible_collections" / "edgert" / "fleet"
AGENT = agent.PATH
CHUNK = 256 * 1024


@functools.lru_cache(maxsize=1)
def _agent_text() -> str:
    return AGENT.read_text()


@dataclass(frozen=True)
class Target:
    """Where to deploy: `[user@]host[:port]`; `host` may be an alias from the SSH config."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, spec: str) -> Target:
        """Raises: DeployError: not `[user@]host[:port]`."""
        match = re.fullmatch(r"(?:([^@\s:/]+)@)?(\[[0-9a-fA-F:.]+\]|[^@\s:/\[\]]+)(?::(\d+))?", spec.strip())
        if not match:
            raise DeployError(f"--to {spec!r} is not [user@]host[:port] (e.g. pi@raspberrypi.local or board:2222)")
        port = int(match.group(3)) if match.group(3) else None
        if port is not None and not 0 < port < 65536:
            raise DeployError(f"--to {spec!r}: port {port} is not between 1 and 65535")
        return cls(match.group(2).strip("[]"), match.group(1), port)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return self.destination + (f":{self.port}" if self.port else "")


@dataclass(frozen=True)
class Ssh:
    """How to reach the board: the target plus extra client settings (`-F config`, `-o Key=Value`)."""

    target: Target
    config: str | None = None
    options: tuple[str, ...] = ()
    executable: str = "ssh"

    def argv(self, remote_command: str) -> list[str]:
        argv = [self.executable, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
        if self.config:
            argv += ["-F", self.config]
        for option in self.options:
            argv += ["-o", option]
        if self.target.port:
            argv += ["-p", str(self.target.port)]
        return argv + ["--", self.target.destination, remote_command]

    def agent_argv(self, python: str, *args: str) -> list[str]:
        return self.argv(shlex.join([python, "-c", _agent_text(), *args]))


def ssh_problem(target: str, destination: str, text: str) -> str:
    """ssh's own failure, from its messages, as one line that says what to do (`edgert deploy` and `fleet`)."""
    text = " ".join(line.strip() for line in text.strip().splitlines() if line.strip()
                    and not line.startswith("Warning: Permanently added"))
    if "Permission denied" in text:
        return (f"{target}: the SSH login was refused ({text.rpartition(': ')[2] or text}); add your key with "
                f"`ssh-copy-id {destination}` or set IdentityFile in ~/.ssh/config (ansible_ssh_private_key_file in "
                "an inventory)")
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return (f"{target}: the host key is unknown or has changed; check it, then connect once with "
                f"`ssh {destination}` to record it")
    for needle, what in (("Could not resolve hostname", "the host name does not resolve"),
                         ("Connection refused", "connection refused (is sshd running on the board?)"),
                         ("timed out", "the connection timed out"), ("No route to host", "no route to the host"),
                         ("Network is unreachable", "the network is unreachable"),
                         ("Connection closed", "the board closed the connection"),
                         ("Connection reset", "the connection was reset")):
        if needle in text:
            return f"cannot reach {target}: {what}; check the address, the port and that the board is on"
    return f"ssh to {target} failed: {text or 'no message'}"


def _ssh_failure(ssh: Ssh, stderr: str) -> DeployError:
    return DeployError(ssh_problem(str(ssh.target), ssh.target.destination, stderr))


def _parse_reply(ssh: Ssh, done_stdout: str, stderr: str, returncode: int, python: str) -> dict:
    for line in reversed(done_stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            if not reply.get("ok"):
                raise DeployError(f"{ssh.target}: {reply.get('message', 'the board refused')}")
            return reply
    if returncode == 255:
        raise _ssh_failure(ssh, stderr)
    if returncode < 0:
        raise DeployError(f"{ssh.target}: the connection to the board was lost (ssh ended by signal {-returncode}); "
                          "nothing half-sent is ever made active, deploy again")
    if returncode == 127 or "not found" in stderr:
        raise DeployError(f"{ssh.target}: {python} is not installed on the board (or not on PATH); install Python "
                          "3.10+ there or pass --remote-python PATH")
    if "SyntaxError" in stderr:
        raise DeployError(f"{ssh.target}: {python} on the board is too old to run edgert (Python 3.10 or newer is "
                          "needed); install a newer one or pass --remote-python PATH")
    tail = stderr.strip().splitlines()[-1:] or [f"exit status {returncode}"]
    raise DeployError(f"{ssh.target}: the board's side of edgert failed: {tail[0]}")


def call_agent(ssh: Ssh, python: str, *args: str, data: bytes | None = None,
               chunks: Callable[[bytes], Iterator[bytes]] | None = None, timeout_s: float | None = 600) -> dict:
    """Run one agent command on the board and return its JSON reply.

    `data` goes to the agent's stdin in chunks (`chunks` may replace how it is cut: tests use it to drop the
    connection part-way).

    Raises:
        DeployError: ssh failed (unreachable, refused), the board's Python is missing or too old, or the agent
            reported a failure (its one-line message).
    """
    argv = ssh.agent_argv(python, *args)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if data is not None:
            try:
                for block in (chunks or _chunks)(data):
                    proc.stdin.write(block)
                    proc.stdin.flush()
            except BrokenPipeError:
                pass  # the far side stopped reading; its reply (or ssh's error) says why
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        proc.stdin = None  # closed: the agent reads to its end; communicate() must not flush it again
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise DeployError(f"{ssh.target}: no answer from the board in {timeout_s:.0f} s; try again") from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return _parse_reply(ssh, stdout.decode(errors="replace"), stderr.decode(errors="replace"), proc.returncode,
                        python)


def _chunks(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), CHUNK):
        yield data[start:start + CHUNK]


@dataclass(frozen=True)
class BoardInfo:
    """What the board said before anything was sent."""

    python: tuple[int, ...]
    machine: str
    root: str
    free_bytes: int
    runtime_python: str
    runtime_ok: bool
    runtime_error: str
    current: str | None
    previous: str | None


@dataclass(frozen=True)
class DeployResult:
    """A finished deploy: the version now active on the board and what it replaced."""

    target: str
    name: str
    version: str
    previous: str | None
    switched: bool
    remote_path: str
    bundle_bytes: int
    board: BoardInfo
    setup_installed: bool | None
    bench: dict | None
    seconds: float
    serving: dict | None = None  # with serve=True: how the board's server runs (unit or process), its URL and log

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RollbackResult:
    target: str
    name: str
    version: str
    replaced: str | None
    remote_path: str

    def to_dict(self) -> dict:
        return asdict(self)


def probe(ssh: Ssh, name: str, remote_dir: str = agent.DEFAULT_ROOT, python: str = "python3") -> BoardInfo:
    reply = call_agent(ssh, python, "probe", remote_dir, name, timeout_s=180)
    return BoardInfo(tuple(reply["python"]), reply["machine"], reply["root"], int(reply["free_bytes"]),
                     reply["runtime_python"], bool(reply["runtime_ok"]), reply.get("runtime_error", ""),
                     reply.get("current"), reply.get("previous"))


def deploy(model: str, to: str | Target, device: str | None = None, *, remote_dir: str | None = None,
           name: str | None = None, setup: bool = False, bench_args: tuple[str, ...] | None = None,
           ssh_config: str | None = None, ssh_options: tuple[str, ...] = (), remote_python: str | None = None,
           chunks: Callable[[bytes], Iterator[bytes]] | None = None, serve: ServeOptions | None = None,
           progress: Callable[[str], None] = lambda _msg: None) -> DeployResult:
    """Bundle `model` for `device`, upload it to `remote_dir` on the board, verify it there and make it active.

    The upload goes to a temporary name; only when its sha256 and every file's checksum match does the `current`
    link switch (one rename), and the version it replaced stays as `previous` for `rollback`.

    Args:
        remote_dir: where models and the runtime live on the board [$EDGERT_REMOTE_DIR, else ~/edgert].
        remote_python: the board's Python that runs edgert's side [$EDGERT_REMOTE_PYTHON, else python3].
        ssh_config: an SSH client configuration to use [$EDGERT_SSH_CONFIG, else what ssh reads].
        bench_args: run `edgert bench --json` with these extra arguments on the board after deploying.
        setup: create `remote_dir/venv` with the bundle's requirements when the runtime is missing there.
        chunks: how the upload is cut into writes (tests drop the connection part-way through it).
        serve: (re)start `edgert serve --repository REMOTE_DIR` on the board afterwards: a systemd unit (system
            unit as root, user unit otherwise), or a background process where systemd does not run. With `setup`
            the venv gets the [serve] packages too. A board already serving picks up each deploy by itself.

    Raises:
        DeployError: one line for each remote failure (unreachable, refused, Python too old, disk full, checksum
            mismatch, runtime missing without `setup`, a remote command failing).
        ModelFormatError, DeviceProfileError, BundleError: the model or profile is unusable (nothing is sent).
    """
    started = time.monotonic()
    ssh = _connect(to, ssh_config, ssh_options)
    remote_dir, remote_python = _where(remote_dir, remote_python)
    target = ssh.target
    data, manifest = build(model, device, name=name)
    progress(f"bundle {manifest.name} version {manifest.version}: {len(data) / 1024:.0f} KiB")
    board = probe(ssh, manifest.name, remote_dir, remote_python)
    progress(f"{target}: Python {'.'.join(map(str, board.python))} on {board.machine}, "
             f"{board.free_bytes / 2**20:.0f} MiB free in {board.root}")
    _check_board(manifest, board, target)
    installed = None
    if setup:
        requirements = manifest.requirements + (serve_requirements() if serve else ())
        progress(f"setting up the runtime on {target} ({', '.join(requirements)})")
        reply = call_agent(ssh, remote_python, "setup", remote_dir, manifest.index_url or "-",
                           *requirements, timeout_s=1800)
        installed = bool(reply["installed"])
    elif not board.runtime_ok:
        raise DeployError(f"{target}: {board.runtime_error}")
    progress(f"uploading to {board.root}/models/{manifest.name}")
    reply = call_agent(ssh, remote_python, "install", remote_dir, manifest.name, manifest.version, str(len(data)),
                       hashlib.sha256(data).hexdigest(), data=data, chunks=chunks)
    bench = None
    if bench_args is not None:
        progress(f"benchmarking on {target}")
        bench = remote_bench(ssh, manifest.name, remote_dir, remote_python, bench_args)
    serving = None
    if serve is not None:
        progress(f"starting edgert serve on {target} (port {serve.port})")
        serving = call_agent(ssh, remote_python, "serve", remote_dir, manifest.name, serve.host, str(serve.port),
                             f"{serve.grace:g}", *serve.options, timeout_s=180)
        serving = {k: serving[k] for k in ("how", "where", "log", "url")}
    return DeployResult(str(target), manifest.name, reply["version"], reply.get("previous"), bool(reply["switched"]),
                        reply["path"], len(data), board, installed, bench, time.monotonic() - started, serving)


@dataclass(frozen=True)
class ServeOptions:
    """How `deploy(serve=...)` runs the board's server: `edgert serve --host HOST --port PORT --grace S OPTIONS`."""

    host: str = "127.0.0.1"
    port: int = 8000
    grace: float = 10.0
    options: tuple[str, ...] = ()  # more `edgert serve` options, e.g. ("--max-batch", "8")


def serve_requirements() -> tuple[str, ...]:
    """What the [serve] extra installs, read from this installation's own metadata (one list, in pyproject.toml)."""
    import importlib.metadata

    out, extra = [], 'extra == "serve"'
    for requirement in importlib.metadata.requires("edgert") or ():
        spec, _, marker = (part.strip() for part in requirement.partition(";"))
        if marker == extra:
            out.append(spec)
        elif marker.endswith(f" and {extra}"):
            out.append(f"{spec}; {marker[:-len(extra) - 5]}")
    return tuple(out)


def stop_serving(to: str | Target, *, remote_dir: str | None = None, grace: float = 10.0,
                 ssh_config: str | None = None, ssh_options: tuple[str, ...] = (),
                 remote_python: str | None = None) -> bool:
    """Stop the server `deploy(serve=...)` started on the board (its unit is disabled, or its process ended).
    Returns whether one was running.

    Raises:
        DeployError: the board is unreachable or its agent failed.
    """
    ssh = _connect(to, ssh_config, ssh_options)
    remote_dir, remote_python = _where(remote_dir, remote_python)
    return bool(call_agent(ssh, remote_python, "unserve", remote_dir, f"{grace:g}", timeout_s=120)["stopped"])


def board_delegates(device: str | None) -> str:
    """The delegate order a bundle for `device` uses: the profile's, or `auto` (the board detects itself)."""
    if not device:
        return "auto"
    from edgert.devices import profiles

    return ",".join(profiles.get(device).delegates)


def _check_board(manifest: Manifest, board: BoardInfo, target: Target) -> None:
    if board.python[:len(manifest.python_min)] < manifest.python_min:
        raise DeployError(f"{target}: Python {'.'.join(map(str, board.python))} on the board is too old; this bundle "
                          f"needs {'.'.join(map(str, manifest.python_min))} or newer (--remote-python PATH picks "
                          "another)")


def _exec(ssh: Ssh, python: str, remote_dir: str, name: str, args: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Run the active bundle on the board with `args`; ssh's own failures and the agent's refusals (nothing
    deployed) raise, the bundle's own output and exit status come back."""
    done = subprocess.run(ssh.agent_argv(python, "exec", remote_dir, name, *args), capture_output=True, text=True,
                          timeout=1800)
    if done.returncode == 255:
        raise _ssh_failure(ssh, done.stderr)
    if done.stdout.startswith('{"') and '"ok": false' in done.stdout:
        _parse_reply(ssh, done.stdout, done.stderr, done.returncode, python)
    return done


def _connect(to: str | Target, ssh_config: str | None, ssh_options: tuple[str, ...]) -> Ssh:
    return Ssh(to if isinstance(to, Target) else Target.parse(to), ssh_config or os.environ.get(ENV_SSH_CONFIG) or None,
               tuple(ssh_options))


def _where(remote_dir: str | None, remote_python: str | None) -> tuple[str, str]:
    """The remote folder and Python: as given, else from the environment, else the defaults."""
    return (remote_dir or os.environ.get(ENV_REMOTE_DIR) or agent.DEFAULT_ROOT,
            remote_python or os.environ.get(ENV_REMOTE_PYTHON) or "python3")


def remote_bench(ssh: Ssh, name: str, remote_dir: str, python: str, bench_args: tuple[str, ...]) -> dict:
    """Run `edgert bench --json` on the active bundle on the board and return its first result."""
    done = _exec(ssh, python, remote_dir, name, ("bench", "--json", *bench_args))
    try:
        results = json.loads(done.stdout)
    except ValueError:
        lines = [line for line in (done.stderr + done.stdout).strip().splitlines() if line.strip()]
        raise DeployError(f"{ssh.target}: edgert bench failed on the board: {lines[-1] if lines else 'no output'}")
    if done.returncode != 0:
        raise DeployError(f"{ssh.target}: edgert bench failed on the board (exit {done.returncode})")
    if isinstance(results, dict) and results.get("results"):
        return results["results"][0]
    raise DeployError(f"{ssh.target}: edgert bench on the board printed no result")


def rollback(to: str | Target, name: str, *, remote_dir: str | None = None, ssh_config: str | None = None,
             ssh_options: tuple[str, ...] = (), remote_python: str | None = None) -> RollbackResult:
    """Make the previous version of `name` active again on the board (the two swap, so rolling back twice is a
    no-op).

    Raises:
        DeployError: unreachable, nothing deployed, no previous version, or the previous version is damaged.
    """
    ssh = _connect(to, ssh_config, ssh_options)
    remote_dir, remote_python = _where(remote_dir, remote_python)
    reply = call_agent(ssh, remote_python, "rollback", remote_dir, name)
    return RollbackResult(str(ssh.target), name, reply["version"], reply.get("replaced"), reply["path"])


def remote_run(to: str | Target, name: str, args: tuple[str, ...] = (), *, remote_dir: str | None = None,
               ssh_config: str | None = None, ssh_options: tuple[str, ...] = (),
               remote_python: str | None = None) -> subprocess.CompletedProcess:
    """Run the active bundle on the board (`verify`, `run`, `bench`, `info` with their options); output comes back
    as text."""
    return _exec(_connect(to, ssh_config, ssh_options), *reversed(_where(remote_dir, remote_python)), name, tuple(args))
