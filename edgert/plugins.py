"""Entry-point plugin registries (delegates, power sensors): lazy discovery once, an env filter, broken entries kept."""

from __future__ import annotations

import difflib
import os
import threading
from importlib.metadata import entry_points
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from edgert.errors import EdgertError

P = TypeVar("P")


@dataclass(frozen=True)
class Probe:
    """Whether a plugin can work on this machine, and if not, why (library missing, no device, wrong OS)."""

    usable: bool
    reason: str = ""
    library: str | None = None  # the native library (or the file, the command) it found or would use

    def to_dict(self) -> dict:
        return {"usable": self.usable, "reason": self.reason, "library": self.library}


class Registry(Generic[P]):
    """Plugins of one kind, registered under an entry point group; the value is a class or an instance.

    `env` (e.g. `EDGERT_DELEGATES=gpu,xnnpack`) restricts which entry points load. A plugin that fails to load is
    kept as `broken(name, error)`, so listings can say why instead of edgert failing.
    """

    def __init__(self, group: str, env: str, base: type, kind: str, broken: Callable[[str, str], P],
                 error: type[EdgertError], listing: str, extra_names: tuple[str, ...] = ()):
        self.group, self.env, self.base, self.kind = group, env, base, kind
        self._broken, self._error, self._listing, self._extra = broken, error, listing, extra_names
        self._lock = threading.Lock()
        self._plugins: dict[str, P] | None = None

    def _wanted(self) -> set[str] | None:
        raw = os.environ.get(self.env, "").strip()
        return {n.strip().lower() for n in raw.split(",") if n.strip()} if raw else None

    def _discover(self) -> dict[str, P]:
        found: dict[str, P] = {}
        wanted = self._wanted()
        for ep in sorted(entry_points(group=self.group), key=lambda e: e.name):
            if wanted is not None and ep.name.lower() not in wanted:
                continue
            try:
                obj = ep.load()
                plugin = obj() if isinstance(obj, type) else obj
                if not isinstance(plugin, self.base) or not getattr(plugin, "name", ""):
                    raise TypeError(f"{ep.value} is not a named edgert {self.base.__name__}")
            except Exception as exc:  # a third-party plugin must not break edgert; its error is shown instead
                found[ep.name.lower()] = self._broken(ep.name.lower(), f"{type(exc).__name__}: {exc}")
                continue
            found.setdefault(plugin.name, plugin)  # type: ignore[attr-defined]
        return found

    def plugins(self) -> dict[str, P]:
        """Every registered plugin by name (discovered on first use)."""
        with self._lock:
            if self._plugins is None:
                self._plugins = self._discover()
            return dict(self._plugins)

    def register(self, plugin: P) -> None:
        """Add a plugin programmatically (tests, applications embedding their own)."""
        self.plugins()
        with self._lock:
            self._plugins[plugin.name] = plugin  # type: ignore[index,attr-defined]

    def unregister(self, name: str) -> None:
        self.plugins()
        with self._lock:
            self._plugins.pop(name, None)  # type: ignore[union-attr]

    def reset(self) -> None:
        """Forget discovered plugins; the next call discovers again (after installing a plugin, or in tests)."""
        with self._lock:
            self._plugins = None

    def get(self, name: str) -> P:
        """The plugin called `name` (or with that alias); an unknown name raises with the closest known one."""
        key = name.strip().lower()
        known = self.plugins()
        if key in known:
            return known[key]
        for plugin in known.values():
            if key in getattr(plugin, "aliases", ()):
                return plugin
        names = sorted({*known, *(a for p in known.values() for a in getattr(p, "aliases", ())), *self._extra})
        close = difflib.get_close_matches(key, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise self._error(f"unknown {self.kind} {name!r}; {hint}known: {', '.join(names)} (see `{self._listing}`)")
