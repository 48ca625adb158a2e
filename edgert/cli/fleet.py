"""`edgert fleet`: rollouts, status, rollback and Prometheus targets for many boards, through Ansible."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgert.cli._common import echo_json, examples, fail_cleanly, fmt

INVENTORY = click.option("-i", "--inventory", "inventory", required=True, multiple=True, envvar="EDGERT_INVENTORY",
                         metavar="INVENTORY", help="An Ansible inventory (INI, YAML, a folder; repeatable).")
LIMIT = click.option("--limit", "-l", help="Only these boards: Ansible's host pattern (a group, a host, `a:!b`).")
FORKS = click.option("--forks", type=click.IntRange(1, 500), help="Boards Ansible works on at once "
                     "[default: the largest wave, at most 50].")


@click.group(epilog=examples("edgert fleet rollout digits.tflite -i hosts.ini --canary 1 --waves 50%,100%",
                             "edgert fleet status -i hosts.ini",
                             "export ANSIBLE_COLLECTIONS_PATH=$(edgert fleet collection-path)"))
def fleet():
    """Many boards through Ansible: rollout in waves with health gates, status, rollback, Prometheus targets."""


def _percent(text: str, option: str) -> float:
    """`10` or `10%` (a share of a wave, 0 to 100)."""
    try:
        value = float(str(text).strip().rstrip("%"))
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:
        raise click.BadParameter(f"{text!r} is not a percentage from 0 to 100 (e.g. 10 or 10%)", param_hint=option)
    return value


def _short(version: str | None) -> str:
    return version or "-"


def _table(headers: tuple[str, ...], rows: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> None:
    """Columns as wide as their widest cell (names are never cut); the last column is free text."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    for row in (headers, *rows):
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        cells[-1] = str(row[-1])
        click.echo("  " + "  ".join(cells).rstrip())


def _event_printer(echo=click.echo):
    state = {"wave": 0, "header": False}

    def show(event) -> None:
        if event.step == "wave":
            state["wave"] += 1
            echo(f"wave {state['wave']}: {', '.join(event.hosts)}")
            return
        if event.result == "skipped":
            return
        if not state["header"]:
            echo(f"  {'host':<16} {'step':<9} {'result':<12} detail")
            state["header"] = True
        echo(f"  {event.host:<16} {event.step:<9} {event.result:<12} {_detail(event)}")

    return show


def _detail(event) -> str:
    from edgert.fleet.engine import explain

    res = event.res
    if event.result in ("failed", "unreachable"):
        return explain(event)
    if event.step in ("model", "rollback"):
        text = f"{res.get('machine', '?')}: {_short(res.get('before'))} -> {_short(res.get('after'))}"
        check = res.get("check") or {}
        if check:
            cosine = min((o["min_cosine"] for o in check.get("outputs", [])), default=None)
            text += f"; cosine {fmt(cosine, '.4f')}, p50 {fmt(check.get('p50_ms'), '.3f')} ms"
            if check.get("slowdown"):
                text += f" ({check['slowdown']:.2f}x the old"
                if check.get("slowdown_low") is not None:
                    text += f", rounds {check['slowdown_low']:.2f}-{check['slowdown_high']:.2f}x"
                text += ")"
        return text
    return ""


def _report(report) -> None:
    click.echo("")
    _table(("host", "wave", "before", "after", "result", "reason"),
           [(b.host, fmt(b.wave, "d"), _short(b.before), _short(b.after), b.result, b.reason) for b in report.boards],
           right=(1,))
    counts = ", ".join(f"{n} {r}" for r, n in report.counts().items())
    click.echo(f"{len(report.boards)} boards: {counts} ({report.seconds:.1f} s)")
    if report.halted:
        click.echo(f"halted: {report.halted}" + ("; every board this rollout switched was put back"
                                                  if report.rolled_back_all else
                                                  "; each board runs a whole version, shown as after"))


