"""The Dockerfile, built and run with podman on this machine (`make container-test`).

    python -m tests.container_image build [amd64|arm64]   the image edgert-serve:test-ARCH
    python -m tests.container_image clean                 remove the images and the stand-in bases

- The Dockerfile says `FROM python:3.11-slim-bookworm`, which cannot be pulled here (no registry is reachable).
  When no image of that name is present, the build replaces that one line (`podman build --from`) with a stand-in,
  localhost/edgert-base-standin:ARCH: Debian bookworm (debootstrap, minbase) with Debian's python3 (3.11), pip
  and the host's CA bundle (the registries' TLS is re-signed here), and Debian's "externally managed" marker
  removed, as the official image has none. Every line after FROM is the Dockerfile's own: the wheel is installed
  with [serve] from PyPI.
- linux/arm64 runs under qemu-user: the emulated board's qemu 10 (tests/emulated_board.py), registered with
  binfmt_misc for the build and the run, and put back as it was afterwards.
- A second image is a board with systemd: Debian bookworm (as Raspberry Pi OS is) with systemd as PID 1 and
  OpenSSH, for `edgert deploy --serve`'s systemd unit (`systemd_board`). The emulated Pi has no init, so there
  the server runs as a background process.
- podman builds with chroot isolation and runs with runc, with explicit ulimits: this VM has hybrid cgroups, which
  crun refuses, and a hard file limit below podman's default. Neither flag changes what the image contains.
Needs root and the network to Debian's mirror and PyPI.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOME = REPO / "build" / "container"
OFFICIAL_BASE = "docker.io/library/python:3.11-slim-bookworm"
STANDIN = "localhost/edgert-base-standin"
IMAGE = "localhost/edgert-serve"
BOARD_IMAGE = "localhost/edgert-systemd-board:test"
RUN_FLAGS = ("--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
NATIVE = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, text=True, **kwargs)


def podman_works() -> str | None:
    """None when podman and runc are here, or why not."""
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make container-test installs it)"
    return None


def _has_image(name: str, arch: str | None = None) -> bool:
    done = subprocess.run(["podman", "image", "inspect", "--format", "{{.Architecture}}", name], capture_output=True,
                          text=True)
    return done.returncode == 0 and (arch is None or done.stdout.strip() == arch)


@contextlib.contextmanager
def emulation(arch: str):
    """What running `arch` binaries here needs: nothing for this machine's own, qemu-user for arm64."""
    if arch == NATIVE:
        yield
        return
    if arch != "arm64":
        raise ValueError(f"no emulation for {arch} here")
    from tests import emulated_board as board

    state = board._state()
    already = (board.BINFMT / board.BINFMT_NAME).exists()  # the emulated board is up: leave it as it is
    board.fetch_qemu(state)
    board.register_binfmt(state)
    try:
        yield
    finally:
        if not already:
            board.restore_binfmt(state)


def base(arch: str) -> str:
    """The image the Dockerfile's FROM gets: the official one when it is here, else the stand-in (built once)."""
    if _has_image(OFFICIAL_BASE, arch):
        return OFFICIAL_BASE
    name = f"{STANDIN}:{arch}"
    if _has_image(name, arch):
        return name
    rootfs = HOME / f"rootfs-{arch}"
    if not (rootfs / "usr" / "bin" / "python3").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        HOME.mkdir(parents=True, exist_ok=True)
        _run("debootstrap", f"--arch={arch}", "--variant=minbase", "--include=python3,python3-pip,ca-certificates",
             "bookworm", str(rootfs), "http://deb.debian.org/debian", stdout=subprocess.DEVNULL)
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt")
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    _run("podman", "import", "--arch", arch, "-", name, stdin=tar.stdout, stdout=subprocess.DEVNULL)
    tar.wait()
    return name


def build(arch: str = NATIVE) -> str:
    """Build the image for linux/`arch` from the Dockerfile and this checkout's wheel; returns its name. Call it
    inside `emulation(arch)`."""
    parent = base(arch)
    context = HOME / "context"
    shutil.rmtree(context, ignore_errors=True)
    (context / "dist").mkdir(parents=True)
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(context / "dist"), str(REPO),
         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.copyfile(REPO / "Dockerfile", context / "Dockerfile")
    image = f"{IMAGE}:test-{arch}"
    from_ = [] if parent == OFFICIAL_BASE else ["--from", parent]
    _run("podman", "build", "--quiet", "--format", "docker", "--isolation", "chroot", "--network", "host",
         "--pull=never", "--platform", f"linux/{arch}", *from_, "-t", image, str(context), stdout=subprocess.DEVNULL)
    return image


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
    """The image of a board with systemd and sshd (this machine's platform), and the private key that logs in to
    it as root and as pi."""
    parent = base(NATIVE)
    context = HOME / "board"
    context.mkdir(parents=True, exist_ok=True)
    key = HOME / "board_ed25519"
    if not key.exists():
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgert-systemd-board", "-f", str(key))
    shutil.copyfile(key.with_suffix(".pub"), context / "authorized_keys")
    (context / "Containerfile").write_text(BOARD_CONTAINERFILE.format(base=parent))
    _run("podman", "build", "--quiet", "--isolation", "chroot", "--network", "host", "--pull=never", "-t",
         BOARD_IMAGE, str(context), stdout=subprocess.DEVNULL)
    return BOARD_IMAGE, key


def clean() -> None:
    subprocess.run(["podman", "rmi", "-f", f"{IMAGE}:test-amd64", f"{IMAGE}:test-arm64", BOARD_IMAGE,
                    f"{STANDIN}:amd64", f"{STANDIN}:arm64"], capture_output=True)
    shutil.rmtree(HOME, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1] == "build":
        arch = sys.argv[2] if len(sys.argv) > 2 else NATIVE
        with emulation(arch):
            print(build(arch))
    else:
        clean()
