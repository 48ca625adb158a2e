"""The models a server serves: named files, or a repository laid out as `edgert deploy` lays out a board.

A repository is a folder holding, per model, any of:
- `NAME.tflite`;
- `NAME/current` (a deployed model: `current` and `previous` link to unpacked bundles, see edgert.deploy.AGENT);
- `NAME/manifest.json` (one unpacked bundle).
The deploy root itself (with `models/` inside) is accepted too. A deployed model's `current` link is re-read while
serving: a deploy or a rollback switches the served version, and a request runs on whichever version it was
given when it started.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from edgert.runtime.delegation import DelegateRequest
from edgert.errors import EdgertError, InputDataError, ModelFormatError
from edgert.runtime.model import Model

log = logging.getLogger("edgert.serve")


@dataclass(frozen=True)
class Resolved:
    """Where a model's active version is, right now."""

    file: Path  # the .tflite file
    version: str  # the bundle's content id, or the file's sha256 prefix


def resolve(path: Path) -> Resolved:
    """The active .tflite of a model source: a file, a deployed model folder or an unpacked bundle.

    Raises:
        ModelFormatError: nothing servable there.
    """
    if path.is_dir():
        from edgert.deploy.bundle import read_manifest

        folder = path / "current" if (path / "current").exists() else path
        if not (folder / "manifest.json").is_file():
            raise ModelFormatError(f"{path}: no current version and no manifest.json; deploy a model there first")
        manifest = read_manifest(folder)
        # The version folder (not the link) is resolved once, so a request's model never changes under it.
        return Resolved(folder.resolve() / manifest.model, manifest.version)
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such model file")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return Resolved(path, digest.hexdigest()[:16])


def scan(folder: Path) -> dict[str, Path]:
    """The models in a repository folder, by name.

    Raises:
        InputDataError: not a folder.
    """
    if not folder.is_dir():
        raise InputDataError(f"--repository {folder}: not a folder")
    if (folder / "models").is_dir() and not (folder / "models" / "manifest.json").exists():
        folder = folder / "models"  # the deploy root: venv/ and models/
    found: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and ((entry / "current").exists() or (entry / "manifest.json").is_file()):
            found[entry.name] = entry
        elif entry.suffix == ".tflite" and entry.is_file():
            found.setdefault(entry.stem, entry)
    return found


def parse_model_args(specs: tuple[str, ...]) -> dict[str, Path]:
    """`PATH` or `NAME=PATH` arguments to models by name (the name is the file's stem, or the folder's name).

    Raises:
        InputDataError: a name given twice or not usable in a URL.
    """
    import re

    models: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            path, name = spec, Path(spec).stem if Path(spec).suffix == ".tflite" else Path(spec).name
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name or ""):
            raise InputDataError(f"model name {name!r} (from {spec!r}): use letters, digits, '.', '_' and '-'; "
                                 "give one as NAME=PATH")
        if name in models:
            raise InputDataError(f"two models are named {name!r}; name one of them with NAME=PATH")
        models[name] = Path(path)
    return models


@dataclass(frozen=True)
class Version:
    """One loaded version of a model: its id and its interpreters (one per CPU executor thread, see
    Repository.copies). A request keeps the Version it was checked against and runs on it, so a deploy or a
    rollback never changes the model under a request already accepted."""

    id: str
    replicas: tuple[Model, ...]


@dataclass
class Entry:
    """One served model: where it comes from, the version loaded now, and why it is not ready when it is not."""

    name: str
    source: Path
    current: Version | None = None  # swapped whole, so a reader sees one version's id and interpreters
    error: str | None = None  # why the model is not ready (load failure, unloaded)
    stale: str | None = None  # why the loaded version may no longer match the repository (deleted, damaged)
    loaded: bool = True  # False after an unload request

    @property
    def model(self) -> Model | None:
        current = self.current
        return current.replicas[0] if current else None

    @property
    def version(self) -> str | None:
        current = self.current
        return current.id if current else None

    @property
    def ready(self) -> bool:
        return self.loaded and self.current is not None


