"""A fleet of boards on loopback: one real OpenSSH server per board (tests/sshd.py), each with its own remote
directory, and an Ansible inventory for them, with boards that fail on purpose.

Kinds of board (`Board.kind`):
- good: this test run's Python is the board's (numpy and ai-edge-litert installed);
- wrong: its interpreter perturbs every output grossly (tests/fleet_boards/wrong_outputs, through sshd's SetEnv);
- subtle: the same, but one element of each output is off by 5% of the output's range (its cosine stays > 0.99);
- throttles: cool when the install starts, but its CPU clock falls while the check times the model
  (tests/fleet_boards/throttles);
- readonly: its remote directory is a read-only mount;
- down: nothing listens on its port;
- locked: it does not know the client's key;
- nopython: its edgert_python does not exist;
- hot: its thermal zone is above its passive trip point (EDGERT_SYSFS_ROOT);
- arm32: it reports armv7l, which has no ai-edge-litert wheel (EDGERT_MACHINE), and its Python lacks the runtime;
- full: its remote directory is a 64 KiB file system, too small for a bundle;
- fresh: a new board as a Pi comes: its only Python is the system's (no pip packages, no runtime), reached with
  ansible_python_interpreter=/usr/bin/python3 and no edgert_python;
- fresh_named: the same, with edgert_python=/usr/bin/python3 instead;
- shim: Ansible's interpreter discovery finds a broken Python first (a pyenv shim for a version not installed).
"""

from __future__ import annotations

import getpass
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.sshd import SshServer, _free_port, _keygen

REPO = Path(__file__).resolve().parent.parent
WRONG_OUTPUTS = REPO / "tests" / "fleet_boards" / "wrong_outputs"
THROTTLES = REPO / "tests" / "fleet_boards" / "throttles"
# The fresh and arm32 boards' Python: one without the runtime (Debian's own), so that --setup has something to install.
SYSTEM_PYTHON = "/usr/bin/python3"
SHIM = """#!/bin/sh
echo "pyenv: python3.13: command not found" >&2
exit 127
"""


@dataclass
class Board:
    name: str
    kind: str = "good"
    groups: tuple[str, ...] = ()
    python: str = sys.executable
    port: int = 0
    server: SshServer | None = None
    extra_vars: str = ""

    def remote_dir(self, folder: Path) -> Path:
        return folder / "boards" / self.name


