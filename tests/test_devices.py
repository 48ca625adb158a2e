"""Board profiles (built in and the user's own), detection on fixture trees, and `--delegate auto` from a profile."""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

import edgert
from edgert.cli import cli
from edgert.runtime.delegation import AUTO_ORDER, parse_request
from edgert.devices import detect, profiles
from edgert.errors import DeviceProfileError
from tests.fakesys import FakeSysfs

BUILTIN = ("android", "coral-devboard", "coral-devboard-mini", "coral-usb", "jetson-orin-nano", "rpi4", "rpi5",
           "x86-64")

RPI5_MODEL = "Raspberry Pi 5 Model B Rev 1.0"
CORAL_MODEL = "Freescale i.MX8MQ Phanbell"


@pytest.fixture
def board(tmp_path, monkeypatch):
    """An empty fixture root on a machine type no profile claims, with no getprop: each test lays out its board."""
    root = tmp_path / "root"
    root.mkdir()
    monkeypatch.setenv("EDGERT_SYSFS_ROOT", str(root))
    monkeypatch.setenv("EDGERT_MACHINE", "riscv64")
    monkeypatch.setenv("EDGERT_GETPROP", str(tmp_path / "no-getprop"))
    monkeypatch.delenv("EDGERT_DEVICE", raising=False)
    return FakeSysfs(root)


def device_tree(fs: FakeSysfs, model: str) -> None:
    p = fs.root / "proc/device-tree/model"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(model.encode() + b"\0")  # the kernel's string property ends in NUL


def usb(fs: FakeSysfs, port: str, vendor: str, product: str, name: str = "") -> None:
    fs.write(f"/sys/bus/usb/devices/{port}/idVendor", vendor)
    fs.write(f"/sys/bus/usb/devices/{port}/idProduct", product)
    if name:
        fs.write(f"/sys/bus/usb/devices/{port}/product", name)


def root_hubs(fs: FakeSysfs) -> None:
    usb(fs, "usb1", "1d6b", "0002", "xHCI Host Controller")
    usb(fs, "usb2", "1d6b", "0003", "xHCI Host Controller")
    fs.write("/sys/bus/usb/devices/1-0:1.0/bInterfaceClass", "09")  # interfaces have no ids: skipped


# -- profiles ---------------------------------------------------------------------------------------------------


def test_every_builtin_profile_loads_and_says_what_runs_there():
    found, broken = profiles.all_profiles()
    assert set(BUILTIN) <= set(found) and not broken
    for p in found.values():
        assert p.builtin and p.title and p.arch and p.delegates and p.runtime.package
        assert p.idle_power_w is None or p.idle_power_source  # no uncited figures
        if p.deploy == "ssh":
            assert p.runtime.python_min >= (3, 10)  # what edgert itself needs
    assert profiles.get("rpi5").power_sensors[0] == "pmic"
    assert profiles.get("jetson-orin-nano").power_sensors[0] == "ina3221"
    assert profiles.get("coral-devboard").delegates == ("edgetpu:pci", "xnnpack")
    assert profiles.get("RPi5").name == "rpi5"  # names are case-insensitive


def test_profile_delegates_are_valid_requests():
    for p in profiles.all_profiles()[0].values():
        request = parse_request(",".join(p.delegates))
        assert request.names[-1] == "xnnpack"  # every board ends on the CPU


def test_unknown_profile_suggests_the_closest():
    with pytest.raises(DeviceProfileError, match="no device profile 'rpi'; did you mean 'rpi4' or 'rpi5'"):
        profiles.get("rpi")
    with pytest.raises(DeviceProfileError, match="did you mean 'coral-usb'"):
        profiles.get("coral-ubs")


def _write_profile(folder, name, text):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.toml").write_text(text)


MY_BOARD = """
title = "Rock 5B"
arch = ["aarch64"]
cores = 8
memory_gb = [4, 8, 16]
delegates = ["gpu", "xnnpack"]
power_sensors = ["ina2xx"]
idle_power_w = 2.5
idle_power_source = "measured on our bench with a UM25C, 2026-05"

[runtime]
package = "ai-edge-litert>=2.3"
python = ">=3.11"

[detect]
model = ["Radxa ROCK 5B"]
"""


