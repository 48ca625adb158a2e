"""The Dockerfile, built and run with podman on this machine (`make container-test`).

    python -m tests.container_image build    the image edgert-serve:test (base, wheel, podman build)
    python -m tests.container_image clean    remove the image and the stand-in base

- The Dockerfile says `FROM python:3.11-slim-bookworm`, which cannot be pulled here (no registry is reachable).
  When no image of that name is present, a stand-in is made and tagged with it: Debian bookworm (debootstrap,
  minbase) with Debian's python3 (3.11), pip and the host's CA bundle (the registries' TLS is re-signed here), and
  Debian's "externally managed" marker removed, as the official image has none. Everything after FROM is the
  Dockerfile's own, unchanged: the wheel is installed with [serve] from PyPI.
- A second image is a board with systemd: Debian bookworm (as Raspberry Pi OS is) with systemd as PID 1 and
  OpenSSH, for `edgert deploy --serve`'s systemd unit (`systemd_board`). The emulated Pi (tests/emulated_board.py)
  has no init, so there the server runs as a background process.
- podman builds with chroot isolation and runs with runc, with explicit ulimits: this VM has hybrid cgroups, which
  crun refuses, and a hard file limit below podman's default. Neither flag changes what the image contains.
Needs root and the network to Debian's mirror and PyPI.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / "build" / "container"
BASE = "docker.io/library/python:3.11-slim-bookworm"
IMAGE = "localhost/edgert-serve:test"
BOARD_IMAGE = "localhost/edgert-systemd-board:test"
RUN_FLAGS = ("--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, text=True, **kwargs)


def podman_works() -> str | None:
    """None when podman and runc are here, or why not."""
    for tool in ("podman", "runc"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make container-test installs it)"
    return None


def _has_image(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name]).returncode == 0


def ensure_base() -> None:
    """The stand-in for the official base image, when there is none (see the module's doc)."""
    if _has_image(BASE):
        return
    rootfs = HOME / "rootfs"
    if not (rootfs / "usr" / "bin" / "python3").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        HOME.mkdir(parents=True, exist_ok=True)
        _run("debootstrap", "--variant=minbase", "--include=python3,python3-pip,ca-certificates", "bookworm",
             str(rootfs), "http://deb.debian.org/debian", stdout=subprocess.DEVNULL)
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    _run("podman", "import", "-", BASE, stdin=tar.stdout, stdout=subprocess.DEVNULL)
    tar.wait()


def build() -> str:
    """Build the image from the Dockerfile and this checkout's wheel; returns its name."""
    ensure_base()
    context = HOME / "context"
    shutil.rmtree(context, ignore_errors=True)
    (context / "dist").mkdir(parents=True)
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(context / "dist"), str(REPO),
         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.copyfile(REPO / "Dockerfile", context / "Dockerfile")
    _run("podman", "build", "--quiet", "--isolation", "chroot", "--network", "host", "--pull=never", "-t", IMAGE,
         str(context), stdout=subprocess.DEVNULL)
    return IMAGE


BOARD_CONTAINERFILE = """\
FROM {base}
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\
        systemd systemd-sysv dbus libpam-systemd openssh-server python3-venv >/dev/null \\
    && rm -rf /var/lib/apt/lists/*
# pip on the board trusts the host's CA bundle (the registries' TLS is re-signed here)
RUN printf '[global]\\ncert = /etc/ssl/certs/ca-certificates.crt\\n' > /etc/pip.conf
# root gets a system unit; pi, an ordinary user, a user unit (kept running by lingering)
COPY authorized_keys /root/.ssh/authorized_keys
RUN chmod 700 /root/.ssh && chmod 600 /root/.ssh/authorized_keys && useradd --create-home pi \\
    && install -d -m 700 -o pi -g pi /home/pi/.ssh \\
    && install -m 600 -o pi -g pi /root/.ssh/authorized_keys /home/pi/.ssh/authorized_keys
CMD ["/sbin/init"]
"""


def systemd_board() -> tuple[str, Path]:
    """The image of a board with systemd and sshd, and the private key that logs in to it as root."""
    ensure_base()
    context = HOME / "board"
    context.mkdir(parents=True, exist_ok=True)
    key = HOME / "board_ed25519"
    if not key.exists():
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgert-systemd-board", "-f", str(key))
    shutil.copyfile(key.with_suffix(".pub"), context / "authorized_keys")
    (context / "Containerfile").write_text(BOARD_CONTAINERFILE.format(base=BASE))
    _run("podman", "build", "--quiet", "--isolation", "chroot", "--network", "host", "--pull=never", "-t",
         BOARD_IMAGE, str(context), stdout=subprocess.DEVNULL)
    return BOARD_IMAGE, key


def clean() -> None:
    subprocess.run(["podman", "rmi", "-f", IMAGE, BOARD_IMAGE, BASE], capture_output=True)
    shutil.rmtree(HOME, ignore_errors=True)


if __name__ == "__main__":
    {"build": lambda: print(build()), "clean": clean}[sys.argv[1]]()
