"""`edgert devices`, `bundle` and `deploy`: boards."""

from __future__ import annotations

import os
from pathlib import Path

import click

import edgert
from edgert.cli._common import echo_json, examples, fail_cleanly, fmt, kib


@click.group(invoke_without_command=True, epilog=examples(
    "edgert devices", "edgert devices show rpi5", "edgert devices detect --json"))
@click.option("json_", "--json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
@fail_cleanly
def devices(ctx, json_):
    """Board profiles: list them (the default), `show NAME`, or `detect` this board."""
    if ctx.invoked_subcommand is not None:
        return
    from edgert.devices import profiles

    found, broken = profiles.all_profiles()
    if json_:
        echo_json({"profiles": [p.to_dict() for p in found.values()],
                   "broken": [vars(b) for b in broken.values()],
                   "user_dirs": [str(d) for d in profiles.user_dirs()]}, indent=2)
        return
    for p in sorted(found.values(), key=lambda p: p.name):
        origin = "" if p.builtin else f"  (yours: {p.source})"
        click.echo(f"  {p.name:<20} {p.title:<34} {'/'.join(p.arch):<15} {','.join(p.delegates)}{origin}")
    for b in broken.values():
        click.echo(f"  {b.name:<20} broken: {b.error}")
    click.echo(f"your own profiles go in {os.pathsep.join(str(d) for d in profiles.user_dirs())} "
               "(`edgert devices show rpi5` for the format)")


@devices.command("show", epilog=examples("edgert devices show rpi5", "edgert devices show coral-usb --json"))
@click.argument("name")
@click.option("json_", "--json", is_flag=True, help="Print the profile as JSON.")
@fail_cleanly
def devices_show(name, json_):
    """Show one board profile."""
    from edgert.devices import profiles

    p = profiles.get(name)
    if json_:
        echo_json(p.to_dict(), indent=2)
        return
    memory = "/".join(f"{m:g}" for m in p.memory_gb)
    click.echo(f"{p.name}: {p.title}")
    rows = [("file", p.source), ("arch", ", ".join(p.arch)), ("cpu", p.cpu or "-"),
            ("cores", str(p.cores or "-")), ("memory", f"{memory} GB" if memory else "-"),
            ("deploy", p.deploy), ("delegates", ", ".join(p.delegates) + "  (--delegate auto, in this order)"),
            ("power", ", ".join(p.power_sensors) or "-"), ("thermal", ", ".join(p.thermal_zones) or "-"),
            ("idle power", f"{p.idle_power_w:g} W ({p.idle_power_source})" if p.idle_power_w else "not given"),
            ("runtime", p.runtime.package + (f" (Python {p.runtime.python})" if p.runtime.python else "")
             + (f", numpy{p.runtime.numpy}" if p.runtime.numpy else "")
             + (f", from {p.runtime.index_url}" if p.runtime.index_url else "")),
            ("system", ", ".join(p.runtime.system_packages) or "-"), ("notes", p.runtime.notes or "-")]
    detect = p.detect
    rules = ([f"device-tree model contains {m!r}" for m in detect.model] + [f"USB {u}" for u in detect.usb]
             + (["Android properties"] if detect.android else []) + [f"machine {m}" for m in detect.machine])
    rows.append(("detected by", "; ".join(rules) or "never (pass --device)"))
    for key, value in rows:
        click.echo(f"  {key:<12} {value}")


@devices.command("detect", epilog=examples("edgert devices detect",
                                           "EDGERT_SYSFS_ROOT=/mnt/pi edgert devices detect --json"))
@click.option("json_", "--json", is_flag=True, help="Print the detection as JSON.")
@fail_cleanly
def devices_detect(json_):
    """Say which board this is, which accelerators are attached, and why."""
    from edgert.devices.detect import detect

    found = detect()
    if json_:
        echo_json(found.to_dict(), indent=2)
        return
    p = found.profile
    click.echo(f"board: {p.title} ({p.name})" if p else "board: unknown (no profile matches; pass --device NAME)")
    for a in found.accelerators:
        if a is not p:
            click.echo(f"accelerator: {a.title} ({a.name})")
    for line in found.evidence:
        click.echo(f"  because {line}")
    click.echo(f"--delegate auto tries: {', '.join(found.delegates) or 'the built-in order'}")


@click.command(epilog=examples(
    "edgert bundle model.tflite --device rpi5",
    "edgert bundle model.tflite -o app.edgert --force",
    "python3 model.edgert verify"))
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--device", envvar="EDGERT_DEVICE", help="Board profile (`edgert devices`): its delegate order and "
              "runtime go in the manifest [default: the board decides, --delegate auto].")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Bundle path [default: <stem>.edgert].")
