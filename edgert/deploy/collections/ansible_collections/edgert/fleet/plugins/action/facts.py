"""edgert.fleet.facts's controller side: `root` defaults to the host's edgert_remote_dir."""

from __future__ import annotations

from ansible_collections.edgert.fleet.plugins.action.model import RootFromInventory as ActionModule  # noqa: F401
