"""`edgert bench` and `edgert sensors`."""

from __future__ import annotations

from pathlib import Path

import click

from edgert.cli._common import echo_json, examples, fail_cleanly, fmt, load_model
from edgert.cli.images import picture_options


def _bench_rows(results) -> list[dict]:
    anchor = results[0]
    rows = []
    for r in results:
        e = r.energy
        rows.append({
            "model": r.model, "delegate": r.delegate, "init_ms": r.init_ms,
            "first_inference_ms": r.first_inference_ms, "runs": r.latency.count, "min_ms": r.latency.min_ms,
            "mean_ms": r.latency.mean_ms, "std_ms": r.latency.std_ms, "p50_ms": r.latency.p50_ms,
            "p90_ms": r.latency.p90_ms, "p99_ms": r.latency.p99_ms, "max_ms": r.latency.max_ms,
            "throughput_ips": r.throughput_ips, "model_mb": r.memory.model_mb,
            "model_peak_mb": r.memory.model_peak_mb, "peak_rss_mb": r.memory.peak_rss_mb,
            "ratio_p50": r.ratio_to(anchor),
            "idle_power_mw": e.idle_power_mw if e else None, "avg_power_mw": e.avg_power_mw if e else None,
            "peak_power_mw": e.peak_power_mw if e else None,
            "energy_per_inference_mj": e.energy_per_inference_mj if e else None,
            "gross_energy_per_inference_mj": e.gross_energy_per_inference_mj if e else None,
            "inferences_per_joule": e.inferences_per_joule if e else None,
            "sensor": e.sensor if e else None,
            "target_fps": r.rate.target_fps if r.rate else None,
            "missed_deadlines": r.rate.missed_deadlines if r.rate else None,
            "dropped_frames": r.rate.dropped_frames if r.rate else None,
            "throttled": r.thermal_stats.throttled if r.thermal_stats.measured else None,
            "interrupted": r.interrupted,
        })
    return rows


def _print_bench(results) -> None:
    m = results[0].machine
    click.echo(f"machine  {m.cpu}" + (f" on {m.board}" if m.board else "")
               + f", {m.cores_available}/{m.cores} cores, {m.platform}, governor {m.governor or '-'}"
               + (f", {m.cpu_freq_mhz:.0f} MHz" if m.cpu_freq_mhz else "")
               + f"; {m.backend}, edgert {m.edgert}, Python {m.python}")
    if m.emulated:
        click.echo(f"emulated: timings are not the board's ({m.emulated})")
    first = results[0]
    click.echo(f"inputs   {first.inputs}; {first.warmup_runs} warm-up run(s); threads {m.threads or 'default'}")
    rows = _bench_rows(results)
    width = max(12, *(len(Path(r["model"]).name) for r in rows))
    dwidth = max(9, *(len(r["delegate"]) for r in rows))
    click.echo("")
    click.echo(f"{'model':<{width}} {'delegate':<{dwidth}} {'init ms':>8} {'first ms':>8} {'runs':>6} {'p50 ms':>8} "
               f"{'p90 ms':>8} {'p99 ms':>8} {'mean±std ms':>14} {'inf/s':>8} {'model MiB':>9} {'mW':>7} "
               f"{'mJ/inf':>8} {'p50 ratio':>9}")
    for r in rows:
        click.echo(f"{Path(r['model']).name:<{width}} {r['delegate']:<{dwidth}} {fmt(r['init_ms'], '.1f'):>8} "
                   f"{r['first_inference_ms']:>8.2f} {r['runs']:>6} {r['p50_ms']:>8.3f} {r['p90_ms']:>8.3f} "
                   f"{r['p99_ms']:>8.3f} {r['mean_ms']:>7.3f}±{r['std_ms']:<6.3f} {r['throughput_ips']:>8.1f} "
                   f"{r['model_peak_mb']:>9.1f} {fmt(r['avg_power_mw'], '.0f'):>7} "
                   f"{fmt(r['energy_per_inference_mj'], '.3f'):>8} {r['ratio_p50']:>9.3f}")
    click.echo("")
    for r in results:
        click.echo(f"{r.label}")
        click.echo(f"  delegation  {r.delegation.describe()}")
        if r.rate:
            click.echo(f"  rate        target {r.rate.target_fps:g} fps, achieved {r.rate.achieved_fps:.2f}; "
                       f"{r.rate.missed_deadlines}/{r.rate.frames} deadlines missed, "
                       f"{r.rate.dropped_frames} frame(s) dropped")
        e = r.energy
        if e:
            rails = ", ".join(f"{k} {v:.0f} mW" for k, v in e.rail_avg_power_mw.items())
            ipj = e.inferences_per_joule
            click.echo(f"  power       {e.sensor}, {e.sample_hz:.0f} Hz: idle {fmt(e.idle_power_mw, '.0f')} mW, "
                       f"run {e.avg_power_mw:.0f} mW avg, {e.peak_power_mw:.0f} mW peak"
                       + (f"; {rails}" if rails else ""))
            click.echo(f"  energy      {fmt(e.energy_per_inference_mj, '.4f')} mJ/inference above idle "
                       f"({fmt(e.gross_energy_per_inference_mj, '.4f')} mJ gross), "
                       + (f"{ipj:.1f} inferences/J" if ipj else "no energy above idle measured"))
        if r.power_note:
            click.echo(f"  power note  {r.power_note}")
        t = r.thermal_stats
        if t.measured and (t.temps_c or t.freq_start_mhz):
            temps = ", ".join(f"{z} {a:.1f}->{c:.1f} C (max {b:.1f})" for z, (a, b, c) in t.temps_c.items())
            freq = (f"CPU {t.freq_start_mhz:.0f}->{t.freq_end_mhz:.0f} MHz (min {t.freq_min_mhz:.0f})"
                    if t.freq_start_mhz else "")
            click.echo("  thermal     " + "; ".join(x for x in (temps, freq) if x)
                       + (f"  THROTTLED: {t.reason}" if t.throttled else ""))
        mem = r.memory
        click.echo(f"  memory      model {mem.model_mb:.1f} MiB loaded, {mem.model_peak_mb:.1f} MiB at peak (process "
                   f"{mem.rss_before_load_mb:.1f} MiB before the load, {mem.peak_rss_mb:.1f} at peak; edgert's timing "
                   f"buffers, {mem.buffers_mb:.1f} MiB, not counted)"
                   + ("; measured in a process of its own" if mem.isolated else
                      "; in this process, after the rows before it")
                   + ("" if mem.peak_since_load else "; process peak: the kernel did not allow a reset"))
        if r.interrupted:
            click.echo("  interrupted: the figures cover the runs finished before Ctrl-C")