@click.option("--name", help="Name on the board [default: the model's file stem].")
@click.option("--force", is_flag=True, help="Overwrite the bundle if it exists.")
@click.option("json_", "--json", is_flag=True, help="Print the manifest as JSON.")
@fail_cleanly
def bundle(model, device, output, name, force, json_):
    """Pack a model, its recipe and report, a checksummed manifest and edgert's runtime into one runnable file
    (`python3 model.edgert` runs it)."""
    from edgert.deploy.bundle import make_bundle

    made = make_bundle(model, device, output, name=name, force=force)
    if json_:
        echo_json({"path": made.path, "size_bytes": made.size_bytes, "sha256": made.sha256,
                   "manifest": made.manifest.to_dict()}, indent=2)
        return
    m = made.manifest
    click.echo(f"wrote {made.path} ({kib(made.size_bytes)}, {len(m.files)} files, version {m.version})")
    click.echo(f"  for {m.device or 'any board'}: delegates {','.join(m.delegates)}; needs Python >= "
               f"{'.'.join(map(str, m.python_min))} and {', '.join(m.requirements)}")
    from edgert.files import shown

    click.echo(f"  run it: python3 {shown(made.path)} [verify|info|run|bench]")


def _compare_rows(local: dict, board: dict) -> list[tuple[str, str, str]]:
    def get(d, *keys):
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d

    rows = []
    for label, keys, spec in (("delegate", ("delegation", "used"), "s"), ("p50 ms", ("latency", "p50_ms"), ".3f"),
                              ("p90 ms", ("latency", "p90_ms"), ".3f"), ("mean ms", ("latency", "mean_ms"), ".3f"),
                              ("inferences/s", ("throughput_ips",), ".1f"),
                              ("peak RSS MiB", ("memory", "peak_rss_mb"), ".1f"),
                              ("mJ/inference", ("energy", "energy_per_inference_mj"), ".3f"),
                              ("cpu", ("machine", "cpu"), "s"), ("backend", ("machine", "backend"), "s")):
        rows.append((label, fmt(get(local, *keys), spec), fmt(get(board, *keys), spec)))
    p50_local, p50_board = get(local, "latency", "p50_ms"), get(board, "latency", "p50_ms")
    if p50_local and p50_board:
        rows.append(("board/local p50", "1.00", f"{p50_board / p50_local:.2f}"))
    return rows


@click.command(epilog=examples(
    "edgert deploy model.tflite --to pi@raspberrypi.local --device rpi5 --setup",
    "edgert deploy model.tflite --to mypi --bench --runs 200 --serve",
    "edgert deploy model.tflite --to mypi --rollback"))
@click.argument("model", type=click.Path(path_type=Path), required=False)
@click.option("--to", "to", required=True, envvar="EDGERT_DEPLOY_TO", metavar="[USER@]HOST[:PORT]",
              help="The board; HOST may be an alias from your SSH config.")
@click.option("--device", envvar="EDGERT_DEVICE", help="Board profile (`edgert devices`) [default: the board "
              "decides, --delegate auto].")
@click.option("--remote-dir", envvar="EDGERT_REMOTE_DIR", help="Where models and the runtime live on the board "
              "[env EDGERT_REMOTE_DIR; default ~/edgert there].")
@click.option("--name", help="Name on the board [default: the model's file stem].")
@click.option("--setup", is_flag=True, help="Install the runtime in REMOTE_DIR/venv when the board lacks it.")
@click.option("--bench", "bench_", is_flag=True, help="Run `edgert bench --json` on the board afterwards and show "
              "it next to this machine's figures.")
@click.option("--runs", type=click.IntRange(min=1), default=None, help="With --bench: timed runs (both sides).")
@click.option("--rollback", is_flag=True, help="Make the previous version active again instead of deploying.")
@click.option("--ssh-config", type=click.Path(dir_okay=False, path_type=Path), envvar="EDGERT_SSH_CONFIG",
              help="SSH client configuration [default: ~/.ssh/config, as ssh reads it].")
@click.option("--ssh-option", "ssh_options", multiple=True, metavar="KEY=VALUE",
              help="Extra ssh -o option, repeatable (e.g. --ssh-option ProxyJump=gateway).")
@click.option("--remote-python", envvar="EDGERT_REMOTE_PYTHON", default="python3", show_default=True,
              help="Python on the board that runs edgert's side of the deploy [env EDGERT_REMOTE_PYTHON].")
