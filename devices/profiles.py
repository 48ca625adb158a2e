"""Board profiles: one TOML file per board (built in, or the user's own), loaded into typed `DeviceProfile`s."""

from __future__ import annotations

import difflib
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from edgert.errors import DeviceProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEPLOY_METHODS = ("ssh", "android")


@dataclass(frozen=True)
class RuntimeSpec:
    """What runs models on the board: a pip requirement (or, on Android, a Maven artifact) and its limits."""

    package: str
    python: str = ""
    index_url: str = ""
    numpy: str = ""
    system_packages: tuple[str, ...] = ()
    notes: str = ""

    @property
    def python_min(self) -> tuple[int, ...] | None:
        """The lowest Python version, from `>=3.10`; None where the runtime is not a Python package."""
        match = re.fullmatch(r"\s*>=\s*(\d+(?:\.\d+){0,2})\s*", self.python)
        return tuple(int(p) for p in match.group(1).split(".")) if match else None

    @property
    def requirements(self) -> tuple[str, ...]:
        """The pip requirements that install this runtime."""
        return (self.package,) + ((f"numpy{self.numpy}",) if self.numpy else ())


@dataclass(frozen=True)
class DetectRule:
    """How a board is recognised: device-tree model substrings, USB ids, Android, or the machine type."""

    model: tuple[str, ...] = ()
    usb: tuple[str, ...] = ()
    android: bool = False
    machine: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceProfile:
    """One board: what it is, what runs there, which delegates to try first, and how to recognise it."""

    name: str
    title: str
    arch: tuple[str, ...]
    runtime: RuntimeSpec
    delegates: tuple[str, ...]
    cpu: str = ""
    cores: int | None = None
    memory_gb: tuple[float, ...] = ()
    deploy: str = "ssh"
    power_sensors: tuple[str, ...] = ()
    thermal_zones: tuple[str, ...] = ()
    idle_power_w: float | None = None
    idle_power_source: str = ""
    detect: DetectRule = field(default_factory=DetectRule)
    source: str = ""  # the file it came from
    builtin: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BrokenProfile:
    """A profile file that could not be read, kept so `edgert devices` can say why."""

    name: str
    source: str
    error: str


_TOP_KEYS = {"title", "arch", "cpu", "cores", "memory_gb", "deploy", "delegates", "power_sensors", "thermal_zones",
             "idle_power_w", "idle_power_source", "runtime", "detect"}
_RUNTIME_KEYS = {"package", "python", "index_url", "numpy", "system_packages", "notes"}
_DETECT_KEYS = {"model", "usb", "android", "machine"}


def _strings(data: dict, key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise DeviceProfileError(f"{where}: {key} must be a list of strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _string(data: dict, key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if value is None:
        raise DeviceProfileError(f"{where}: {key} is missing")
    if not isinstance(value, str):
        raise DeviceProfileError(f"{where}: {key} must be a string, got {value!r}")
    return value.strip()


def _unknown(data: dict, known: set[str], where: str) -> None:
    extra = sorted(set(data) - known)
    if extra:
        hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, known, 1)) else repr(k)
                 for k in extra]
        raise DeviceProfileError(f"{where}: unknown key {', '.join(hints)}; known: {', '.join(sorted(known))}")


