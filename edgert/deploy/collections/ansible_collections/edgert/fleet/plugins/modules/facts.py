#!/usr/bin/python
"""edgert.fleet.facts: what an edgert board has (changes nothing)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: facts
short_description: Facts about an edgert board
description:
  - Architecture, Python, whether the edgert runtime imports, each deployed model's active and previous version and
    its last health check, free disk, temperature, thermal throttling, and whether C(edgert serve) runs.
  - Sets C(ansible_facts.edgert). Changes nothing on the board.
options:
  root:
    description: The remote directory models and the runtime live in. Default the host's C(edgert_remote_dir), else
      C(~/edgert) on the board.
    type: str
  names:
    description: The models to report (default every model under I(root)).
    type: list
    elements: str
    default: []
  runtime:
    description: Import the runtime to see that it works (else only look for its packages, which is quicker).
    type: bool
    default: true
author: edgert developers (@edgert)
"""

EXAMPLES = r"""
- name: What the boards run
  edgert.fleet.facts:
- ansible.builtin.debug:
    msg: "{{ ansible_facts.edgert.models.digits.active }}"
"""

RETURN = r"""
ansible_facts:
  description: C(edgert) with machine, python, runtime_ok, models (active, previous, versions, last_check),
    free_bytes, writable, temperature_c, throttled, throttle_reason and serving.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.edgert.fleet.plugins.module_utils.agent import AgentError, cmd_facts  # noqa: E402


def main():
    module = AnsibleModule(argument_spec=dict(root=dict(type="str"),
                                              names=dict(type="list", elements="str", default=[]),
                                              runtime=dict(type="bool", default=True)),
                           supports_check_mode=True)
    try:
        facts = cmd_facts(module.params["root"], *module.params["names"], runtime=module.params["runtime"])
    except AgentError as exc:
        module.fail_json(msg=exc.message, kind=exc.kind)
    module.exit_json(changed=False, ansible_facts=dict(edgert=facts))


if __name__ == "__main__":
    main()
