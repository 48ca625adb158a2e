"""`edgert deploy`: put a bundle on a board over SSH, switch to it atomically, roll back, run and benchmark there.

The SSH transport (the system's OpenSSH client, the agent sent with each call, its replies and ssh's failures) is
`edgert.deploy.ssh`; this module is what is done over it. The board side is the Ansible collection's `module_utils/agent.py` (see `AGENT`), a
standard-library script sent with each call (`edgert.deploy.agent`), so `edgert deploy` and `edgert fleet` do the same
on a board.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from edgert.deploy import agent
from edgert.deploy.bundle import Manifest, build
from edgert.deploy.ssh import (  # noqa: F401  (Target, Ssh and ssh_problem are this package's face too)
    ENV_SSH_CONFIG,
    Ssh,
    Target,
    _connect,
    _exec,
    call_agent,
    ssh_problem,
)
from edgert.errors import DeployError

# What every call uses when not told otherwise: set once for a board you always use (the tests' board too).
ENV_REMOTE_DIR, ENV_REMOTE_PYTHON = "EDGERT_REMOTE_DIR", "EDGERT_REMOTE_PYTHON"
# The Ansible collection edgert ships (`edgert fleet collection-path`): its module_utils hold the board side.
COLLECTIONS = Path(__file__).parent / "collections"
COLLECTION = COLLECTIONS / "ansible_collections" / "edgert" / "fleet"
AGENT = agent.PATH


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
