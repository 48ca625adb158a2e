"""edgert.fleet.runtime's controller side: `root` defaults to the host's edgert_remote_dir."""

from __future__ import annotations

from ansible_collections.edgert.fleet.plugins.plugin_utils.inventory import RootFromInventory


class ActionModule(RootFromInventory):
    """Runs edgert.fleet.runtime with the host's edgert_remote_dir as its root."""
