"""A real OpenSSH server on a loopback port, with a throw-away host key and an authorized key made here.

`make test` installs Debian's openssh-server when it can (tests/ensure_tools.sh); without one the deploy tests are
skipped with the reason. Clients reach it through an ssh_config alias, `board`, exactly as a user's would.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Where tests/ensure_tools.sh unpacks the package when it cannot install it system-wide (not root).
UNPACKED = REPO / "build" / "openssh"


def find_sshd() -> tuple[str | None, dict[str, str], str]:
    """The sshd binary, the environment it needs, and why there is none."""
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate, {}, ""
    unpacked = UNPACKED / "usr" / "sbin" / "sshd"
    if unpacked.is_file() and os.geteuid() != 0:  # as root, sshd needs the package's privilege-separation user
        libs = [str(UNPACKED / "usr" / "lib" / "x86_64-linux-gnu"), str(UNPACKED / "lib" / "x86_64-linux-gnu")]
        return str(unpacked), {"LD_LIBRARY_PATH": os.pathsep.join(libs)}, ""
    return None, {}, ("no OpenSSH server here: `make test` installs Debian's openssh-server (tests/ensure_tools.sh), "
                      "or `apt-get install openssh-server`")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgert-test", "-f", str(path)],
                   check=True, capture_output=True)


class SshServer:
    """sshd in the foreground on 127.0.0.1:PORT; `ssh_config` defines the alias `board` for it."""

    def __init__(self, folder: Path, extra_config: str = ""):
        self.folder = folder
        self.extra_config = extra_config  # more sshd_config lines (SetEnv ...: a board that differs)
        self.port = _free_port()
        self.user = getpass.getuser()
        self.ssh_config = folder / "ssh_config"
        self.log = folder / "sshd.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> str | None:
        """Start it; returns why it could not run (the reason to skip), or None."""
        sshd, env, why = find_sshd()
        if sshd is None:
            return why
        if not shutil.which("ssh-keygen") or not shutil.which("ssh"):
            return "the OpenSSH client (ssh, ssh-keygen) is not installed"
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        f = self.folder
        _keygen(f / "host_ed25519")
        _keygen(f / "client_ed25519")
        _keygen(f / "stranger_ed25519")  # a key the board does not know
        (f / "authorized_keys").write_text((f / "client_ed25519.pub").read_text())
        host_key = (f / "host_ed25519.pub").read_text().split()
        (f / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_key[0]} {host_key[1]}\n")
        (f / "sshd_config").write_text(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {f}/host_ed25519
AuthorizedKeysFile {f}/authorized_keys
PidFile {f}/sshd.pid
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
MaxStartups 64
MaxSessions 64
LogLevel VERBOSE
Subsystem sftp internal-sftp
{self.extra_config}
""")
        self.ssh_config.write_text(self.client_config("client_ed25519"))
        self.process = subprocess.Popen([sshd, "-D", "-e", "-f", str(f / "sshd_config")],
                                        stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"),
                                        env={**os.environ, **env})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return f"sshd exited at start: {self.log.read_text().strip()[-300:]}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return None
            except OSError:
                time.sleep(0.05)
        return "sshd did not start listening in 15 s"

    def client_config(self, key: str, alias: str = "board") -> str:
        return f"""\
Host {alias}
  HostName 127.0.0.1
  Port {self.port}
  User {self.user}
  IdentityFile {self.folder}/{key}
  IdentitiesOnly yes
  IdentityAgent none
  UserKnownHostsFile {self.folder}/known_hosts
  StrictHostKeyChecking yes
  LogLevel ERROR
"""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
