"""An emulated Raspberry Pi: a Debian bookworm arm64 userland run by qemu-user, with its own OpenSSH on loopback.

    python -m tests.emulated_board up      build (once, cached under build/board-arm64/) and start it
    python -m tests.emulated_board down    stop it by its process ids, unmount, restore binfmt_misc
    python -m tests.emulated_board status

`make board` runs `up`; `make board-test` runs tests/test_board_arm64.py against it (and `down` afterwards).

- The root filesystem is made by debootstrap (minbase, with python3, python3-venv, openssh-server,
  ca-certificates), Debian's own arm64 packages. The host's CA bundle replaces the board's (the registries'
  TLS is re-signed here) and /etc/pip.conf points pip at it.
- qemu-aarch64 comes from Debian's bookworm-backports qemu-user package (10.x; bookworm's own 7.2 crashes in
  ai-edge-litert's aarch64 wheel) and is registered with binfmt_misc (flags F: the interpreter is opened at
  registration, so the chroot needs no copy of it). What was there before is recorded and put back by `down`.
- sshd runs inside the chroot (so it and everything it starts are aarch64 binaries) on a free loopback port, with a
  throw-away host key and a client key made here; `build/board-arm64/ssh_config` has the alias `pi-arm64`.
Needs root (chroot, mounts, binfmt_misc) and the network to Debian's mirror and PyPI, as this machine has.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / "build" / "board-arm64"
ROOTFS = HOME / "rootfs"
READY = ROOTFS / ".edgert-board-ready"
STATE = HOME / "state.json"
ALIAS = "pi-arm64"
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
PACKAGES = ("python3", "python3-venv", "openssh-server", "ca-certificates")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
# qemu-user from bookworm-backports (10.x, static): bookworm's own qemu-user-static (7.2) crashes in
# ai-edge-litert 2.3's aarch64 wheel (SIGSEGV as the interpreter is made). Fetched from Debian's mirror, checked
# against the signed index's sha256, kept in build/board-arm64/qemu/ (nothing is installed on the host).
QEMU_INDEX = "http://deb.debian.org/debian/dists/bookworm-backports/main/binary-amd64/Packages.xz"
QEMU = HOME / "qemu" / "qemu-aarch64"
BINFMT_NAME = "edgert-aarch64"
# qemu's own aarch64 ELF magic and mask (scripts/qemu-binfmt-conf.sh), as binfmt_misc parses them
AARCH64_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
AARCH64_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# Only a proc mount: /dev gets its few nodes by mknod, never a bind of the host's /dev, so that deleting build/
# (make clean) while the board is up cannot reach the host's devices.
MOUNTS = ("proc",)
DEVICES = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8), "urandom": (1, 9), "tty": (5, 0)}


class BoardError(RuntimeError):
    """Why the emulated board cannot come up here (the reason the board tests are skipped with)."""


def _run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, **kwargs)


def _log(message: str) -> None:
    print(f"board: {message}", file=sys.stderr, flush=True)


def _state() -> dict:
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return {}


def _save(state: dict) -> None:
    HOME.mkdir(parents=True, exist_ok=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, STATE)


def host_tools() -> None:
    """debootstrap from Debian (apt), when missing."""
    if os.geteuid() != 0:
        raise BoardError("the emulated board needs root (chroot, mounts, binfmt_misc)")
    if platform.machine() != "x86_64":
        raise BoardError(f"the emulated board runs on x86-64 hosts; this is {platform.machine()}")
    if shutil.which("debootstrap"):
        return
    if not shutil.which("apt-get"):
        raise BoardError("no apt-get to install debootstrap")
    _log("installing debootstrap (apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = _run("apt-get", "install", "-y", "-q", "--no-install-recommends", "debootstrap", env=env)
    if done.returncode != 0:
        _run("apt-get", "update", "-q", env=env)
        done = _run("apt-get", "install", "-y", "-q", "--no-install-recommends", "debootstrap", env=env)
    if done.returncode != 0:
        raise BoardError(f"apt-get could not install debootstrap: {done.stderr.strip()[-300:]}")


def fetch_qemu(state: dict) -> None:
    """qemu-aarch64 (static) from bookworm-backports' qemu-user package, once."""
    if QEMU.exists():
        return
    import hashlib
    import lzma
    import urllib.request

    _log("fetching qemu-user from bookworm-backports")
    try:
        index = lzma.decompress(urllib.request.urlopen(QEMU_INDEX, timeout=120).read()).decode()
    except OSError as exc:
        raise BoardError(f"cannot read {QEMU_INDEX}: {exc}") from None
    stanza = next((block for block in index.split("\n\n") if block.startswith("Package: qemu-user\n")), None)
    if stanza is None:
        raise BoardError("bookworm-backports has no qemu-user package")
    fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
    work = QEMU.parent / "download"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    deb = work / "qemu-user.deb"
    digest = hashlib.sha256()
    with urllib.request.urlopen(f"http://deb.debian.org/debian/{fields['Filename']}", timeout=600) as r, \
            open(deb, "wb") as f:
        for chunk in iter(lambda: r.read(1 << 20), b""):
            digest.update(chunk)
            f.write(chunk)
    if digest.hexdigest() != fields["SHA256"]:
        raise BoardError(f"{fields['Filename']} does not match the sha256 in Debian's index")
    done = _run("dpkg-deb", "-x", str(deb), str(work / "x"))
    if done.returncode != 0:
        raise BoardError(f"dpkg-deb cannot unpack {deb}: {done.stderr.strip()}")
    os.replace(work / "x" / "usr" / "bin" / "qemu-aarch64", QEMU)
    shutil.rmtree(work, ignore_errors=True)
    state["qemu"] = fields["Version"]
    state["qemu_download_bytes"] = int(fields["Size"])
    _save(state)