def _csv(results) -> str:
    import csv
    import io

    rows = _bench_rows(results)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def _bench_pictures(models, images, task, labels, mean, std, bgr, layout, conf, iou, top_k, delegate_choices,
                    delegate_lib, delegate_options, strict, threads, warmup, runs, duration, rate, input_path, csv_,
                    plot_path, power, power_cmd, power_rail, power_hz, idle_seconds, json_):
    from edgert.cli import images as pictures

    unsupported = [name for name, given in (("--input", input_path), ("--duration", duration), ("--rate", rate),
                                            ("--csv", csv_), ("--plot", plot_path)) if given]
    if unsupported or len(models) > 1 or len(delegate_choices) > 1:
        what = ", ".join(unsupported) or "several models or delegates"
        raise click.UsageError(f"--image times one model on one delegate per picture; {what} is for tensor runs")
    m = load_model(models[0], threads, delegate_choices[0] if delegate_choices else None, delegate_lib,
                   delegate_options, strict)
    pipe = pictures.pipeline(models[0], task, labels, mean, std, bgr, layout, conf, iou, top_k, m)
    pictures.bench_pictures(pipe, images, runs, warmup, power, power_cmd, power_rail, power_hz, idle_seconds, json_)


@click.command(epilog=examples(
    "edgert bench float.tflite int8.tflite --delegate xnnpack --delegate gpu",
    'edgert bench model.tflite --rate 30 --duration 60 --power-cmd "python meter.py" --plot bench.png',
    "edgert bench yolo.tflite --image street.jpg --json"))
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@picture_options
@click.option("--delegate", "delegate_choices", multiple=True, metavar="NAME[,NAME...]", envvar="EDGERT_DELEGATE",
              help="Delegates in priority order; repeat to compare several side by side [default: xnnpack].")
@click.option("--delegate-lib", type=click.Path(path_type=Path), metavar="PATH",
              help="A TFLite external delegate library (implies --delegate external).")
@click.option("--delegate-option", "delegate_options", multiple=True, metavar="KEY=VALUE",
              help="Delegate option (repeatable); NAME.KEY=VALUE targets one delegate.")
@click.option("--strict", is_flag=True, help="Fail instead of falling back, or when any operator stays on the CPU.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: the backend's].")
@click.option("--warmup", type=int, default=5, show_default=True, help="Untimed runs first.")
@click.option("--runs", type=int, default=None, help="Timed runs (at least, with --duration) [default: 50, and 1 s].")
@click.option("--duration", type=float, default=None, help="Time for at least this many seconds.")
@click.option("--rate", type=float, default=None, metavar="FPS", help="Fixed rate: start runs FPS times a second.")
@click.option("-i", "--input", "input_path", type=click.Path(path_type=Path),
              help="Inputs: .npy (one input) or .npz (one array per input name) [default: seeded random].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--power", default="auto", show_default=True, envvar="EDGERT_POWER", metavar="auto|none|NAME[,NAME]",
              help="Power sensor(s) to use; see `edgert sensors`.")
@click.option("--power-cmd", metavar="CMD", help="An external meter command that prints watts (one per line).")
@click.option("--power-rail", metavar="NAME", help="The rail that is the total (INA3221) [default: VDD_IN or sum].")
@click.option("--power-hz", type=float, default=100.0, show_default=True, help="Power sampling rate.")
@click.option("--idle-seconds", type=float, default=2.0, show_default=True,
              help="Idle power measured first and subtracted (when a sensor is found).")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), help="Draw latency and power to .png/.svg/.pdf.")