class Fleet:
    """Start with `start()`, write an inventory with `inventory()`, end with `stop()`. Each board's sessions get a
    TMPDIR of the fleet's own (`tmp(name)`), so that what a board leaves there is that board's alone."""

    def __init__(self, folder: Path, boards: list[Board]):
        self.folder, self.boards = folder, boards
        self.mounts: list[Path] = []

    def board(self, name: str) -> Board:
        return next(b for b in self.boards if b.name == name)

    def root(self, name: str) -> Path:
        return self.board(name).remote_dir(self.folder)

    def tmp(self, name: str) -> Path:
        """The board's TMPDIR (where Ansible's action plugins send files)."""
        return self.folder / "tmp" / name

    def wipe(self) -> None:
        """Every board as new: its remote directory and TMPDIR emptied (a test that needs fresh boards)."""
        import shutil

        for b in self.boards:
            for folder in (b.remote_dir(self.folder), self.tmp(b.name)):
                if folder.is_dir() and folder not in self.mounts:
                    for child in folder.iterdir():
                        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()

    def start(self) -> str | None:
        """Start every board's sshd; returns why the fleet cannot run here (the reason to skip), or None."""
        self.folder.mkdir(parents=True, exist_ok=True)
        key = self.folder / "fleet_ed25519"
        _keygen(key)
        known = []
        for b in self.boards:
            root = b.remote_dir(self.folder)
            root.mkdir(parents=True)
            self.tmp(b.name).mkdir(parents=True)
            if b.kind == "down":
                b.port = _free_port()
                continue
            server_dir = self.folder / "sshd" / b.name
            server_dir.mkdir(parents=True)
            b.server = SshServer(server_dir, self._extra(b))
            why = b.server.start()
            if why:
                return why
            b.port = b.server.port
            if b.kind != "locked":
                (server_dir / "authorized_keys").write_text((key.with_suffix(".pub")).read_text())
            host_key = (server_dir / "host_ed25519.pub").read_text().split()
            known.append(f"[127.0.0.1]:{b.port} {host_key[0]} {host_key[1]}")
            if b.kind in ("readonly", "full"):
                options = "ro,size=1m" if b.kind == "readonly" else "size=64k"
                done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(root)],
                                      capture_output=True, text=True)
                if done.returncode != 0:
                    return f"cannot mount a tmpfs for the {b.kind} board (root is needed): {done.stderr.strip()}"
                self.mounts.append(root)
        (self.folder / "known_hosts").write_text("\n".join(known) + "\n")
        return None

    def _extra(self, b: Board) -> str:
        """The board's sshd_config lines: one SetEnv with its environment (sshd keeps the first SetEnv only)."""
        env = {"TMPDIR": str(self.tmp(b.name)), **self._env(b)}
        return "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items())

    def _env(self, b: Board) -> dict[str, str]:
        if b.kind == "wrong":
            return {"PYTHONPATH": str(WRONG_OUTPUTS)}
        if b.kind == "subtle":
            return {"PYTHONPATH": str(WRONG_OUTPUTS), "EDGERT_TEST_PERTURB": "subtle"}
        if b.kind == "throttles":
            return {"PYTHONPATH": str(THROTTLES)}
        if b.kind == "hot":
            sysfs = self.folder / "sysfs" / b.name
            zone = sysfs / "sys" / "class" / "thermal" / "thermal_zone0"
            zone.mkdir(parents=True)
            for file, text in (("temp", "86000"), ("type", "cpu-thermal"), ("trip_point_0_type", "passive"),
                               ("trip_point_0_temp", "80000")):
                (zone / file).write_text(text + "\n")
            return {"EDGERT_SYSFS_ROOT": str(sysfs)}
        if b.kind == "arm32":
            return {"EDGERT_MACHINE": "armv7l"}
        return {}

    def inventory(self, path: Path | None = None, names: list[str] | None = None) -> Path:
        """An INI inventory of the boards (in order, in their groups)."""
        path = path or self.folder / "hosts.ini"
        chosen = [b for b in self.boards if names is None or b.name in names]
        lines = []
        for b in chosen:
            python = {"nopython": "/nonexistent/bin/python3", "arm32": SYSTEM_PYTHON,
                      "fresh_named": SYSTEM_PYTHON}.get(b.kind, b.python)
            interpreter = f"edgert_python={python}"
            if b.kind == "fresh":
                interpreter = f"ansible_python_interpreter={SYSTEM_PYTHON}"
            elif b.kind == "shim":
                shim = self.folder / "shims" / "python3.13"
                shim.parent.mkdir(exist_ok=True)
                shim.write_text(SHIM)
                shim.chmod(0o755)
                interpreter = f"ansible_interpreter_python_fallback=\"['{shim}', '{SYSTEM_PYTHON}']\""
            lines.append(f"{b.name} ansible_port={b.port} edgert_remote_dir={b.remote_dir(self.folder)} "
                         f"{interpreter} {b.extra_vars}".rstrip())
        groups: dict[str, list[str]] = {}
        for b in chosen:
            for g in b.groups:
                groups.setdefault(g, []).append(b.name)
        text = "\n".join(lines) + "\n"
        for g, members in groups.items():
            text += f"\n[{g}]\n" + "\n".join(members) + "\n"
        text += f"""
[all:vars]
ansible_host=127.0.0.1
ansible_user={getpass.getuser()}
ansible_ssh_private_key_file={self.folder / 'fleet_ed25519'}
ansible_ssh_common_args='{self.ssh_args()}'
"""
        path.write_text(text)
        return path

    def ssh_args(self) -> str:
        """The SSH client options that reach these boards: their host keys, the fleet's key only."""
        return (f"-o UserKnownHostsFile={self.folder / 'known_hosts'} -o StrictHostKeyChecking=yes "
                "-o IdentitiesOnly=yes -o IdentityAgent=none -o ConnectTimeout=5")

    def stop(self) -> None:
        for b in self.boards:
            if b.server is not None:
                b.server.stop()
        for mount in self.mounts:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
