"""The board side of edgert as a module: the Ansible collection's `module_utils/agent.py`, loaded from that file.

There is one implementation of what happens on a board (where the runtime is, installing, verifying, switching and
rolling back a version, the free-space rule, the default root, serving). The collection's modules import it as
module_utils, `edgert deploy` sends it over SSH as a script (`PATH`), and the controller and a bundle on the board
import it from here. It needs only the standard library.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

PATH = (Path(__file__).parent / "collections" / "ansible_collections" / "edgert" / "fleet" / "plugins"
        / "module_utils" / "agent.py")

# This module becomes that file's module (`from edgert.deploy import agent; agent.DEFAULT_ROOT`). Its text is read
# through this package's loader, which also reads it from inside a zip (a bundle run as `python3 model.edgert`).
_module = types.ModuleType(__name__, __doc__)
_module.__file__ = str(PATH)
_module.PATH = PATH
sys.modules[__name__] = _module
exec(compile(__loader__.get_data(str(PATH)), str(PATH), "exec"), _module.__dict__)  # noqa: S102 - our own file