@click.option("--serve", "serve_", is_flag=True, help="(Re)start `edgert serve` on the board's models afterwards "
              "(a systemd unit, or a background process without systemd); with --setup, installs its packages.")
@click.option("--serve-host", default="127.0.0.1", show_default=True, help="With --serve: the address it listens on.")
@click.option("--serve-port", type=click.IntRange(1, 65535), default=8000, show_default=True,
              help="With --serve: its port.")
@click.option("--serve-option", "serve_options", multiple=True, metavar="OPTION",
              help="With --serve: one more `edgert serve` option, repeatable (e.g. --serve-option=--max-batch=8).")
@click.option("--stop-serving", is_flag=True, help="Stop the board's `edgert serve` instead of deploying.")
@click.option("json_", "--json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def deploy(model, to, device, remote_dir, name, setup, bench_, runs, rollback, ssh_config, ssh_options,
           remote_python, serve_, serve_host, serve_port, serve_options, stop_serving, json_):
    """Deploy a model to a board over SSH: upload, verify the checksums there, switch atomically (the previous
    version is kept for --rollback); --setup installs the runtime, --bench measures it there."""
    from edgert import deploy as deployer
    from edgert.deploy.bundle import bundle_name

    ssh = dict(ssh_config=str(ssh_config) if ssh_config else None, ssh_options=tuple(ssh_options),
               remote_python=remote_python)
    if stop_serving:
        stopped = deployer.stop_serving(to, remote_dir=remote_dir, **ssh)
        if json_:
            echo_json({"stopped": stopped})
        else:
            click.echo(f"{to}: edgert serve " + ("stopped" if stopped else "was not running"))
        return
    if rollback:
        if model is None and not name:
            raise click.UsageError("--rollback needs the model (for its name) or --name")
        done = deployer.rollback(to, name or bundle_name(model), remote_dir=remote_dir, **ssh)
        if json_:
            echo_json(done.to_dict(), indent=2)
        else:
            click.echo(f"{done.target}: {done.name} rolled back to version {done.version} (was {done.replaced}); "
                       f"active at {done.remote_path}")
        return
    if model is None:
        raise click.UsageError("give the model to deploy (or --rollback)")
    bench_args = None
    if bench_:
        bench_args = ("--runs", str(runs)) if runs else ()
    steps: list[str] = []

    def progress(message: str) -> None:
        steps.append(message)
        if not json_:
            click.echo(message, err=True)

    try:
        serve = deployer.ServeOptions(serve_host, serve_port, options=tuple(serve_options)) if serve_ else None
        done = deployer.deploy(str(model), to, device, remote_dir=remote_dir, name=name, setup=setup,
                               bench_args=bench_args, serve=serve, progress=progress, **ssh)
    except KeyboardInterrupt:
        last = steps[-1] if steps else "before connecting"
        after_switch = last.startswith("benchmarking")
        click.echo(f"interrupted ({last}): " + ("the new version is active; the benchmark did not finish"
                                                if after_switch else "the board's active model is unchanged"),
                   err=True)
        raise click.exceptions.Exit(130) from None
    local = None
    if bench_:
        progress("benchmarking here for comparison")
        delegates = deployer.board_delegates(device)  # the same order the bundle uses on the board
        local = edgert.bench(str(model), delegate=delegates, runs=runs or 50).to_dict()
    if json_:
        data = done.to_dict()
        data["local_bench"] = local
        echo_json(data, indent=2, default=str)
        return
    what = "already active" if not done.switched else f"active (previous: {done.previous or 'none'})"
    click.echo(f"{done.target}: {done.name} version {done.version} {what} at {done.remote_path} "
               f"({kib(done.bundle_bytes)}, {done.seconds:.1f} s)")
    if done.setup_installed:
        click.echo(f"  runtime installed in {done.board.root}/venv")
    elif done.setup_installed is False:
        click.echo(f"  runtime already there for {done.board.runtime_python}")
    if done.serving:
        click.echo(f"  serving {done.serving['url']} on the board: {done.serving['how']}; log: {done.serving['log']}")
    if done.bench is not None:
        click.echo(f"  {'':<16} {'this machine':<24} {'board':<24}")
        for label, here, there in _compare_rows(local or {}, done.bench):
            click.echo(f"  {label:<16} {here[:24]:<24} {there[:24]:<24}")
        emulated = (done.bench.get("machine") or {}).get("emulated")
        if emulated:
            click.echo(f"  emulated: timings are not the board's ({emulated})")