def profile_from_dict(name: str, data: dict, *, source: str = "", builtin: bool = False) -> DeviceProfile:
    """Validate a profile's TOML table.

    Raises:
        DeviceProfileError: a missing or mistyped key, an unknown key (with the closest known one), an idle-power
            figure without its source, an unknown deploy method, or a delegate order naming no delegate.
    """
    where = f"device profile {name}" + (f" ({source})" if source else "")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        raise DeviceProfileError(f"{where}: the name (file stem) must be lower-case letters, digits, '.', '_' or '-'")
    _unknown(data, _TOP_KEYS, where)
    runtime = data.get("runtime")
    if not isinstance(runtime, dict):
        raise DeviceProfileError(f"{where}: a [runtime] table with at least `package` is required")
    _unknown(runtime, _RUNTIME_KEYS, f"{where} [runtime]")
    detect = data.get("detect", {})
    if not isinstance(detect, dict):
        raise DeviceProfileError(f"{where}: detect must be a table")
    _unknown(detect, _DETECT_KEYS, f"{where} [detect]")
    spec = RuntimeSpec(_string(runtime, "package", where), _string(runtime, "python", where, ""),
                       _string(runtime, "index_url", where, ""), _string(runtime, "numpy", where, ""),
                       _strings(runtime, "system_packages", where), _string(runtime, "notes", where, ""))
    if spec.python and spec.python_min is None:
        raise DeviceProfileError(f"{where}: runtime.python must look like '>=3.10', got {spec.python!r}")
    usb = _strings(detect, "usb", where)
    for pair in usb:
        if not re.fullmatch(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{4}", pair):
            raise DeviceProfileError(f"{where}: detect.usb entries are VENDOR:PRODUCT in hex (1a6e:089a), got {pair!r}")
    android = detect.get("android", False)
    if not isinstance(android, bool):
        raise DeviceProfileError(f"{where}: detect.android must be true or false")
    delegates = _strings(data, "delegates", where)
    if not delegates:
        raise DeviceProfileError(f"{where}: delegates must name at least one delegate (e.g. [\"xnnpack\"])")
    deploy = _string(data, "deploy", where, "ssh")
    if deploy not in DEPLOY_METHODS:
        raise DeviceProfileError(f"{where}: deploy must be one of {', '.join(DEPLOY_METHODS)}, got {deploy!r}")
    cores = data.get("cores")
    if cores is not None and (not isinstance(cores, int) or isinstance(cores, bool) or cores < 1):
        raise DeviceProfileError(f"{where}: cores must be a positive integer, got {cores!r}")
    memory = data.get("memory_gb", [])
    if not isinstance(memory, list) or not all(isinstance(m, (int, float)) and m > 0 for m in memory):
        raise DeviceProfileError(f"{where}: memory_gb must be a list of sizes in GB, got {memory!r}")
    idle = data.get("idle_power_w")
    idle_source = _string(data, "idle_power_source", where, "")
    if idle is not None:
        if not isinstance(idle, (int, float)) or isinstance(idle, bool) or idle <= 0:
            raise DeviceProfileError(f"{where}: idle_power_w must be a positive number of watts, got {idle!r}")
        if not idle_source:
            raise DeviceProfileError(f"{where}: idle_power_w needs idle_power_source (where the figure was measured "
                                     "or published)")
    arch = _strings(data, "arch", where)
    if not arch:
        raise DeviceProfileError(f"{where}: arch must list at least one machine type (e.g. [\"aarch64\"])")
    return DeviceProfile(
        name=name, title=_string(data, "title", where), arch=arch, runtime=spec, delegates=delegates,
        cpu=_string(data, "cpu", where, ""), cores=cores, memory_gb=tuple(memory), deploy=deploy,
        power_sensors=_strings(data, "power_sensors", where), thermal_zones=_strings(data, "thermal_zones", where),
        idle_power_w=None if idle is None else float(idle), idle_power_source=idle_source,
        detect=DetectRule(_strings(detect, "model", where), tuple(u.lower() for u in usb), android,
                          _strings(detect, "machine", where)),
        source=source, builtin=builtin)


def load_profile(path: str | os.PathLike, *, builtin: bool = False) -> DeviceProfile:
    """Read one profile file; its name is the file stem (`rpi5.toml` is `rpi5`).

    Raises:
        DeviceProfileError: the file cannot be read, is not TOML, or is not a valid profile.
    """
    p = path if hasattr(path, "read_text") else Path(path)  # a built-in may sit in a zip (a bundle run as one)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeviceProfileError(f"cannot read device profile {p}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DeviceProfileError(f"device profile {p} is not valid TOML: {exc}") from None
    return profile_from_dict(p.name.rsplit(".", 1)[0], data, source=str(p), builtin=builtin)


def user_dirs() -> tuple[Path, ...]:
    """Where users keep their own profiles: `EDGERT_DEVICES_PATH` (os.pathsep-separated), else
    `$XDG_CONFIG_HOME/edgert/devices` (default `~/.config/edgert/devices`)."""
    env = os.environ.get("EDGERT_DEVICES_PATH")
    if env is not None:
        return tuple(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return (Path(base) / "edgert" / "devices",)


def _builtin_files() -> list:
    """The built-in profiles as importlib.resources gives them: files, or entries of the zip edgert runs from."""
    folder = resources.files("edgert.devices") / "profiles"
    return sorted((f for f in folder.iterdir() if f.name.endswith(".toml")), key=lambda f: f.name)


def all_profiles() -> tuple[dict[str, DeviceProfile], dict[str, BrokenProfile]]:
    """Every profile by name (a user's file overrides a built-in of the same name) and the files that failed."""
    found: dict[str, DeviceProfile] = {}
    broken: dict[str, BrokenProfile] = {}
    for path in _builtin_files():
        found[path.name.removesuffix(".toml")] = load_profile(path, builtin=True)
    for folder in user_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                found[path.stem] = load_profile(path)
                broken.pop(path.stem, None)
            except DeviceProfileError as exc:
                broken[path.stem] = BrokenProfile(path.stem, str(path), str(exc))
                found.pop(path.stem, None)  # a broken override must not silently fall back to the built-in
    return found, broken


def get(name: str) -> DeviceProfile:
    """The profile called `name`.

    Raises:
        DeviceProfileError: no such profile (with the closest name), or the user's file for it is broken.
    """
    found, broken = all_profiles()
    key = name.strip().lower()
    if key in broken:
        raise DeviceProfileError(broken[key].error)
    if key in found:
        return found[key]
    close = [n for n in sorted(found) if n.startswith(key)][:3] or difflib.get_close_matches(key, list(found), n=1)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise DeviceProfileError(f"no device profile {name!r}; {hint}`edgert devices` lists them "
                             f"({', '.join(sorted(found))})")
