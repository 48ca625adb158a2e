"""Which board this is: the device-tree model, Android's properties, USB accelerators, then the machine type.

Everything is read through `EDGERT_SYSFS_ROOT`, so fixture trees laid out like a Raspberry Pi 5, a Coral Dev Board
or a host with a Coral USB Accelerator stand in for the real thing.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass

from edgert.devices import sysfs
from edgert.devices import profiles as _profiles
from edgert.devices.machine import board_model
from edgert.devices.profiles import DeviceProfile

# What each known USB id is, for the evidence line.
USB_NAMES = {
    "1a6e:089a": "Coral USB Accelerator (Global Unichip id: the runtime has not loaded its firmware yet)",
    "18d1:9302": "Coral USB Accelerator (Google id: firmware loaded)",
}


@dataclass(frozen=True)
class UsbDevice:
    """A USB device from /sys/bus/usb/devices (`port` is the sysfs name, e.g. `2-1`)."""

    port: str
    vendor_product: str
    product: str = ""


@dataclass(frozen=True)
class Detection:
    """The board found (or None), the accelerators attached, the evidence for each, and the delegate order
    `--delegate auto` uses here."""

    profile: DeviceProfile | None
    accelerators: tuple[DeviceProfile, ...]
    evidence: tuple[str, ...]
    delegates: tuple[str, ...]
    found_by: str = ""  # device-tree, android, usb or machine: how sure the board is

    def to_dict(self) -> dict:
        return {"profile": self.profile.name if self.profile else None, "found_by": self.found_by,
                "title": self.profile.title if self.profile else None,
                "accelerators": [a.name for a in self.accelerators], "evidence": list(self.evidence),
                "delegates": list(self.delegates)}


def usb_devices() -> list[UsbDevice]:
    """USB devices with their ids, from sysfs."""
    found = []
    for folder in sysfs.glob("/sys/bus/usb/devices/*"):
        vendor = sysfs.read_text(os.path.join(folder, "idVendor"))
        product = sysfs.read_text(os.path.join(folder, "idProduct"))
        if vendor and product:
            found.append(UsbDevice(os.path.basename(folder), f"{vendor}:{product}".lower(),
                                   sysfs.read_text(os.path.join(folder, "product"), "") or ""))
    return found


def android_properties() -> dict[str, str]:
    """`ro.*` properties from `getprop` (`EDGERT_GETPROP` names another command), else /system/build.prop;
    empty when this is not Android."""
    command = os.environ.get("EDGERT_GETPROP") or shutil.which("getprop")
    props: dict[str, str] = {}
    if command:
        try:
            out = subprocess.run([command], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        for line in out.splitlines():  # [ro.product.model]: [Pixel 8]
            key, sep, value = line.partition("]: [")
            if sep:
                props[key.lstrip("[")] = value.rstrip("]")
    if not props:
        text = sysfs.read_text(sysfs.path("/system/build.prop"), "") or ""
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and not key.startswith("#"):
                props[key.strip()] = value.strip()
    return props


def machine() -> str:
    """The machine type (`x86_64`, `aarch64`); `EDGERT_MACHINE` overrides it for tests and cross-checks."""
    return os.environ.get("EDGERT_MACHINE") or platform.machine()


def detect() -> Detection:
    """Find the board this runs on and the accelerators attached to it."""
    found, _broken = _profiles.all_profiles()
    evidence: list[str] = []
    board: DeviceProfile | None = None
    found_by = ""

    model = board_model()
    if model:
        for profile in found.values():
            if any(pattern.lower() in model.lower() for pattern in profile.detect.model):
                board, found_by = profile, "device-tree"
                evidence.append(f"/proc/device-tree/model is {model!r}: {profile.title} ({profile.name})")
                break
        else:
            evidence.append(f"/proc/device-tree/model is {model!r}, which no profile matches")
    if board is None:
        props = android_properties()
        if props.get("ro.build.version.sdk") or props.get("ro.product.model"):
            board = next((p for p in found.values() if p.detect.android), None)
            found_by = "android" if board else ""
            evidence.append(f"Android {props.get('ro.build.version.release', '?')} on "
                            f"{props.get('ro.product.manufacturer', '')} {props.get('ro.product.model', '?')}".strip()
                            + (f": {board.title} ({board.name})" if board else ""))

    accelerators: list[DeviceProfile] = []
    for device in usb_devices():
        for profile in found.values():
            if device.vendor_product in profile.detect.usb and profile not in accelerators:
                accelerators.append(profile)
                what = USB_NAMES.get(device.vendor_product, device.product or "a known accelerator")
                evidence.append(f"USB {device.vendor_product} at port {device.port}: {what}")
    if board is None and accelerators:
        board, found_by = accelerators[0], "usb"
    if board is None:
        kind = machine()
        board = next((p for p in found.values() if kind in p.detect.machine), None)
        found_by = "machine" if board else ""
        evidence.append(f"machine type {kind}" + (f": {board.title} ({board.name})" if board
                                                   else ", which no profile matches; pass --device NAME"))

    delegates: list[str] = []
    for profile in [a for a in accelerators if a is not board] + ([board] if board else []):
        for name in profile.delegates:
            if name not in delegates:
                delegates.append(name)
    return Detection(board, tuple(accelerators), tuple(evidence), tuple(delegates), found_by)
