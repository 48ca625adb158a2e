"""Deploy bundles: one zip with the model, its recipe and report, a checksummed manifest and a runnable edgert.

A bundle is a Python zip application: `python3 model.edgert` (or `./run` in an unpacked one) verifies every file
against the manifest and runs the model with the board's delegate order. It carries edgert's own runtime code
(not the converters), so the board needs only Python, numpy, click and the interpreter package the manifest names.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from edgert.errors import BundleError
from edgert.files import atomic_path, check_output_path

BUNDLE_FORMAT = 1
SUFFIX = ".edgert"
MANIFEST = "manifest.json"
# Zip entries get one fixed time, so the same inputs make the same bytes (and the same version on the board).
_EPOCH = (1980, 1, 1, 0, 0, 0)
# What edgert itself needs on the board besides the interpreter package.
BASE_REQUIREMENTS = ("numpy>=1.23", "click>=8.1")
DEFAULT_PYTHON_MIN = (3, 10)

_MAIN = '''"""Runs this edgert bundle: python3 BUNDLE [verify|info|run|bench] [options]."""
import os
import sys

if sys.version_info < (3, 10):
    sys.exit("Error: this edgert bundle needs Python 3.10 or newer; this is Python %d.%d" % sys.version_info[:2])
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from edgert.bundled import main

main(os.path.dirname(os.path.abspath(__file__)), sys.argv[1:])
'''

_RUN = '''#!/bin/sh
# Runs this bundle: ./run [verify|info|run|bench] [options]. It moves to the board's runtime Python by itself.
exec "${EDGERT_PYTHON:-python3}" "$(dirname "$0")" "$@"
'''


@dataclass(frozen=True)
class BundleFile:
    """One file in a bundle and its checksum."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What a bundle holds and what it needs on the board."""

    name: str
    model: str  # the model's path inside the bundle
    model_sha256: str
    edgert_version: str
    device: str | None
    delegates: tuple[str, ...]
    requirements: tuple[str, ...]
    python_min: tuple[int, ...]
    index_url: str = ""
    inputs: tuple[dict, ...] = ()
    outputs: tuple[dict, ...] = ()
    recipe: dict | None = None
    files: tuple[BundleFile, ...] = ()
    format: int = BUNDLE_FORMAT

    @property
    def version(self) -> str:
        """A content id over the whole manifest (every file's checksum, the device, delegates, requirements...): the
        same bundle makes the same version wherever and whenever it was made, and any difference makes another."""
        content = json.dumps(self._content(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(content.encode()).hexdigest()[:16]

    def _content(self) -> dict:
        d = asdict(self)
        d["files"] = {f.path: {"sha256": f.sha256, "size": f.size} for f in self.files}
        return d

    def to_dict(self) -> dict:
        return {**self._content(), "version": self.version}

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        """Raises: BundleError: not a manifest this edgert understands."""
        try:
            if data.get("format") != BUNDLE_FORMAT:
                raise BundleError(f"bundle format {data.get('format')!r} is not {BUNDLE_FORMAT}; "
                                  "rebuild it with this edgert (`edgert bundle`)")
            files = tuple(BundleFile(p, v["sha256"], int(v["size"])) for p, v in sorted(data["files"].items()))
            return cls(data["name"], data["model"], data["model_sha256"], data["edgert_version"], data.get("device"),
                       tuple(data["delegates"]), tuple(data["requirements"]), tuple(data["python_min"]),
                       data.get("index_url", ""), tuple(data.get("inputs", ())), tuple(data.get("outputs", ())),
                       data.get("recipe"), files)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"the bundle's manifest is damaged ({type(exc).__name__}: {exc}); rebuild it") from None


@dataclass(frozen=True)
class Bundle:
    """A bundle written to disk."""

    path: str
    manifest: Manifest
    size_bytes: int
    sha256: str


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _runtime_files() -> dict[str, bytes]:
    """edgert's runtime code as it is installed here: the packages edgert, edgert.delegates and edgert.devices
    (with the board profiles) and the distribution's metadata, so entry-point plugins register on the board too."""
    import importlib.metadata

    import edgert
    import edgert.delegates
    import edgert.devices

    from edgert.deploy import agent

    files: dict[str, bytes] = {}
    for module, prefix, data_globs in ((edgert, "edgert", ()), (edgert.delegates, "edgert/delegates", ()),
                                       (edgert.devices, "edgert/devices", ("profiles/*.toml",))):
        folder = Path(module.__file__).parent
        # subpackages (cli) too; of the Ansible collection, which runs from the controller, only the board side
        code = [p for p in sorted(folder.rglob("*.py")) if not {"__pycache__", "collections"} & set(p.parts)]
        if module is edgert:
            code.append(agent.PATH)
        for path in code + [p for g in data_globs for p in sorted(folder.glob(g))]:
            files[f"{prefix}/{path.relative_to(folder).as_posix()}"] = path.read_bytes()
    dist = importlib.metadata.distribution("edgert")
    info = f"edgert-{dist.version}.dist-info"
    # Name and version only: the installed METADATA also holds the README (100 KiB no board reads), and a checkout's
    # edgert.egg-info holds another copy of it than site-packages does, which would make the version depend on where
    # the bundle was built from.
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: edgert\nVersion: {dist.version}\n".encode()
    entry_points = dist.read_text("entry_points.txt") or ""
    files[f"{info}/entry_points.txt"] = entry_points.encode()
    return files


def bundle_name(model_path: str | os.PathLike) -> str:
    """The name a model is deployed under: its file stem, reduced to letters, digits, '.', '_' and '-'."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model_path).stem).strip(".-") or "model"
    return name


def build(model_path: str | os.PathLike, device: str | None = None, *, name: str | None = None,
          delegates: tuple[str, ...] | None = None) -> tuple[bytes, Manifest]:
    """Make a bundle's bytes in memory.

    Args:
        model_path: a `.tflite` file; `<model>.recipe.json` and `<model>.report.json` beside it go in too.
        device: a device profile name: its delegate order and runtime package go in the manifest. None: the board
            decides (`--delegate auto`) and the runtime is ai-edge-litert.
        delegates: a delegate order of the user's for this board (a fleet's `edgert_delegate`), instead of the
            profile's.

    Raises:
        ModelFormatError: the model is missing or not a valid TFLite file.
        DeviceProfileError: unknown device profile.
        BundleError: the profile deploys some other way (Android).
    """
    import edgert
    from edgert.devices import profiles
    from edgert.tflite.info import inspect_model

    model_path = Path(model_path)
    info = inspect_model(model_path)  # refuses what is not a model before anything is packed
    profile = profiles.get(device) if device else None
    if profile is not None and profile.deploy != "ssh":
        raise BundleError(f"{profile.title} ({profile.name}) runs models inside an app, not from a bundle; use "
                          "`edgert export android` for it")
    name = name or bundle_name(model_path)
    model_bytes = model_path.read_bytes()
    contents: dict[str, bytes] = {f"model/{model_path.name}": model_bytes}
    recipe = None
    for suffix in (".recipe.json", ".report.json"):
        extra = Path(str(model_path) + suffix)
        if extra.is_file():
            contents[f"model/{extra.name}"] = extra.read_bytes()
            if suffix == ".recipe.json":
                try:
                    recipe = json.loads(contents[f"model/{extra.name}"])
                except ValueError:
                    raise BundleError(f"{extra} is not valid JSON; fix or remove it") from None
    contents.update(_runtime_files())
    contents["__main__.py"] = _MAIN.encode()
    contents["run"] = _RUN.encode()
    runtime = profile.runtime if profile else None
    requirements = BASE_REQUIREMENTS + (runtime.requirements if runtime else ("ai-edge-litert>=2.3",))
    python_min = max(DEFAULT_PYTHON_MIN, (runtime.python_min if runtime else None) or DEFAULT_PYTHON_MIN)
    files = tuple(BundleFile(p, _sha256(b), len(b)) for p, b in sorted(contents.items()))
    manifest = Manifest(
        name=name, model=f"model/{model_path.name}", model_sha256=_sha256(model_bytes),
        edgert_version=edgert.__version__, device=profile.name if profile else None,
        delegates=tuple(delegates) if delegates else profile.delegates if profile else ("auto",),
        requirements=requirements, python_min=python_min,
        index_url=runtime.index_url if runtime else "", inputs=tuple(s.to_dict() for s in info.inputs),
        outputs=tuple(s.to_dict() for s in info.outputs), recipe=recipe, files=files)
    contents[MANIFEST] = json.dumps(manifest.to_dict(), indent=2, sort_keys=True).encode() + b"\n"
    manifest = Manifest.from_dict(json.loads(contents[MANIFEST]))  # exactly what the board will read
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        # __main__.py first is not required by zipimport; manifest first lets `unzip -p` show it quickly.
        for path in [MANIFEST] + sorted(p for p in contents if p != MANIFEST):
            entry = zipfile.ZipInfo(path, _EPOCH)
            entry.external_attr = (0o100755 if path == "run" else 0o100644) << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, contents[path])
    return buffer.getvalue(), manifest


def make_bundle(model_path: str | os.PathLike, device: str | None = None, output: str | os.PathLike | None = None,
                *, name: str | None = None, force: bool = False) -> Bundle:
    """Write a bundle for `model_path` (default output: `<stem>.edgert` beside it), atomically.

    Raises:
        OutputExistsError: the output exists and `force` is false.
        (and whatever `build` raises)
    """
    output = Path(output) if output else Path(model_path).with_suffix(SUFFIX)
    if output.suffix != SUFFIX:
        raise BundleError(f"a bundle's name ends in {SUFFIX} (got {output.name}); e.g. -o {output.stem}{SUFFIX}")
    check_output_path(output, force=force)
    data, manifest = build(model_path, device, name=name)
    with atomic_path(output) as tmp:
        tmp.write_bytes(data)
    return Bundle(str(output), manifest, len(data), _sha256(data))


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The manifest of a bundle file or an unpacked bundle folder.

    Raises:
        BundleError: not a bundle, or its manifest is damaged.
    """
    p = Path(path)
    try:
        if p.is_dir():
            raw = (p / MANIFEST).read_bytes()
        else:
            with zipfile.ZipFile(p) as archive:
                raw = archive.read(MANIFEST)
    except FileNotFoundError:
        raise BundleError(f"{p} does not exist") from None
    except KeyError:
        raise BundleError(f"{p} has no {MANIFEST}: not an edgert bundle") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{p} is not an edgert bundle ({exc}); make one with `edgert bundle MODEL`") from None
    try:
        return Manifest.from_dict(json.loads(raw))
    except ValueError:
        raise BundleError(f"{p}: {MANIFEST} is not valid JSON; rebuild the bundle") from None


