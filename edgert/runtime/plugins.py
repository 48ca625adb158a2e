"""Entry-point plugin registries (delegates, power sensors): lazy discovery once, an env filter, broken entries kept."""

from __future__ import annotations

import importlib
import os
import threading
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

    `builtins` maps edgert's own plugins to their `module:attr`, as pyproject.toml registers them (a test keeps the
    two equal): `get` of a built-in loads just that one, without scanning every installed package's entry points
    (importlib.metadata costs tens of milliseconds at start-up, which a board pays on every command).
    """

    def __init__(self, group: str, env: str, base: type, kind: str, broken: Callable[[str, str], P],
                 error: type[EdgertError], listing: str, extra_names: tuple[str, ...] = (),
                 builtins: dict[str, str] | None = None):
        self.group, self.env, self.base, self.kind = group, env, base, kind
        self._broken, self._error, self._listing, self._extra = broken, error, listing, extra_names
        self._lock = threading.Lock()
        self._plugins: dict[str, P] | None = None
        self.builtins = dict(builtins or {})
        self._early: dict[str, P] = {}  # built-ins loaded by `get` before any full discovery

    def _wanted(self) -> set[str] | None:
        raw = os.environ.get(self.env, "").strip()
        return {n.strip().lower() for n in raw.split(",") if n.strip()} if raw else None

    def _instance(self, value: str, load: Callable[[], object]) -> P:
        obj = load()
        plugin = obj() if isinstance(obj, type) else obj
        if not isinstance(plugin, self.base) or not getattr(plugin, "name", ""):
            raise TypeError(f"{value} is not a named edgert {self.base.__name__}")
        return plugin

    def _discover(self) -> dict[str, P]:
        from importlib.metadata import entry_points

        found: dict[str, P] = {}
        wanted = self._wanted()
        for ep in sorted(entry_points(group=self.group), key=lambda e: e.name):
            if wanted is not None and ep.name.lower() not in wanted:
                continue
            early = self._early.get(ep.name.lower())
            if early is not None and ep.value == self.builtins.get(ep.name.lower()):
                found.setdefault(early.name, early)  # type: ignore[attr-defined]
                continue
            try:
                plugin = self._instance(ep.value, ep.load)
            except Exception as exc:  # a third-party plugin must not break edgert; its error is shown instead
                found[ep.name.lower()] = self._broken(ep.name.lower(), f"{type(exc).__name__}: {exc}")
                continue
            found.setdefault(plugin.name, plugin)  # type: ignore[attr-defined]
        return found

    def _builtin(self, key: str) -> P | None:
        """A built-in plugin loaded on its own (None when it is not one, is filtered out, or fails: then full
        discovery decides, with its error kept)."""
        value = self.builtins.get(key)
        wanted = self._wanted()
        if value is None or (wanted is not None and key not in wanted):
            return None
        with self._lock:
            if key not in self._early:
                module, _, attr = value.partition(":")
                try:
                    self._early[key] = self._instance(value, lambda: getattr(importlib.import_module(module), attr))
                except Exception:
                    return None
            return self._early[key]

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
            self._early.clear()

    def get(self, name: str) -> P:
        """The plugin called `name` (or with that alias); an unknown name raises with the closest known one."""
        key = name.strip().lower()
        if self._plugins is None:
            plugin = self._builtin(key)
            if plugin is not None:
                return plugin
        known = self.plugins()
        if key in known:
            return known[key]
        for plugin in known.values():
            if key in getattr(plugin, "aliases", ()):
                return plugin
        import difflib

        names = sorted({*known, *(a for p in known.values() for a in getattr(p, "aliases", ())), *self._extra})
        close = difflib.get_close_matches(key, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise self._error(f"unknown {self.kind} {name!r}; {hint}known: {', '.join(names)} (see `{self._listing}`)")