def test_user_profiles_from_the_config_dir_and_env(tmp_path, monkeypatch, board):
    config = tmp_path / "xdg"
    monkeypatch.delenv("EDGERT_DEVICES_PATH", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    _write_profile(config / "edgert" / "devices", "rock5b", MY_BOARD)
    p = profiles.get("rock5b")
    assert not p.builtin and p.cores == 8 and p.runtime.python_min == (3, 11) and p.idle_power_w == 2.5
    device_tree(board, "Radxa ROCK 5B")
    assert detect.detect().profile.name == "rock5b"

    # EDGERT_DEVICES_PATH replaces the config dir; a user's file overrides the built-in of the same name.
    other = tmp_path / "team-profiles"
    _write_profile(other, "rpi5", MY_BOARD.replace("Rock 5B", "Our Pi 5 image"))
    monkeypatch.setenv("EDGERT_DEVICES_PATH", str(other))
    assert profiles.get("rpi5").title == "Our Pi 5 image"
    with pytest.raises(DeviceProfileError):
        profiles.get("rock5b")


@pytest.mark.parametrize("change, message", [
    (("cores = 8", "corse = 8"), "unknown key 'corse' (did you mean 'cores'?)"),
    (('idle_power_source = "measured on our bench with a UM25C, 2026-05"', ""), "idle_power_w needs idle_power_source"),
    (('delegates = ["gpu", "xnnpack"]', "delegates = []"), "delegates must name at least one"),
    (('python = ">=3.11"', 'python = "3.11+"'), "runtime.python must look like '>=3.10'"),
    (('model = ["Radxa ROCK 5B"]', 'usb = ["1a6e-089a"]'), "VENDOR:PRODUCT"),
    (("cores = 8", "cores = 8\ndeploy = \"ftp\""), "deploy must be one of ssh, android"),
    (("[runtime]", "[runtim]"), "unknown key 'runtim'"),
    (("title =", "title = = "), "is not valid TOML"),
])
def test_broken_user_profiles_are_listed_with_the_reason(tmp_path, monkeypatch, change, message):
    folder = tmp_path / "profiles"
    _write_profile(folder, "rock5b", MY_BOARD.replace(*change))
    monkeypatch.setenv("EDGERT_DEVICES_PATH", str(folder))
    found, broken = profiles.all_profiles()
    assert "rock5b" not in found and message in broken["rock5b"].error
    with pytest.raises(DeviceProfileError, match="rock5b"):
        profiles.get("rock5b")
    result = CliRunner().invoke(cli, ["devices"])
    assert result.exit_code == 0 and "rock5b" in result.output and "broken:" in result.output


def test_a_broken_override_does_not_fall_back_to_the_builtin(tmp_path, monkeypatch):
    _write_profile(tmp_path, "rpi5", "title = 'x'\n")
    monkeypatch.setenv("EDGERT_DEVICES_PATH", str(tmp_path))
    with pytest.raises(DeviceProfileError, match="a \\[runtime\\] table"):
        profiles.get("rpi5")


# -- detection --------------------------------------------------------------------------------------------------


def test_detects_a_raspberry_pi_5(board):
    device_tree(board, RPI5_MODEL)
    root_hubs(board)
    found = detect.detect()
    assert found.profile.name == "rpi5" and not found.accelerators
    assert found.delegates == ("xnnpack",)
    assert any(RPI5_MODEL in line for line in found.evidence)


def test_detects_a_coral_dev_board(board):
    device_tree(board, CORAL_MODEL)
    found = detect.detect()
    assert found.profile.name == "coral-devboard"
    assert found.delegates == ("edgetpu:pci", "xnnpack")


@pytest.mark.parametrize("ids, state", [(("1a6e", "089a"), "has not loaded its firmware"),
                                        (("18d1", "9302"), "firmware loaded")])
def test_detects_a_coral_usb_accelerator_on_a_host(board, monkeypatch, ids, state):
    monkeypatch.setenv("EDGERT_MACHINE", "x86_64")
    root_hubs(board)
    usb(board, "2-1", *ids)
    usb(board, "1-4", "046d", "c52b", "USB Receiver")  # a mouse: ignored
    found = detect.detect()
    assert found.profile.name == "coral-usb"
    assert found.delegates == ("edgetpu:usb", "xnnpack")
    assert any(f"USB {ids[0]}:{ids[1]} at port 2-1" in line and state in line for line in found.evidence)


def test_a_usb_accelerator_on_a_pi_goes_first_in_the_pis_order(board):
    device_tree(board, RPI5_MODEL)
    usb(board, "3-1", "18d1", "9302")
    found = detect.detect()
    assert found.profile.name == "rpi5" and [a.name for a in found.accelerators] == ["coral-usb"]
    assert found.delegates == ("edgetpu:usb", "xnnpack")
    request = parse_request("auto")
    assert request.names == ("edgetpu", "xnnpack") and request.options["edgetpu"]["device"] == "usb"


def test_detects_android_from_getprop(board, tmp_path, monkeypatch):
    getprop = tmp_path / "getprop"
    getprop.write_text("#!/bin/sh\ncat <<'EOF'\n[ro.build.version.release]: [15]\n[ro.build.version.sdk]: [35]\n"
                       "[ro.product.manufacturer]: [Google]\n[ro.product.model]: [Pixel 8]\nEOF\n")
    getprop.chmod(getprop.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("EDGERT_GETPROP", str(getprop))
    found = detect.detect()
    assert found.profile.name == "android" and found.delegates == ("gpu", "nnapi", "xnnpack")
    assert "Android 15 on Google Pixel 8" in found.evidence[0]


def test_an_unknown_board_says_so_and_auto_keeps_the_builtin_order(board):
    device_tree(board, "Pine64 RockPro64")
    found = detect.detect()
    assert found.profile is None and found.delegates == ()
    assert "'Pine64 RockPro64', which no profile matches" in found.evidence[0]
    assert "pass --device NAME" in found.evidence[-1]
    names = parse_request("auto").names
    assert names == tuple(n for n in AUTO_ORDER if n in names) and names[-1] == "xnnpack"


def test_edgert_device_names_the_profile_for_auto(board, monkeypatch):
    device_tree(board, RPI5_MODEL)
    monkeypatch.setenv("EDGERT_DEVICE", "coral-devboard")
    request = parse_request("auto")
    assert request.names == ("edgetpu", "xnnpack") and request.options["edgetpu"]["device"] == "pci"
    monkeypatch.setenv("EDGERT_DEVICE", "rpi6")
    with pytest.raises(DeviceProfileError, match="did you mean 'rpi"):
        parse_request("auto")


def test_auto_on_a_detected_board_loads_and_reports_the_boards_order(board, float_tflite):
    device_tree(board, CORAL_MODEL)  # no Edge TPU here: skipped with its reason, the CPU runs the model
    report = edgert.load(float_tflite, delegate="auto").delegation
    assert report.requested == ("edgetpu", "xnnpack") and report.used == "xnnpack"
    assert report.skipped[0].name == "edgetpu"


# -- CLI --------------------------------------------------------------------------------------------------------


def test_cli_lists_shows_and_detects(board):
    device_tree(board, RPI5_MODEL)
    runner = CliRunner()
    listed = runner.invoke(cli, ["devices"])
    assert listed.exit_code == 0 and all(name in listed.output for name in BUILTIN)
    shown = runner.invoke(cli, ["devices", "show", "rpi5"])
    assert shown.exit_code == 0 and "pmic" in shown.output and "ai-edge-litert" in shown.output
    as_json = json.loads(runner.invoke(cli, ["devices", "show", "coral-usb", "--json"]).output)
    assert as_json["detect"]["usb"] == ["1a6e:089a", "18d1:9302"]
    detected = runner.invoke(cli, ["devices", "detect"])
    assert detected.exit_code == 0 and "board: Raspberry Pi 5 (rpi5)" in detected.output
    assert f"because /proc/device-tree/model is {RPI5_MODEL!r}" in detected.output
    data = json.loads(runner.invoke(cli, ["devices", "detect", "--json"]).output)
    assert data["profile"] == "rpi5" and data["delegates"] == ["xnnpack"]
    missing = runner.invoke(cli, ["devices", "show", "jetson"])
    assert missing.exit_code == 1 and "Traceback" not in missing.output
    assert missing.output.count("\n") == 1 and "did you mean 'jetson-orin-nano'" in missing.output


def test_profile_files_ship_in_the_package():
    folder = os.path.join(os.path.dirname(profiles.__file__), "profiles")
    assert sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".toml")) == sorted(BUILTIN)


