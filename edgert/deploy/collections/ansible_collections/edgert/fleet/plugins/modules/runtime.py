#!/usr/bin/python
"""edgert.fleet.runtime: the edgert runtime's virtual environment on a board."""

from __future__ import annotations

DOCUMENTATION = r"""
module: runtime
short_description: The edgert runtime on a board
description:
  - Makes I(root)/venv with the packages an edgert bundle needs (numpy, click, the interpreter package of the
    board's profile), unless the runtime there already imports. Idempotent; supports check mode.
  - A 32-bit ARM board is refused before pip runs, since ai-edge-litert has no wheel for it.
options:
  root:
    description: The remote directory models and the runtime live in. Default the host's C(edgert_remote_dir), else
      C(~/edgert) on the board.
    type: str
  requirements:
    description: The packages, as the bundle's manifest lists them.
    type: list
    elements: str
    required: true
  index_url:
    description: An extra package index (a board profile's).
    type: str
    default: ""
author: edgert developers (@edgert)
"""

EXAMPLES = r"""
- name: The runtime, where it is missing
  edgert.fleet.runtime:
    requirements: [numpy>=1.23, click>=8.1, ai-edge-litert>=2.3]
"""

RETURN = r"""
installed:
  description: Whether packages were installed.
  returned: success
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.edgert.fleet.plugins.module_utils.agent import (  # noqa: E402
    AgentError, cmd_setup, paths, runtime_python, runtime_status, serve_requested)


def main():
    module = AnsibleModule(argument_spec=dict(root=dict(type="str"),
                                              requirements=dict(type="list", elements="str", required=True),
                                              index_url=dict(type="str", default="")),
                           supports_check_mode=True)
    p = module.params
    if module.check_mode:
        root = paths(p["root"], "_")[0]
        ok = runtime_status(runtime_python(root), serve_requested(p["requirements"]))[0]
        module.exit_json(changed=not ok, installed=False)
    try:
        result = cmd_setup(p["root"], p["index_url"] or "-", *p["requirements"])
    except AgentError as exc:
        module.fail_json(msg=exc.message, kind=exc.kind)
    module.exit_json(changed=bool(result["installed"]), **result)


if __name__ == "__main__":
    main()