@fleet.command(epilog=examples(
    "edgert fleet rollout digits.tflite -i hosts.ini",
    "edgert fleet rollout digits.tflite -i hosts.ini --canary 2 --waves 25%,100% --max-fail 10 --serve",
    "edgert fleet rollout digits.tflite -i hosts.ini --limit shop --check"))
@click.argument("model", type=click.Path(path_type=Path))
@INVENTORY
@LIMIT
@click.option("--canary", type=click.IntRange(0), default=1, show_default=True, help="Boards in the first wave.")
@click.option("--waves", default="10%,50%,100%", show_default=True,
              help="Then waves up to these shares of the fleet (cumulative).")
@click.option("--max-fail", callback=lambda _c, _p, v: _percent(v, "--max-fail"), default="0%", show_default=True,
              metavar="PCT",
              help="Halt when more than this share of a wave's boards fail (10 or 10%).")
@click.option("--max-slowdown", type=click.FloatRange(1.0), default=1.5, show_default=True,
              help="Fail a board whose p50 is more than this times the version it replaces (on that board).")
@click.option("--runs", type=click.IntRange(2), default=50, show_default=True,
              help="Timed runs of each version in a board's latency check.")
@click.option("--inputs", "reference_inputs", type=click.Path(path_type=Path),
              help="Inputs (.npy/.npz) for the output check [default: 4 seeded random samples].")
@click.option("--setup", is_flag=True, help="Install the runtime on boards that lack it.")
@click.option("--serve", is_flag=True, help="Restart `edgert serve` on each board and check it answers.")
@click.option("--rollback-all", is_flag=True, help="When the rollout halts, put every board it switched back.")
@click.option("--device", envvar="EDGERT_DEVICE", help="Board profile for hosts without edgert_device.")
@click.option("--name", help="Name on the boards [default: the model's file stem].")
@FORKS
@click.option("--check", is_flag=True, help="Say what would change (Ansible's check mode); change nothing.")
@click.option("json_", "--json", is_flag=True, help="Print the report as JSON (no live table).")
@fail_cleanly
def rollout(model, inventory, limit, canary, waves, max_fail, max_slowdown, runs, reference_inputs, setup, serve,
            rollback_all, device, name, forks, check, json_):
    """Roll MODEL out to the inventory's boards in waves; each board is checked before the next wave starts
    (outputs against this host's, p50 against the old version, throttling, the server with --serve), and one that
    fails switches back by itself."""
    from edgert.fleet.rollouts import parse_waves
    from edgert.fleet.rollouts import rollout as run_rollout

    quiet = json_
    show = (lambda _e: None) if quiet else _event_printer()
    report = run_rollout(model, list(inventory), limit=limit, canary=canary, waves=parse_waves(waves),
                         max_fail=max_fail, setup=setup, serve=serve, max_slowdown=max_slowdown, runs=runs,
                         reference_inputs=reference_inputs, device=device, name=name, forks=forks, check=check,
                         rollback_all=rollback_all, on_event=show,
                         on_note=lambda m: click.echo(m, err=True))
    if json_:
        echo_json(report.to_dict(), indent=2)
    else:
        _report(report)
    sys.exit(0 if report.ok else 130 if report.stopped else 1)


@fleet.command(epilog=examples("edgert fleet status -i hosts.ini", "edgert fleet status -i hosts.ini --json"))
@INVENTORY
@LIMIT
@click.option("--model", "names", multiple=True, help="Only this model's versions (repeatable) [default: all].")
@FORKS
@click.option("json_", "--json", is_flag=True, help="Print the rows as JSON.")
@fail_cleanly
def status(inventory, limit, names, forks, json_):
    """One row per board: reachable, arch, device, each model's active and previous version, serving, last p50,
    temperature."""
    from edgert.fleet.survey import status as run_status

    result = run_status(list(inventory), limit=limit, names=tuple(names), forks=forks)
    if json_:
        echo_json(result.to_dict(), indent=2)
        return
    rows = []
    for b in result.boards:
        if b.reason:
            rows.append((b.host, "-", "-", "-", "-", "-", "-", "-", "-", b.reason))
            continue
        for m in b.models or (None,):
            rows.append((b.host, b.arch, b.device or "-", m.name if m else "-", _short(m.active if m else None),
                         _short(m.previous if m else None), "yes" if b.serving else "no",
                         fmt(m.last_p50_ms if m else None, ".3f"), fmt(b.temperature_c, ".1f"), ""))
    _table(("host", "arch", "device", "model", "active", "previous", "serving", "p50 ms", "temp C", ""), rows,
           right=(7, 8))
    reachable = sum(b.reachable for b in result.boards)
    click.echo(f"{reachable} of {len(result.boards)} boards reachable ({result.seconds:.1f} s)")