@dataclass
class Repository:
    """The served models and how they are loaded. Thread-safe: the watcher, the app and the executors share it."""

    sources: dict[str, Path]
    load_model: callable  # (path) -> Model
    folder: Path | None = None  # rescanned by load requests for names it did not have
    entries: dict[str, Entry] = field(default_factory=dict)
    listeners: list = field(default_factory=list)  # called with an Entry after each (re)load
    copies: callable = lambda model: 1  # (model) -> how many interpreters of it to keep (Scheduler.copies)

    def __post_init__(self):
        self._lock = threading.Lock()
        for name, path in self.sources.items():
            self.entries[name] = Entry(name, path)

    def load_all(self) -> None:
        for entry in list(self.entries.values()):
            self.reload(entry.name)

    def get(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def reload(self, name: str, *, explicit: bool = False) -> Entry:
        """Load the active version of `name` when it changed (or when `explicit`), and swap it in.

        A failed load keeps the version already loaded serving (and says why in `stale`); a model that never
        loaded is not ready, with the reason in `error`.

        Raises:
            KeyError: not a model of this server or its repository.
        """
        with self._lock:
            entry = self.entries.get(name)
            if entry is None and self.folder is not None:
                path = scan(self.folder).get(name)
                if path is not None:
                    entry = self.entries[name] = Entry(name, path)
            if entry is None:
                raise KeyError(name)
            if explicit:
                entry.loaded = True
            if not entry.loaded:
                return entry
        try:
            where = resolve(entry.source)
        except EdgertError as exc:
            self._failed(entry, str(exc))
            return entry
        if where.version == entry.version and entry.model is not None and not explicit:
            entry.stale = None
            return entry
        try:
            model = self.load_model(where.file)
            replicas = (model, *(self.load_model(where.file) for _ in range(self.copies(model) - 1)))
        except EdgertError as exc:
            self._failed(entry, str(exc))
            return entry
        with self._lock:
            before = entry.version
            entry.current, entry.error, entry.stale = Version(where.version, replicas), None, None
        if before is not None and before != where.version:
            log.info("%s: serving version %s (%s), replacing %s", name, where.version, model.delegation.describe(),
                     before)
        for listener in self.listeners:
            listener(entry)
        return entry

    def _failed(self, entry: Entry, why: str) -> None:
        with self._lock:
            if entry.model is None:
                if entry.error != why:
                    log.warning("%s: not ready: %s", entry.name, why)
                entry.error = why
            else:
                if entry.stale != why:
                    log.warning("%s: still serving version %s: %s", entry.name, entry.version, why)
                entry.stale = why

    def unload(self, name: str) -> Entry:
        """Stop serving `name` (a load request brings it back).

        Raises:
            KeyError: not a model of this server.
        """
        with self._lock:
            entry = self.entries[name]
            entry.loaded, entry.current = False, None
            entry.error = "unloaded; POST /v2/repository/models/%s/load serves it again" % name
        log.info("%s: unloaded", name)
        return entry

    def index(self) -> list[dict]:
        names = set(self.entries)
        if self.folder is not None:
            names |= set(scan(self.folder))
        rows = []
        for name in sorted(names):
            entry = self.entries.get(name)
            state = "READY" if entry and entry.ready else "UNAVAILABLE"
            row = {"name": name, "version": entry.version if entry and entry.version else "", "state": state}
            if entry and (entry.error or entry.stale):
                row["reason"] = entry.error or entry.stale
            rows.append(row)
        return rows


class Watcher:
    """Re-reads every model's source every `interval` seconds, so that a deploy or rollback is served at once, and
    serves models that appear in the repository folder."""

    def __init__(self, repository: Repository, interval: float):
        self.repository, self.interval = repository, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="edgert-serve-watch", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            names = list(self.repository.entries)
            if self.repository.folder is not None:  # a model deployed under a new name is served too
                try:
                    names += [n for n in scan(self.repository.folder) if n not in self.repository.entries]
                except (OSError, EdgertError) as exc:
                    log.warning("cannot read the repository: %s", exc)
            for name in names:
                try:
                    self.repository.reload(name)
                except Exception as exc:  # noqa: BLE001 - the watcher must outlive any one bad model
                    log.warning("%s: reload failed: %s", name, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def model_loader(request: DelegateRequest, threads: int | None):
    """The function the repository loads models with: the same delegate selection and report as `edgert run`."""

    def load(path: Path) -> Model:
        return Model(path, threads=threads, delegate=request)

    return load

