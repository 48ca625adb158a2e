"""Delegate plugins (XNNPACK, GPU, NNAPI, Edge TPU, external libraries) and their registry.

Plugins, built-ins included, register under the `edgert.delegates` entry point group: the value is a
`DelegatePlugin` subclass (or instance). Discovery is lazy and happens once; `EDGERT_DELEGATES=name,name`
restricts which entry points load. A plugin that fails to import is kept as an unusable entry with its error.
"""

from __future__ import annotations

import difflib
import os
import threading
from importlib.metadata import entry_points

from edgert.delegates.base import Binding, DelegatePlugin, OpVerdict, Platform, Probe, current_platform
from edgert.errors import DelegateError

ENTRY_POINT_GROUP = "edgert.delegates"

_lock = threading.Lock()
_plugins: dict[str, DelegatePlugin] | None = None
_broken: dict[str, str] = {}  # entry point name -> why it could not be loaded


class BrokenPlugin(DelegatePlugin):
    """Stands in for an entry point that failed to load, so `edgert delegates` can say why."""

    def __init__(self, name: str, error: str):
        self.name = name  # type: ignore[misc]
        self.summary = "plugin failed to load"  # type: ignore[misc]
        self._error = error

    def probe(self) -> Probe:
        return Probe(False, f"the plugin failed to load: {self._error}")


def _wanted() -> set[str] | None:
    raw = os.environ.get("EDGERT_DELEGATES", "").strip()
    return {n.strip().lower() for n in raw.split(",") if n.strip()} if raw else None


def _discover() -> dict[str, DelegatePlugin]:
    found: dict[str, DelegatePlugin] = {}
    wanted = _wanted()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if wanted is not None and ep.name.lower() not in wanted:
            continue
        try:
            obj = ep.load()
            plugin = obj() if isinstance(obj, type) else obj
            if not isinstance(plugin, DelegatePlugin) or not plugin.name:
                raise TypeError(f"{ep.value} is not a named edgert DelegatePlugin")
        except Exception as exc:  # a third-party plugin must not break edgert; its error is shown instead
            found[ep.name.lower()] = BrokenPlugin(ep.name.lower(), f"{type(exc).__name__}: {exc}")
            continue
        found.setdefault(plugin.name, plugin)
    return found


def plugins() -> dict[str, DelegatePlugin]:
    """Every registered delegate plugin by name (discovered on first use)."""
    global _plugins
    with _lock:
        if _plugins is None:
            _plugins = _discover()
        return dict(_plugins)


def register(plugin: DelegatePlugin) -> None:
    """Add a plugin programmatically (tests, applications embedding their own delegate)."""
    plugins()
    with _lock:
        _plugins[plugin.name] = plugin  # type: ignore[index]


def unregister(name: str) -> None:
    plugins()
    with _lock:
        _plugins.pop(name, None)  # type: ignore[union-attr]


def reset() -> None:
    """Forget discovered plugins; the next call discovers again (after installing a plugin, or in tests)."""
    global _plugins
    with _lock:
        _plugins = None


def get(name: str) -> DelegatePlugin:
    """The plugin called `name` (or with that alias).

    Raises:
        DelegateError: no such delegate; the message suggests the closest known name.
    """
    key = name.strip().lower()
    known = plugins()
    if key in known:
        return known[key]
    for plugin in known.values():
        if key in plugin.aliases:
            return plugin
    names = sorted({*known, *(a for p in known.values() for a in p.aliases), "auto"})
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise DelegateError(f"unknown delegate {name!r}; {hint}known: {', '.join(names)} (see `edgert delegates`)")


__all__ = [
    "Binding", "BrokenPlugin", "DelegatePlugin", "ENTRY_POINT_GROUP", "OpVerdict", "Platform", "Probe",
    "current_platform", "get", "plugins", "register", "reset", "unregister",
]