def test_an_emulated_userland_is_recognised(tmp_path, monkeypatch):
    """qemu-user reports the guest's architecture but leaves the kernel's facts alone: an aarch64 Python whose
    kernel, or whose /proc/cpuinfo, is x86 is emulated; the same facts agreeing are not."""
    from edgert.devices.machine import emulation

    proc = tmp_path / "proc"
    (proc / "sys" / "kernel").mkdir(parents=True)
    monkeypatch.setenv("EDGERT_SYSFS_ROOT", str(tmp_path))
    x86_cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 avx\n"
    arm_cpuinfo = "processor\t: 0\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n"
    cases = [("aarch64", "x86_64", x86_cpuinfo, "aarch64 userland, x86_64 kernel: qemu-user"),
             ("aarch64", None, x86_cpuinfo, "aarch64 userland, x86 CPU: qemu-user"),
             ("aarch64", "aarch64", arm_cpuinfo, None), ("aarch64", None, arm_cpuinfo, None),
             ("x86_64", "x86_64", x86_cpuinfo, None), ("x86_64", None, arm_cpuinfo, "x86_64 userland, ARM CPU")]
    for machine, kernel, cpuinfo, expected in cases:
        monkeypatch.setenv("EDGERT_MACHINE", machine)
        arch = proc / "sys" / "kernel" / "arch"
        arch.unlink(missing_ok=True)
        if kernel:
            arch.write_text(kernel + "\n")
        (proc / "cpuinfo").write_text(cpuinfo)
        found = emulation()
        assert (found is None) == (expected is None) and (expected is None or found.startswith(expected)), \
            (machine, kernel, found)
