"""Ansible inventories as edgert reads them (through `ansible-inventory`, so every format and plugin Ansible reads
works), the environment edgert runs Ansible in, and Prometheus targets for a fleet's servers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edgert.errors import FleetError

DEFAULT_SERVE_PORT = 8000
INSTALL_HINT = "pip install 'edgert[fleet]' (ansible-core and ansible-runner)"


@dataclass(frozen=True)
class Host:
    """One board of an inventory: its inventory name, its groups and its variables."""

    name: str
    groups: tuple[str, ...] = ()
    vars: dict = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.vars.get("ansible_host") or self.name)

    @property
    def device(self) -> str | None:
        return self.vars.get("edgert_device") or None

    @property
    def remote_dir(self) -> str:
        from edgert.deploy import agent

        return str(self.vars.get("edgert_remote_dir") or agent.DEFAULT_ROOT)

    @property
    def interpreter(self) -> str | None:
        """The board's Python for edgert as the inventory gives it (edgert_python, else ansible_python_interpreter),
        or None where Ansible discovers one."""
        return self.vars.get("edgert_python") or self.vars.get("ansible_python_interpreter") or None

    @property
    def serve_port(self) -> int:
        return int(self.vars.get("edgert_serve_port") or DEFAULT_SERVE_PORT)


def collection_path() -> Path:
    """The folder to put on ANSIBLE_COLLECTIONS_PATH for the edgert.fleet collection."""
    from edgert.deploy import COLLECTIONS

    return COLLECTIONS


def ansible_bin(name: str) -> str:
    """An Ansible command beside this Python (a venv need not be activated), else on PATH.

    Raises:
        FleetError: Ansible is not installed.
    """
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise FleetError(f"{name} is not installed here; {INSTALL_HINT}")
    return found


def ansible_env() -> dict[str, str]:
    """The environment edgert runs Ansible in: the user's, plus edgert's collection on the collections path,
    pipelining (one SSH round trip per module) unless the user chose, and no colour or retry files."""
    env = dict(os.environ)
    ours = str(collection_path())
    env["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join(
        [ours] + [p for p in env.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) if p and p != ours]
        + ["~/.ansible/collections", "/usr/share/ansible/collections"])
    env.setdefault("ANSIBLE_PIPELINING", "True")
    # Ansible's own default less -C: what a rollout sends is zips (bundles, AnsiballZ payloads), which compression
    # only costs CPU on both ends for. Each board keeps one control connection for the whole rollout.
    env.setdefault("ANSIBLE_SSH_ARGS", "-o ControlMaster=auto -o ControlPersist=60s")
    env.setdefault("ANSIBLE_RETRY_FILES_ENABLED", "False")
    env.setdefault("ANSIBLE_NOCOLOR", "1")
    env.setdefault("ANSIBLE_PYTHON_INTERPRETER", "auto_silent")
    env.setdefault("ANSIBLE_DEPRECATION_WARNINGS", "False")
    env["PYTHONWARNINGS"] = "ignore"  # cryptography's DSA notice on every Ansible start, on the user's screen
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def read_inventory(inventory: str | os.PathLike | list, limit: str | None = None) -> list[Host]:
    """The hosts of an inventory (INI, YAML, a folder, a script: whatever Ansible reads), in inventory order, with
    their variables (group_vars and host_vars included), after `limit` (Ansible's pattern grammar).

    Raises:
        FleetError: Ansible missing, the inventory missing or unreadable, or no host left.
    """
    sources = [str(s) for s in (inventory if isinstance(inventory, (list, tuple)) else [inventory])]
    for source in sources:
        if "," not in source and not Path(source).expanduser().exists():
            raise FleetError(f"the inventory {source} does not exist; give an Ansible inventory file (INI or YAML) "
                             "with -i")
    argv = [ansible_bin("ansible-inventory"), "--list"] + [a for s in sources for a in ("-i", s)]
    if limit:
        argv += ["--limit", limit]
    env = dict(ansible_env(), ANSIBLE_INVENTORY_UNPARSED_FAILED="True", ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="True")
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line[:12]]
        why = next((line for line in lines if line.startswith("[ERROR]") or line.startswith("ERROR")), None)
        why = (why or (lines[-1] if lines else f"exit status {done.returncode}")).split(":", 1)[-1].strip()
        raise FleetError(f"Ansible cannot read the inventory {', '.join(sources)}: {why}")
    data = json.loads(done.stdout)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    groups: dict[str, list[str]] = {}
    order: list[str] = []

    def walk(group: str, seen: tuple[str, ...] = ()) -> None:
        entry = data.get(group, {})
        for host in entry.get("hosts", []):
            if host not in order:
                order.append(host)
            for g in seen + (group,):
                if g not in ("all", "ungrouped") and g not in groups.setdefault(host, []):
                    groups[host].append(g)
        for child in entry.get("children", []):
            walk(child, seen + (group,))

    walk("all")
    if not order:
        raise FleetError(f"no hosts in {', '.join(sources)}" + (f" match --limit {limit!r}" if limit else "")
                         + "; list the boards under a group, e.g. [boards] then one host per line")
    return [Host(h, tuple(groups.get(h, ())), dict(hostvars.get(h, {}))) for h in order]


def prometheus_targets(hosts: list[Host]) -> list[dict]:
    """Prometheus `file_sd_configs` entries for every board's `edgert serve` (`/metrics` on its serve port)."""
    return [{"targets": [f"{h.address}:{h.serve_port}"],
             "labels": {"job": "edgert", "edgert_host": h.name, "edgert_device": h.device or "",
                        "edgert_groups": ",".join(h.groups)}}
            for h in hosts]


def write_targets(inventory: str | os.PathLike | list, output: str | os.PathLike, *, limit: str | None = None,
                  force: bool = False) -> list[dict]:
    """Write the Prometheus targets of an inventory's boards to `output`, atomically.

    Raises:
        OutputExistsError: `output` exists and `force` is false.
        FleetError: the inventory cannot be read.
    """
    from edgert.files import atomic_path, check_output_path

    check_output_path(output, force=force)
    targets = prometheus_targets(read_inventory(inventory, limit))
    with atomic_path(Path(output)) as tmp:
        tmp.write_text(json.dumps(targets, indent=2) + "\n")
    return targets


def sources(inventory) -> list[str]:
    """Inventory sources as Ansible is given them: absolute paths (ansible-runner runs it in a folder of its own),
    host lists (`a,b,`) as they are."""
    return [str(Path(s).expanduser().resolve()) if "," not in str(s) else str(s)
            for s in (inventory if isinstance(inventory, (list, tuple)) else [inventory])]


def write_host_vars(work: Path, host_vars: dict[str, dict], stem: str = "edgert-hosts") -> Path:
    """An inventory source with edgert's per-board variables, read after the user's (it adds to their hosts).
    JSON is YAML: the `.yml` name has Ansible's yaml plugin read it."""
    path = work / f"{stem}.yml"
    path.write_text(json.dumps({"all": {"hosts": host_vars}}))
    return path
