"""Facts about the machine a benchmark runs on: CPU, board model, governor and frequency, thermal zones.

Everything is read through `EDGERT_SYSFS_ROOT` (procfs included), so fixture trees stand in for real boards.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass

from edgert.devices import sysfs
from edgert.errors import SensorError


def cpu_model() -> str:
    """`model name` from /proc/cpuinfo (x86), else `Model`/`Hardware` (ARM boards), else the machine type."""
    text = sysfs.read_text(sysfs.path("/proc/cpuinfo"), "") or ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip().lower(), value.strip())
    for key in ("model name", "model", "hardware", "cpu model", "processor"):
        if key in fields and not fields[key].isdigit():
            return fields[key]
    return platform.processor() or platform.machine()


def board_model() -> str | None:
    """The device-tree model (`Raspberry Pi 5 Model B Rev 1.0`, Coral, Jetson), or None on other machines."""
    text = sysfs.read_text(sysfs.path("/proc/device-tree/model"))
    return text.rstrip("\x00").strip() if text else None


def _cpus() -> list[str]:
    return [d for d in sysfs.glob("/sys/devices/system/cpu/cpu[0-9]*") if re.search(r"cpu\d+$", d)]


def governor() -> str | None:
    """The scaling governor of the first CPU that has one (None where cpufreq is absent, e.g. in VMs)."""
    for d in _cpus():
        value = sysfs.read_text(os.path.join(d, "cpufreq", "scaling_governor"))
        if value:
            return value
    return None


def cpufreq_files() -> dict[str, str]:
    """CPU name -> its `scaling_cur_freq` file, for the CPUs that have cpufreq."""
    files = {os.path.basename(d): os.path.join(d, "cpufreq", "scaling_cur_freq") for d in _cpus()}
    return {cpu: f for cpu, f in files.items() if os.path.exists(f)}


def cpu_freqs_mhz(files: dict[str, str] | None = None) -> dict[str, float]:
    """Current frequency of each CPU in MHz (`scaling_cur_freq` is in kHz); unreadable ones are left out."""
    out = {}
    for cpu, file in (cpufreq_files() if files is None else files).items():
        try:
            out[cpu] = sysfs.read_number(file) / 1000.0
        except SensorError:
            continue
    return out


def cpu_max_freq_mhz() -> float | None:
    values = []
    for d in _cpus():
        text = sysfs.read_text(os.path.join(d, "cpufreq", "cpuinfo_max_freq"))
        try:
            values.append(float(text) / 1000.0)
        except (TypeError, ValueError):
            continue
    return max(values) if values else None


def thermal_zones() -> dict[str, str]:
    """Zone label (`cpu-thermal`, or `thermal_zone0` when unnamed; duplicates numbered) -> its `temp` file."""
    zones: dict[str, str] = {}
    for d in sysfs.glob("/sys/class/thermal/thermal_zone*"):
        temp = os.path.join(d, "temp")
        if not os.path.exists(temp):
            continue
        label = sysfs.read_text(os.path.join(d, "type")) or os.path.basename(d)
        if label in zones:
            label = f"{label}.{os.path.basename(d).removeprefix('thermal_zone')}"
        zones[label] = temp
    return zones


def read_temps_c(zones: dict[str, str]) -> dict[str, float]:
    """Temperatures in degrees C (`temp` is in millidegrees); unreadable zones are left out."""
    out = {}
    for label, file in zones.items():
        try:
            out[label] = sysfs.read_number(file) / 1000.0
        except SensorError:
            continue
    return out


_ARM = ("aarch64", "arm64", "armv7l", "armv6l", "armv8l")
_X86 = ("x86_64", "amd64", "i686", "i386")


def machine_type() -> str:
    """The architecture this Python runs as (`EDGERT_MACHINE` stands in for it in tests)."""
    return os.environ.get("EDGERT_MACHINE") or platform.machine()


def emulation() -> str | None:
    """Why this looks like a userland emulated by qemu-user (an aarch64 Python on an x86-64 CPU), or None.

    qemu-user reports the guest's architecture to the program (uname) but leaves the kernel's facts alone: the
    kernel's own architecture (/proc/sys/kernel/arch) and the CPU /proc/cpuinfo describes stay the host's.
    """
    machine = machine_type().lower()
    kernel = (sysfs.read_text(sysfs.path("/proc/sys/kernel/arch"), "") or "").strip().lower()
    if kernel and (machine in _ARM) != (kernel in _ARM) and (machine in _ARM or machine in _X86):
        return f"{machine} userland, {kernel} kernel: qemu-user"
    cpuinfo = sysfs.read_text(sysfs.path("/proc/cpuinfo"), "") or ""
    x86_cpu = re.search(r"^vendor_id\s*:\s*(GenuineIntel|AuthenticAMD)|^flags\s*:.*\bsse2\b", cpuinfo, re.M)
    arm_cpu = re.search(r"^CPU implementer\s*:", cpuinfo, re.M)
    if machine in _ARM and x86_cpu and not arm_cpu:
        return f"{machine} userland, x86 CPU: qemu-user"
    if machine in _X86 and arm_cpu and not x86_cpu:
        return f"{machine} userland, ARM CPU: an emulator"
    return None


@dataclass(frozen=True)
class MachineInfo:
    """What a benchmark result was measured on; recorded with every result."""

    cpu: str
    board: str | None
    platform: str
    kernel: str
    cores: int
    cores_available: int
    threads: int | None  # interpreter threads asked for (None: the runtime's default)
    governor: str | None
    cpu_freq_mhz: float | None  # mean of the CPUs' current frequency when measured
    cpu_max_freq_mhz: float | None
    backend: str
    python: str
    edgert: str
    emulated: str | None = None  # why the CPU is emulated (qemu-user): then timings are not the board's

    def to_dict(self) -> dict:
        return asdict(self)


def machine_info(backend: str, threads: int | None = None) -> MachineInfo:
    from edgert import __version__
    from edgert.delegates.base import current_platform

    freqs = cpu_freqs_mhz()
    try:
        available = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        available = os.cpu_count() or 1
    return MachineInfo(
        cpu=cpu_model(), board=board_model(), platform=str(current_platform()), kernel=platform.release(),
        cores=os.cpu_count() or 1, cores_available=available, threads=threads, governor=governor(),
        cpu_freq_mhz=round(sum(freqs.values()) / len(freqs), 1) if freqs else None,
        cpu_max_freq_mhz=cpu_max_freq_mhz(), backend=backend, python=platform.python_version(), edgert=__version__,
        emulated=emulation())