@fleet.command(epilog=examples("edgert fleet rollback digits -i hosts.ini",
                               "edgert fleet rollback digits.tflite -i hosts.ini --limit shop"))
@click.argument("model")
@INVENTORY
@LIMIT
@click.option("--device", envvar="EDGERT_DEVICE", help="Board profile for hosts without edgert_device (with a "
              ".tflite MODEL, its version per profile).")
@click.option("--name", help="The name MODEL was rolled out under [default: its file stem].")
@FORKS
@click.option("--check", is_flag=True, help="Say what would change; change nothing.")
@click.option("json_", "--json", is_flag=True, help="Print the report as JSON.")
@fail_cleanly
def rollback(model, inventory, limit, device, name, forks, check, json_):
    """Switch every board back to its previous version of MODEL: a name, or the .tflite that was rolled out (then
    only boards running that version switch, so a rerun changes nothing)."""
    from edgert.fleet.rollouts import rollback as run_rollback

    report = run_rollback(model, list(inventory), limit=limit, device=device, name=name, forks=forks, check=check)
    if json_:
        echo_json(report.to_dict(), indent=2)
    else:
        _report(report)
    sys.exit(0 if report.ok else 1)


@fleet.command(epilog=examples("edgert fleet targets -i hosts.ini -o /etc/prometheus/edgert.json"))
@INVENTORY
@LIMIT
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The file_sd JSON file.")
@click.option("--force", is_flag=True, help="Overwrite the file.")
@fail_cleanly
def targets(inventory, limit, output, force):
    """Write Prometheus file_sd_configs JSON for every board's `edgert serve` /metrics (port: edgert_serve_port,
    else 8000)."""
    from edgert.fleet.inventory import write_targets

    written = write_targets(list(inventory), output, limit=limit, force=force)
    click.echo(f"wrote {output}: {len(written)} targets (use it in a file_sd_configs entry of prometheus.yml)")


@fleet.command(epilog=examples("edgert fleet reference digits.tflite",
                               "edgert fleet reference digits.tflite --inputs samples.npz -o digits.ref.npz --force"))
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="The file [default: <model>.reference.npz].")
@click.option("--inputs", type=click.Path(path_type=Path), help="Inputs (.npy/.npz, samples on the first axis) "
              "[default: 4 seeded random samples].")
@click.option("--force", is_flag=True, help="Overwrite the file.")
@fail_cleanly
def reference(model, output, inputs, force):
    """Write MODEL's outputs on reference inputs, run here: what edgert.fleet.model's `reference` checks each board
    against (edgert fleet rollout makes its own)."""
    from edgert.files import check_output_path
    from edgert.measure.health import make_reference

    output = output or model.with_name(model.stem + ".reference.npz")
    check_output_path(output, force=force)
    meta = make_reference(model, output, inputs=inputs)
    click.echo(f"wrote {output}: {meta['samples']} samples; a board agrees within {meta['max_error']:g} of each "
               f"output's range, or two quantization steps ({meta['quantization']})")


@fleet.command("collection-path", epilog=examples("export ANSIBLE_COLLECTIONS_PATH=$(edgert fleet collection-path)"))
def collection_path():
    """Print the folder holding edgert's Ansible collection (edgert.fleet), for ANSIBLE_COLLECTIONS_PATH."""
    from edgert.fleet.inventory import collection_path as path

    click.echo(str(path()))