def verify(path: str | os.PathLike) -> Manifest:
    """Check every file of a bundle (zip or unpacked folder) against its manifest, as the board does.

    Raises:
        BundleError: a file is missing, has another size or checksum, or the manifest is damaged.
    """
    from edgert.deploy import agent

    p = Path(path)
    manifest = read_manifest(p)
    bad = agent.verify_bundle(str(p))
    if bad == MANIFEST:
        raise BundleError(f"{p}: {MANIFEST} cannot be read; the bundle is damaged, deploy it again")
    if bad:
        present = (p / bad).exists() if p.is_dir() else bad in zipfile.ZipFile(p).namelist()
        raise BundleError(f"{p}: {bad} " + ("does not match its checksum in the manifest; the bundle is damaged, "
                                            "deploy it again" if present else
                                            "is missing; the bundle is incomplete, deploy it again"))
    return manifest


def _unpacked(here: str) -> Path:
    """The folder a bundle runs from: itself, or (when run as a zip) a cache folder it is unpacked into once."""
    if os.path.isdir(here):
        return Path(here)
    data = Path(here).read_bytes()
    cache = Path(os.environ.get("EDGERT_CACHE_DIR") or Path.home() / ".cache" / "edgert") / "bundles"
    target = cache / _sha256(data)[:16]
    if not (target / MANIFEST).is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{target.name}.{os.getpid()}.part"
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            archive.extractall(tmp)
        os.chmod(tmp / "run", 0o755)
        try:
            os.replace(tmp, target)
        except OSError:  # another process unpacked it first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return target
