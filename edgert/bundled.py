"""A bundle's entry point (`python3 model.edgert [verify|info|run|bench|check]`): the top of the stack a bundle
carries, an application entry beside `edgert.cli`, which it hands `run` and `bench` to (click is imported only then,
so `verify` needs nothing beyond the standard library); `edgert.deploy.bundle` builds and verifies
bundles and never imports upward."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from edgert.deploy.bundle import Manifest, _unpacked, read_manifest, verify
from edgert.errors import EdgertError


def main(here: str, argv: list[str]) -> None:
    """The bundle's entry point: `verify`, `info [--json]`, `run [edgert run options]`, `bench [edgert bench
    options]`, `check` (a rollout's health check, edgert.measure.health); no command verifies and runs once on seeded
    random inputs."""
    usage = ("usage: python3 BUNDLE [verify | info [--json] | run [OPTIONS] | bench [OPTIONS] | check REFERENCE.npz "
             "[--baseline OLD_BUNDLE] [--runs N]]")
    command, rest = (argv[0], argv[1:]) if argv else ("run", [])
    if command in ("-h", "--help"):
        print(usage)
        return
    try:
        folder = _unpacked(here)
        manifest = verify(folder)
    except EdgertError as exc:
        sys.exit(f"Error: {exc}")
    if command == "verify":
        print(f"ok: {len(manifest.files)} files match the manifest (version {manifest.version})")
        return
    if command == "info":
        data = manifest.to_dict()
        if "--json" in rest:
            print(json.dumps(data, indent=2))
        else:
            print(f"{manifest.name} (version {manifest.version}, edgert {manifest.edgert_version}) for "
                  f"{manifest.device or 'any board'}; delegates {','.join(manifest.delegates)}; "
                  f"needs Python >= {'.'.join(map(str, manifest.python_min))} and {', '.join(manifest.requirements)}")
        return
    if command not in ("run", "bench", "check"):
        sys.exit(f"Error: unknown bundle command {command!r}; {usage}")
    _runtime_here(here, folder, manifest, argv)
    if command == "check":
        _check(folder, manifest, rest)
        return
    from edgert.cli import cli

    args = [command, str(folder / manifest.model)]
    if not any(a == "--delegate" or a.startswith("--delegate=") for a in rest):
        args += ["--delegate", ",".join(manifest.delegates)]
    cli.main(args=args + rest, prog_name=f"{manifest.name} bundle")


def _runtime_here(here: str, folder: Path, manifest: Manifest, argv: list[str]) -> None:
    """Go on in the runtime's Python: a bundle deployed under a root moves to that root's (its venv's, when `setup`
    made one); elsewhere this Python must have the runtime, or the one line names what to install."""
    from edgert.deploy import agent

    root = agent.root_of(folder)
    python = agent.runtime_python(root) if root and not os.environ.get("EDGERT_PYTHON") else sys.executable
    if not agent.same_interpreter(python):
        os.execv(python, [python, here, *argv])
    ok, why = agent.runtime_status(python, load=False)
    if not ok:
        sys.exit(f"Error: {why}, which running the model needs; install the runtime ({python} -m pip install "
                 f"{' '.join(shlex.quote(r) for r in manifest.requirements)}) or deploy with edgert deploy --setup, "
                 "which makes a venv for it")


def _check(folder: Path, manifest: Manifest, argv: list[str]) -> None:
    """`check REFERENCE.npz [--baseline OLD_BUNDLE] [--runs N]`: edgert.measure.health.check, printed as one JSON line."""
    import argparse

    from edgert.measure.health import check

    parser = argparse.ArgumentParser(prog=f"{manifest.name} bundle check")
    parser.add_argument("reference")
    parser.add_argument("--baseline", help="the unpacked bundle of the version this one replaces")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--max-slowdown", type=float, help="fail when slower than this beyond the measured noise")
    args = parser.parse_args(argv)
    baseline = baseline_delegates = None
    if args.baseline:
        old = read_manifest(args.baseline)
        baseline, baseline_delegates = str(Path(args.baseline) / old.model), ",".join(old.delegates)
    try:
        result = check(folder / manifest.model, args.reference, delegate=",".join(manifest.delegates),
                       baseline=baseline, baseline_delegate=baseline_delegates, runs=args.runs,
                       max_slowdown=args.max_slowdown)
    except EdgertError as exc:
        sys.exit(f"Error: {exc}")
    print(json.dumps(result.to_dict()))