def register_binfmt(state: dict) -> None:
    """Our qemu-aarch64 in binfmt_misc (flags F: opened now, so the chroot needs no copy of it), recording what
    this changed so that `down` undoes exactly that: a mount it made, its entry, and another aarch64 entry it
    disabled (the kernel would otherwise pick whichever matches first)."""
    if not (BINFMT / "register").exists():
        done = _run("mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT))
        if done.returncode != 0:
            raise BoardError(f"cannot mount binfmt_misc: {done.stderr.strip()}")
        state["mounted_binfmt"] = True
    disabled = state.setdefault("disabled_entries", [])
    for entry in BINFMT.iterdir():
        if entry.name in ("register", "status", BINFMT_NAME) or entry.name in disabled:
            continue
        text = entry.read_text()
        if text.startswith("enabled") and "magic 7f454c460201010000000000000000000200b700" in text:
            entry.write_text("0")
            disabled.append(entry.name)
    if not (BINFMT / BINFMT_NAME).exists():
        line = f":{BINFMT_NAME}:M::{AARCH64_MAGIC}:{AARCH64_MASK}:{QEMU}:OPF"
        try:
            (BINFMT / "register").write_text(line)
        except OSError as exc:
            raise BoardError(f"cannot register qemu-aarch64 with binfmt_misc: {exc}") from None
        state["registered"] = True
    _save(state)


def restore_binfmt(state: dict) -> None:
    if state.pop("registered", False) and (BINFMT / BINFMT_NAME).exists():
        (BINFMT / BINFMT_NAME).write_text("-1")
    for name in state.pop("disabled_entries", []):
        if (BINFMT / name).exists():
            (BINFMT / name).write_text("1")
    if state.pop("mounted_binfmt", False):
        _run("umount", str(BINFMT))
    _save(state)


def build_rootfs(state: dict) -> None:
    """debootstrap the arm64 userland once; the download size and the time are kept in state.json."""
    if READY.exists():
        return
    partial = HOME / "rootfs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    _log(f"debootstrap --arch=arm64 --variant=minbase {SUITE} (a few minutes, once)")
    started = time.monotonic()
    done = _run("debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                str(partial), MIRROR)
    if done.returncode != 0:
        log = partial / "debootstrap" / "debootstrap.log"
        tail = log.read_text().strip().splitlines()[-3:] if log.exists() else done.stderr.strip().splitlines()[-3:]
        raise BoardError("debootstrap failed: " + " | ".join(tail))
    debs = list((partial / "var" / "cache" / "apt" / "archives").glob("*.deb"))
    state["download_bytes"] = sum(p.stat().st_size for p in debs)
    for deb in debs:
        deb.unlink()
    # the registries' TLS is re-signed here: the board trusts what this machine trusts, and so does its pip
    shutil.copy(HOST_CA, partial / "etc" / "ssl" / "certs" / "ca-certificates.crt")
    (partial / "etc" / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    shutil.copy("/etc/resolv.conf", partial / "etc" / "resolv.conf")
    (partial / "etc" / "hostname").write_text("pi-arm64\n")
    state["build_seconds"] = round(time.monotonic() - started, 1)
    (partial / READY.name).write_text(json.dumps({"suite": SUITE, "packages": PACKAGES}))
    shutil.rmtree(ROOTFS, ignore_errors=True)
    os.rename(partial, ROOTFS)
    _save(state)


def _devices() -> None:
    dev = ROOTFS / "dev"
    dev.mkdir(exist_ok=True)
    for name, (major, minor) in DEVICES.items():
        node = dev / name
        if not node.exists() or not node.is_char_device():
            node.unlink(missing_ok=True)
            os.mknod(node, 0o666 | 0o020000, os.makedev(major, minor))
            os.chmod(node, 0o666)
    (dev / "shm").mkdir(exist_ok=True)
    os.chmod(dev / "shm", 0o1777)


def _mount(state: dict) -> None:
    _devices()
    mounted = state.setdefault("mounts", [])
    for rel in MOUNTS:
        target = ROOTFS / rel
        if str(target) in mounted:
            continue
        target.mkdir(parents=True, exist_ok=True)
        done = _run("mount", "-t", "proc", "proc", str(target))
        if done.returncode != 0:
            raise BoardError(f"cannot mount /{rel} in the board: {done.stderr.strip()}")
        mounted.append(str(target))
    _save(state)


def _unmount(state: dict) -> None:
    for target in reversed(state.get("mounts", [])):
        _run("umount", "-l", target)
    state["mounts"] = []
    _save(state)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    if not path.exists():
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgert-board", "-f", str(path), check=True)


def start_sshd(state: dict) -> None:
    pid = state.get("sshd_pid")
    if pid and _alive(pid):
        return
    keys = HOME / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    for key in ("host_ed25519", "client_ed25519"):
        (keys / key).unlink(missing_ok=True)
        (keys / f"{key}.pub").unlink(missing_ok=True)
        _keygen(keys / key)  # throw-away keys, new for each start
    etc = ROOTFS / "etc" / "ssh"
    shutil.copy(keys / "host_ed25519", etc / "edgert_host_ed25519")
    os.chmod(etc / "edgert_host_ed25519", 0o600)
    ssh_dir = ROOTFS / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text((keys / "client_ed25519.pub").read_text())
    port = _free_port()
    (etc / "edgert_sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey /etc/ssh/edgert_host_ed25519
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile /run/edgert-sshd.pid
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
""")
    (ROOTFS / "run" / "sshd").mkdir(parents=True, exist_ok=True)
    log = open(HOME / "sshd.log", "ab")
    process = subprocess.Popen(["chroot", str(ROOTFS), "/usr/sbin/sshd", "-D", "-e", "-f",
                                "/etc/ssh/edgert_sshd_config"], stdout=log, stderr=log, start_new_session=True)
    state.update(sshd_pid=process.pid, port=port)
    _save(state)
    host_key = (keys / "host_ed25519.pub").read_text().split()
    (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (HOME / "ssh_config").write_text(f"""\
Host {ALIAS}
    HostName 127.0.0.1
    Port {port}
    User root
    IdentityFile {keys / 'client_ed25519'}
    IdentitiesOnly yes
    UserKnownHostsFile {keys / 'known_hosts'}
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 30
""")
    deadline = time.monotonic() + 120  # sshd under emulation starts in seconds, not milliseconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BoardError(f"sshd in the board exited: {(HOME / 'sshd.log').read_text()[-500:]}")
        done = _run("ssh", "-F", str(HOME / "ssh_config"), ALIAS, "uname -m", timeout=120)
        if done.returncode == 0 and done.stdout.strip() == "aarch64":
            return
        time.sleep(1)
    raise BoardError("sshd in the board did not answer within 120 s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def up() -> dict:
    """Build (once) and start the board; returns its state (port, times, download size).

    Raises:
        BoardError: it cannot run here (not root, no apt, no network), with the reason.
    """
    state = _state()
    started = time.monotonic()
    host_tools()
    fetch_qemu(state)
    register_binfmt(state)
    cold = not READY.exists()
    build_rootfs(state)
    _mount(state)
    start_sshd(state)
    state["last_up_seconds"] = round(time.monotonic() - started, 1)
    state["last_up_cold"] = cold
    state["ssh_config"] = str(HOME / "ssh_config")
    _save(state)
    return state


def down() -> None:
    """Stop the board's processes by their ids (sshd and what it started), unmount, and restore binfmt_misc."""
    state = _state()
    pid = state.pop("sshd_pid", None)
    if pid and _alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)  # sshd and its session children share the group started for it
        except OSError:
            pass
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    # anything else still running inside the board (a server deploy --serve left, a benchmark) by its id
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "root") == str(ROOTFS):
                    os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass
    _unmount(state)
    restore_binfmt(state)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "status"
    try:
        if command == "up":
            state = up()
            print(f"board up: ssh -F {state['ssh_config']} {ALIAS} (port {state['port']}); "
                  f"{'built' if state['last_up_cold'] else 'cached'} in {state['last_up_seconds']} s"
                  + (f", root filesystem {state.get('download_bytes', 0) / 2**20:.0f} MiB downloaded in "
                     f"{state.get('build_seconds')} s" if state["last_up_cold"] else ""))
        elif command == "down":
            down()
            print("board down")
        else:
            print(json.dumps(_state(), indent=2))
    except BoardError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
