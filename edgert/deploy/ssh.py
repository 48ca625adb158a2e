"""The SSH transport `edgert deploy` uses: the system's OpenSSH client as a subprocess, the board-side agent sent
with each call, its JSON reply read back, and ssh's own failures said as one line that says what to do.

Host aliases, `~/.ssh/config` (Match, ProxyJump, ...), keys, the agent, known_hosts and ControlMaster all behave
exactly as they do for `ssh` on the command line, which no Python SSH library matches.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from typing import Callable, Iterator

from edgert.deploy import agent
from edgert.errors import DeployError

ENV_SSH_CONFIG = "EDGERT_SSH_CONFIG"
CONNECT_TIMEOUT_S = 10
CHUNK = 256 * 1024  # what goes to the agent's stdin at a time


@functools.lru_cache(maxsize=1)
def _agent_text() -> str:
    return agent.PATH.read_text()


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
