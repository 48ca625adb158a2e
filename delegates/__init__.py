"""Delegate plugins (XNNPACK, GPU, NNAPI, Edge TPU, external libraries) and their registry.

Plugins, built-ins included, register under the `edgert.delegates` entry point group: the value is a
`DelegatePlugin` subclass (or instance). Discovery is lazy and happens once; `EDGERT_DELEGATES=name,name`
restricts which entry points load. A plugin that fails to import is kept as an unusable entry with its error.
"""

from __future__ import annotations

from edgert.delegates.base import Binding, DelegatePlugin, OpVerdict, Platform, Probe, current_platform
from edgert.errors import DelegateError
from edgert.runtime.plugins import Registry

ENTRY_POINT_GROUP = "edgert.delegates"
# What pyproject.toml registers for the built-ins (tests/test_delegates.py keeps the two equal).
BUILTINS = {
    "xnnpack": "edgert.delegates.xnnpack:XnnpackDelegate",
    "gpu": "edgert.delegates.gpu:GpuDelegate",
    "nnapi": "edgert.delegates.nnapi:NnapiDelegate",
    "edgetpu": "edgert.delegates.edgetpu:EdgeTpuDelegate",
    "external": "edgert.delegates.external:ExternalDelegate",
}


class BrokenPlugin(DelegatePlugin):
    """Stands in for an entry point that failed to load, so `edgert delegates` can say why."""

    def __init__(self, name: str, error: str):
        self.name = name  # type: ignore[misc]
        self.summary = "plugin failed to load"  # type: ignore[misc]
        self._error = error

    def probe(self) -> Probe:
        return Probe(False, f"the plugin failed to load: {self._error}")


_registry: Registry[DelegatePlugin] = Registry(
    ENTRY_POINT_GROUP, "EDGERT_DELEGATES", DelegatePlugin, "delegate", BrokenPlugin, DelegateError,
    "edgert delegates", extra_names=("auto",), builtins=BUILTINS)

plugins = _registry.plugins
register = _registry.register
unregister = _registry.unregister
reset = _registry.reset
get = _registry.get


__all__ = [
    "Binding", "BrokenPlugin", "DelegatePlugin", "ENTRY_POINT_GROUP", "OpVerdict", "Platform", "Probe",
    "current_platform", "get", "plugins", "register", "reset", "unregister",
]