@click.option("--isolate/--no-isolate", default=None,
              help="Measure each row in a fresh process, so its memory figures are its own [default: when more "
                   "than one model or delegate].")
@click.option("--force", is_flag=True, help="Overwrite --plot if it exists.")
@click.option("json_", "--json", is_flag=True, help="Print the results as JSON.")
@click.option("csv_", "--csv", is_flag=True, help="Print the results as CSV, one row per model and delegate.")
@fail_cleanly
def bench(models, images, task, labels, mean, std, bgr, layout, conf, iou, top_k, delegate_choices, delegate_lib,
          delegate_options, strict, threads, warmup, runs, duration, rate, input_path, seed, power, power_cmd,
          power_rail, power_hz, idle_seconds, plot_path, isolate, force, json_, csv_):
    """Benchmark models: latency percentiles, memory, temperature, and energy per inference from power sensors;
    with --image, per picture: pre-processing, inference and post-processing apart."""
    from edgert.measure.bench import bench as run_bench

    if images:
        _bench_pictures(models, images, task, labels, mean, std, bgr, layout, conf, iou, top_k, delegate_choices,
                        delegate_lib, delegate_options, strict, threads, warmup, runs, duration, rate, input_path,
                        csv_, plot_path, power, power_cmd, power_rail, power_hz, idle_seconds, json_)
        return

    if json_ and csv_:
        raise click.UsageError("--json and --csv conflict: choose one")
    if plot_path is not None:
        from edgert.measure.plot import check_plot_path

        check_plot_path(plot_path, force)
    choices = delegate_choices or (None,)
    if isolate is None:
        isolate = len(models) * len(choices) > 1
    quiet = json_ or csv_
    results, interrupted = [], False
    for model in models:
        for choice in choices:
            try:
                result = run_bench(
                    model, threads=threads, delegate=choice, delegate_options=delegate_options,
                    delegate_lib=str(delegate_lib) if delegate_lib else None, strict=strict, warmup=warmup,
                    runs=runs, duration_s=duration, rate_fps=rate, inputs=input_path, seed=seed, power=power,
                    power_cmd=power_cmd, power_options={"rail": power_rail} if power_rail else None,
                    power_hz=power_hz, idle_s=idle_seconds, isolate=isolate,
                    progress=None if quiet else lambda line, m=model: click.echo(f"{m.name}: {line}", err=True))
            except KeyboardInterrupt:
                interrupted = True
                break
            results.append(result)
            if result.interrupted:
                interrupted = True
                break
        if interrupted:
            break
    if not results:
        click.echo("interrupted before any timed run finished; nothing to report", err=True)
        raise click.exceptions.Exit(130)
    if json_:
        echo_json({"results": [r.to_dict() for r in results],
                   "ratios_p50": [r.ratio_to(results[0]) for r in results]}, indent=2)
    elif csv_:
        click.echo(_csv(results), nl=False)
    else:
        _print_bench(results)
    if plot_path is not None:
        from edgert.measure.plot import plot_results

        plot_results(results, plot_path, force)
        if not quiet:
            click.echo(f"plot written to {plot_path}")
    if interrupted:
        click.echo("interrupted: the results above cover what finished", err=True)
        raise click.exceptions.Exit(130)
    failed = [f"{r.label}: {r.power_error}" for r in results if r.power_error]
    if failed:
        raise click.ClickException("power measurement failed (latency reported above): " + "; ".join(failed))


@click.command(epilog=examples(
    "edgert sensors",
    "edgert sensors --json",
    "EDGERT_SYSFS_ROOT=/mnt/board edgert sensors"))
@click.option("json_", "--json", is_flag=True, help="Print the list as JSON.")
@fail_cleanly
def sensors(json_):
    """List the power sensor plugins, whether each finds a meter here, and why not."""
    from edgert.devices import sensors as registry
    from edgert.devices.machine import thermal_zones

    rows = []
    for name, plugin in sorted(registry.plugins().items(), key=lambda kv: (kv[1].priority, kv[0])):
        probe = plugin.probe()
        rows.append({"name": name, "aliases": list(plugin.aliases), "usable": probe.usable, "reason": probe.reason,
                     "found": probe.library, "auto": plugin.auto, "summary": plugin.summary,
                     "module": type(plugin).__module__})
    zones = thermal_zones()
    if json_:
        echo_json({"power_sensors": rows, "thermal_zones": list(zones)}, indent=2)
        return
    for r in rows:
        state = "found" if r["usable"] else "absent"
        click.echo(f"  {r['name']:<9} {state:<7} {r['summary']}" + ("" if r["auto"] else " (only when asked for)"))
        detail = r["found"] if r["usable"] else r["reason"]
        if detail:
            click.echo(f"  {'':<9} {'':<7} {detail}")
    click.echo("thermal zones: " + (", ".join(zones) or "none"))
