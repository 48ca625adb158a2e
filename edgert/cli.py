"""The `edgert` command: a thin layer over the library that only parses options and formats results."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

import edgert
from edgert.errors import EdgertError, InputDataError


def _fail_cleanly(f):
    """Turn library errors into one-line `Error: ...` messages with a non-zero exit code."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except EdgertError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _version_message() -> str:
    try:
        backend = str(edgert.backend.get_backend())
    except EdgertError as exc:
        backend = f"none ({exc})"
    return f"edgert {edgert.__version__} (interpreter backend: {backend}, Python {sys.version.split()[0]})"


def _print_version(ctx, _param, value):
    if value and not ctx.resilient_parsing:
        click.echo(_version_message())
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Show the version and the interpreter backend, then exit.")
def cli():
    """edgert: convert Keras models to TFLite and run them on edge devices."""


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def _spec_rows(specs) -> list[str]:
    rows = [f"  {'#':>2}  {'name':<34} {'shape':<18} {'dtype':<8} quantization"]
    for i, s in enumerate(specs):
        rows.append(f"  {i:>2}  {s.name:<34} {str(s.shape):<18} {s.dtype:<8} {s.describe_quantization()}")
    return rows


# -- convert --------------------------------------------------------------------------------------------------


def _parse_range(_ctx, _param, value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LOW,HIGH (e.g. 0,1 or -1,1)") from None
    if not low < high:
        raise click.BadParameter(f"LOW must be below HIGH, got {value}")
    return low, high


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Output .tflite path [default: <stem>.tflite, <stem>_int8.tflite, ... beside the model].")
@click.option("--int8", is_flag=True, help="Full-integer int8 (calibrated); weights only without any data.")
@click.option("--dynamic", is_flag=True, help="Dynamic range: int8 weights, float activations.")
@click.option("--float16", is_flag=True, help="float16 weights.")
@click.option("--int16x8", is_flag=True, help="int16 activations, int8 weights (calibrated).")
@click.option("--edgetpu", is_flag=True, help="Full int8 for the Edge TPU, then edgetpu_compiler if on PATH.")
@click.option("--calibration-data", type=click.Path(path_type=Path),
              help="Representative inputs: .npy, .npz (x or one array per input) or a folder of images.")
@click.option("--calibration-samples", type=int, default=200, show_default=True,
              help="Use at most this many calibration samples.")
@click.option("--float-io", is_flag=True, help="Full-integer model with float32 inputs and outputs.")
@click.option("--prune", type=float, metavar="SPARSITY", help="Magnitude pruning to this sparsity, in (0, 1).")
@click.option("--prune-schedule", type=click.Choice(["polynomial", "constant"]),
              help="Pruning schedule while fine-tuning [default: polynomial].")
@click.option("--prune-structure", metavar="M:N", help="M-by-N structured sparsity, e.g. 2:4.")
@click.option("--prune-policy", type=click.Choice(["xnnpack"]), help="Prune only what XNNPack runs sparse.")
@click.option("--cluster", type=int, metavar="N", help="Weight clustering into N centroids per layer.")
@click.option("--distill-from", type=click.Path(path_type=Path), help="Teacher model for knowledge distillation.")
@click.option("--distill-temperature", type=float, default=4.0, show_default=True)
@click.option("--distill-alpha", type=float, default=0.1, show_default=True,
              help="Weight of the hard-label loss (the rest matches the teacher).")
@click.option("--qat", is_flag=True, help="Quantization-aware training (int8).")
@click.option("--train-data", type=click.Path(path_type=Path), help="Fine-tuning data: .npz (x, y) or class folders.")
@click.option("--val-data", type=click.Path(path_type=Path), help="Validation data while fine-tuning.")
@click.option("--eval-data", type=click.Path(path_type=Path),
              help="Measure accuracy of the original and of the final .tflite (through the edgert runtime).")
@click.option("--epochs", type=int, help="Fine-tuning epochs [default: per stage].")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--learning-rate", type=float, help="Fine-tuning learning rate [default: per stage].")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Seed of every training stage, with deterministic "
              "ops: the same recipe, data and seed give the same .tflite [default: 0, or the --recipe's].")
@click.option("--recipe", "recipe_path", type=click.Path(path_type=Path), help="Run a saved recipe JSON.")
@click.option("--preset", help="Run a named recipe: " + ", ".join(
    ["float32", "dynamic", "float16", "int8", "int16x8", "edgetpu", "prune50_int8", "prune75_int8",
     "prune50_2of4_int8", "qat_int8", "prune75_qat_int8", "cluster16_int8", "prune50_cluster16_qat_int8"]) + ".")
@click.option("--image-range", callback=_parse_range, metavar="LOW,HIGH",
              help="Value range image folders are scaled to (0,1 / -1,1 / 0,255) [default: the range the model "
                   "states with a leading Rescaling or Normalization layer].")
@click.option("--force-range", is_flag=True,
              help="Accept calibration data whose range disagrees with the training/eval data or the model's.")
@click.option("--custom-objects", type=click.Path(path_type=Path), metavar="FILE.py",
              help="A Python file defining (and registering) the model's own layers.")
@click.option("--trust-model", is_flag=True,
              help="Allow layers that run Python code stored in the model (Lambda); only for files you trust.")
@click.option("--force", is_flag=True, help="Overwrite the output (and its .recipe.json/.report.json).")
@click.option("json_", "--json", is_flag=True, help="Print the result as JSON.")
@_fail_cleanly
def convert(model, output, calibration_data, train_data, val_data, eval_data, recipe_path, preset, image_range,
            force_range, custom_objects, trust_model, seed, force, json_, **options):
    """Convert a Keras model (.h5, .keras) or SavedModel directory to TFLite, optionally pruning, clustering,
    distilling and training for quantization on the way."""
    from edgert.converters import ConvertRecipe, RecipeError, recipe_from_options  # TensorFlow loads later
    from edgert.converters import convert as convert_model
    from edgert.converters import preset as named_preset

    given = {k: v for k, v in options.items() if v not in (None, False) and
             not (k, v) in {("calibration_samples", 200), ("batch_size", 32), ("distill_temperature", 4.0),
                            ("distill_alpha", 0.1)}}
    if recipe_path and preset:
        raise RecipeError("--recipe and --preset conflict: choose one")
    if (recipe_path or preset) and given:
        raise RecipeError(f"--{'recipe' if recipe_path else 'preset'} already sets the options; drop "
                          + ", ".join("--" + k.replace("_", "-") for k in sorted(given)))
    if recipe_path:
        recipe = ConvertRecipe.load(recipe_path)
    elif preset:
        recipe = named_preset(preset)
    else:
        recipe = recipe_from_options(**options)
    if seed is not None:
        import dataclasses

        recipe = dataclasses.replace(recipe, seed=seed)
    from edgert.converters import ConversionInterrupted

    try:
        result = convert_model(model, output, recipe=recipe, calibration_data=calibration_data,
                               train_data=train_data, val_data=val_data, eval_data=eval_data,
                               image_range=image_range, force=force, custom_objects=custom_objects,
                               trust_model=trust_model, force_range=force_range)
    except ConversionInterrupted as stopped:
        click.echo(stopped.describe(), err=True)
        raise click.exceptions.Exit(130) from None
    if json_:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(f"wrote {result.output_path}")
    click.echo(f"  from        {result.source_format}")
    click.echo(f"  recipe      {result.recipe.name}  ({result.recipe_path})")
    click.echo(f"  mode        {result.mode.value}"
               + (f" (calibrated on {result.calibration_samples} samples)" if result.calibration_samples else ""))
    click.echo(f"  size        {_kib(result.source_size_bytes)} -> {_kib(result.output_size_bytes)} "
               f"({result.size_ratio:.1f}x smaller; {_kib(result.output_gzip_bytes)} gzipped)")
    if result.accuracy_tflite is not None:
        src = "-" if result.accuracy_source is None else f"{result.accuracy_source:.2%}"
        drop = "" if result.accuracy_drop is None else f", drop {result.accuracy_drop:+.2f} points"
        click.echo(f"  accuracy    {src} -> {result.accuracy_tflite:.2%} on {result.eval_samples} samples{drop}")
    if result.agreement is not None:
        click.echo(f"  agreement   {result.agreement.describe()}")
    click.echo(f"  time        {result.duration_s:.1f} s")
    if len(result.stages) > 1:
        click.echo("stages")
        click.echo(f"  {'stage':<10} {'params':>8} {'size':>11} {'gzip':>11} {'sparsity':>9} {'clusters':>9} "
                   f"{'float layers':>13} {'time':>7}")
        for st in result.stages:
            sparsity = max(st.sparsity.values(), default=0.0)
            clusters = min(st.clusters.values(), default=0)
            click.echo(f"  {st.stage:<10} {st.params:>8} {_kib(st.size_bytes):>11} {_kib(st.gzip_bytes):>11} "
                       f"{sparsity:>9.2f} {clusters or '-':>9} {len(st.float_layers) or '-':>13} "
                       f"{st.seconds:>6.1f}s")
    click.echo("inputs")
    click.echo("\n".join(_spec_rows(result.inputs)))
    click.echo("outputs")
    click.echo("\n".join(_spec_rows(result.outputs)))
    for note in result.notes:
        click.echo(f"note: {note}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)


# -- delegates ------------------------------------------------------------------------------------------------


def _delegate_options(f):
    """The options every command that loads a model shares: --delegate, --delegate-lib, --delegate-option, --strict."""
    f = click.option("--strict", is_flag=True,
                     help="Fail instead of falling back, or when any operator would stay on the CPU.")(f)
    f = click.option("--delegate-option", "delegate_options", multiple=True, metavar="KEY=VALUE",
                     help="Delegate option (repeatable); NAME.KEY=VALUE targets one delegate.")(f)
    f = click.option("--delegate-lib", type=click.Path(path_type=Path), metavar="PATH",
                     help="A TFLite external delegate library (implies --delegate external).")(f)
    f = click.option("--delegate", envvar="EDGERT_DELEGATE", metavar="NAME[,NAME...]",
                     help="Delegates in priority order: xnnpack (default), gpu, nnapi, edgetpu[:usb:0], external, "
                          "or auto.")(f)
    return f


def _load(model, threads, delegate, delegate_lib, delegate_options, strict) -> edgert.Model:
    return edgert.load(model, threads=threads, delegate=delegate, delegate_options=delegate_options,
                       delegate_lib=str(delegate_lib) if delegate_lib else None, strict=strict)


@cli.command()
@click.option("json_", "--json", is_flag=True, help="Print the list as JSON.")
@_fail_cleanly
def delegates(json_):
    """List the delegate plugins, whether each is usable here, and why not."""
    from edgert import delegates as registry
    from edgert.delegates.base import current_platform

    rows = []
    for name, plugin in sorted(registry.plugins().items()):
        probe = plugin.usable_here()
        rows.append({"name": name, "aliases": list(plugin.aliases), "usable": probe.usable, "reason": probe.reason,
                     "library": probe.library, "platforms": list(plugin.platforms), "summary": plugin.summary,
                     "options": dict(plugin.options),
                     "module": type(plugin).__module__})
    if json_:
        click.echo(json.dumps({"platform": str(current_platform()), "delegates": rows}, indent=2))
        return
    click.echo(f"platform {current_platform()}")
    for r in rows:
        state = "usable" if r["usable"] else "unusable"
        click.echo(f"  {r['name']:<10} {state:<9} {r['summary']}")
        if r["reason"]:
            click.echo(f"  {'':<10} {'':<9} {r['reason']}")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--delegate", "delegate_names", default="all", show_default=True, metavar="NAME[,NAME...]",
              help="Delegates to check: xnnpack, gpu, nnapi, edgetpu, or all.")
@click.option("--strict", is_flag=True, help="Exit 1 if any operator would fall back to the CPU.")
@click.option("json_", "--json", is_flag=True, help="Print the verdicts as JSON.")
@_fail_cleanly
def check(model, delegate_names, strict, json_):
    """Pre-flight: which operators each delegate will accept, read from the model file alone (no hardware)."""
    from edgert.delegation import check as check_model

    results = check_model(model, delegate_names)
    if json_:
        click.echo(json.dumps({"model": str(model), "delegates": [r.to_dict() for r in results]}, indent=2))
    else:
        for r in results:
            click.echo(f"{r.delegate}: {r.accepted}/{len(r.verdicts)} operators accepted"
                       + ("" if r.clean else ", the rest stay on the CPU" if not r.note else ""))
            if r.note:
                click.echo(f"  note: {r.note}")
            for v in r.rejected:
                click.echo(f"  {v.label:<24} {v.reason}")
            click.echo(f"  (table: {r.source})")
    if strict and not all(r.clean for r in results):
        raise click.exceptions.Exit(1)


# -- inspect --------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("json_", "--json", is_flag=True, help="Print the description as JSON.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: the backend's].")
@_delegate_options
@_fail_cleanly
def inspect(model, json_, threads, delegate, delegate_lib, delegate_options, strict):
    """Describe a .tflite model: inputs, outputs, quantization, operators, custom ops, delegation."""
    info = edgert.inspect_model(model)
    backend = str(edgert.backend.get_backend())
    try:
        delegation = _load(model, threads, delegate, delegate_lib, delegate_options, strict).delegation
        delegation_text, delegation_dict = delegation.describe(), delegation.to_dict()
    except edgert.UnsupportedOperatorError as exc:  # still worth describing: the file itself is fine
        if strict:
            raise
        delegation_text, delegation_dict = f"not loadable here: {exc}", None
    if json_:
        click.echo(json.dumps({**info.to_dict(), "backend": backend, "delegation": delegation_dict}, indent=2))
        return
    click.echo(f"model         {info.path}")
    click.echo(f"size          {_kib(info.size_bytes)} ({info.size_bytes} bytes)")
    click.echo(f"quantization  {info.quantization}")
    click.echo(f"structure     schema v{info.schema_version}, {info.subgraph_count} subgraph(s), "
               f"{info.tensor_count} tensors, {info.operator_count} operators")
    click.echo(f"backend       {backend}")
    if info.metadata:
        click.echo(f"metadata      {', '.join(info.metadata)}")
    click.echo("inputs")
    click.echo("\n".join(_spec_rows(info.inputs)))
    click.echo("outputs")
    click.echo("\n".join(_spec_rows(info.outputs)))
    click.echo("operators")
    for name, count in info.operators:
        click.echo(f"  {name:<28} {count:>4}")
    click.echo("custom operators: " + (", ".join(info.custom_operators) or "none"))
    click.echo(f"delegation    {delegation_text}")


# -- run ------------------------------------------------------------------------------------------------------


def _load_inputs(path: Path, model: edgert.Model):
    from edgert.arrays import load_arrays, match_inputs

    return match_inputs(load_arrays(path), [s.name for s in model.inputs], path)


def _summary(name: str, a: np.ndarray) -> str:
    text = f"{name}: shape {a.shape} {a.dtype}"
    if a.size and a.dtype.kind in "fiub":
        text += f"  min {a.min():.4g} max {a.max():.4g} mean {a.mean():.4g}"
    if a.ndim == 2 and a.shape[1] > 1:
        top = a.argmax(axis=1)[:10].tolist()
        text += f"\n  argmax per row: {top}" + (" ..." if a.shape[0] > 10 else "")
    elif a.size <= 16:
        text += f"\n  values: {np.array2string(a.ravel(), precision=4, separator=', ')}"
    return text


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-i", "--input", "input_path", type=click.Path(path_type=Path),
              help="Input data: .npy (one input) or .npz (one array per input name) [default: seeded random inputs "
                   "in the model's dtypes, a smoke test].")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Save outputs: .npy (single output) or .npz (one array per output name).")
@click.option("--raw", is_flag=True, help="Return quantized outputs as stored, not dequantized to float.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: the backend's].")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.option("json_", "--json", is_flag=True, help="Print outputs as JSON.")
@_delegate_options
@_fail_cleanly
def run(model, input_path, output, raw, threads, force, json_, delegate, delegate_lib, delegate_options, strict):
    """Run a .tflite model on inputs from a file (or, without --input, on seeded random inputs)."""
    from edgert.arrays import save_arrays
    from edgert.files import check_output_path

    if output is not None:
        check_output_path(output, force=force)
        if output.suffix not in (".npy", ".npz"):
            raise InputDataError(f"--output {output}: use a .npy or .npz path")
    m = _load(model, threads, delegate, delegate_lib, delegate_options, strict)
    if input_path is None:
        from edgert.arrays import random_inputs

        inputs = random_inputs(m.inputs)
    else:
        inputs = _load_inputs(input_path, m)
    started = time.perf_counter_ns()
    outputs = m.run(inputs, raw=raw)
    latency_ms = (time.perf_counter_ns() - started) / 1e6
    names = [s.name for s in m.outputs]
    if output is not None:
        if output.suffix == ".npy" and len(outputs) != 1:
            raise InputDataError(f"the model has {len(outputs)} outputs; save them to an .npz, not {output}")
        save_arrays(output, dict(zip(names, outputs)))
    if json_:
        click.echo(json.dumps({
            "model": str(model), "backend": str(m.backend), "latency_ms": round(latency_ms, 3),
            "inputs": str(input_path) if input_path else "seeded random",
            "delegation": m.delegation.to_dict(),
            "outputs": {n: {"shape": list(o.shape), "dtype": o.dtype.name, "values": o.tolist()}
                        for n, o in zip(names, outputs)},
            "saved_to": str(output) if output else None}, indent=2))
        return
    for n, o in zip(names, outputs):
        click.echo(_summary(n, o))
    click.echo(f"ran in {latency_ms:.2f} ms on {m.backend}" + ("" if input_path else " (seeded random inputs)")
               + (f"; saved to {output}" if output else ""))
    click.echo(f"delegation: {m.delegation.describe()}")


# -- bench ----------------------------------------------------------------------------------------------------


def _fmt(value, spec: str = ".2f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


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
            "throughput_ips": r.throughput_ips, "peak_rss_mb": r.memory.peak_rss_mb,
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
            "throttled": r.thermal_stats.throttled if r.thermal_stats else None,
            "interrupted": r.interrupted,
        })
    return rows


def _print_bench(results) -> None:
    m = results[0].machine
    click.echo(f"machine  {m.cpu}" + (f" on {m.board}" if m.board else "")
               + f", {m.cores_available}/{m.cores} cores, {m.platform}, governor {m.governor or '-'}"
               + (f", {m.cpu_freq_mhz:.0f} MHz" if m.cpu_freq_mhz else "")
               + f"; {m.backend}, edgert {m.edgert}, Python {m.python}")
    first = results[0]
    click.echo(f"inputs   {first.inputs}; {first.warmup_runs} warm-up run(s); threads {m.threads or 'default'}")
    rows = _bench_rows(results)
    width = max(12, *(len(Path(r["model"]).name) for r in rows))
    dwidth = max(9, *(len(r["delegate"]) for r in rows))
    click.echo("")
    click.echo(f"{'model':<{width}} {'delegate':<{dwidth}} {'init ms':>8} {'first ms':>8} {'runs':>6} {'p50 ms':>8} "
               f"{'p90 ms':>8} {'p99 ms':>8} {'mean±std ms':>14} {'inf/s':>8} {'peak MiB':>8} {'mW':>7} "
               f"{'mJ/inf':>8} {'p50 ratio':>9}")
    for r in rows:
        click.echo(f"{Path(r['model']).name:<{width}} {r['delegate']:<{dwidth}} {_fmt(r['init_ms'], '.1f'):>8} "
                   f"{r['first_inference_ms']:>8.2f} {r['runs']:>6} {r['p50_ms']:>8.3f} {r['p90_ms']:>8.3f} "
                   f"{r['p99_ms']:>8.3f} {r['mean_ms']:>7.3f}±{r['std_ms']:<6.3f} {r['throughput_ips']:>8.1f} "
                   f"{r['peak_rss_mb']:>8.1f} {_fmt(r['avg_power_mw'], '.0f'):>7} "
                   f"{_fmt(r['energy_per_inference_mj'], '.3f'):>8} {r['ratio_p50']:>9.3f}")
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
            click.echo(f"  power       {e.sensor}, {e.sample_hz:.0f} Hz: idle {_fmt(e.idle_power_mw, '.0f')} mW, "
                       f"run {e.avg_power_mw:.0f} mW avg, {e.peak_power_mw:.0f} mW peak"
                       + (f"; {rails}" if rails else ""))
            click.echo(f"  energy      {e.energy_per_inference_mj:.4f} mJ/inference above idle "
                       f"({e.gross_energy_per_inference_mj:.4f} mJ gross), "
                       + (f"{ipj:.1f} inferences/J" if ipj else "no energy above idle measured"))
        if r.power_note:
            click.echo(f"  power note  {r.power_note}")
        t = r.thermal_stats
        if t and (t.temps_c or t.freq_start_mhz):
            temps = ", ".join(f"{z} {a:.1f}->{c:.1f} C (max {b:.1f})" for z, (a, b, c) in t.temps_c.items())
            freq = (f"CPU {t.freq_start_mhz:.0f}->{t.freq_end_mhz:.0f} MHz (min {t.freq_min_mhz:.0f})"
                    if t.freq_start_mhz else "")
            click.echo("  thermal     " + "; ".join(x for x in (temps, freq) if x)
                       + (f"  THROTTLED: {t.reason}" if t.throttled else ""))
        click.echo(f"  memory      RSS {r.memory.rss_before_load_mb:.1f} MiB before load, "
                   f"{r.memory.rss_after_load_mb:.1f} after, peak {r.memory.peak_rss_mb:.1f}"
                   + ("" if r.memory.peak_since_load else " (process peak: the kernel did not allow a reset)"))
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


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--delegate", "delegate_choices", multiple=True, metavar="NAME[,NAME...]", envvar="EDGERT_DELEGATE",
              help="Delegates in priority order; repeat to compare several side by side [default: xnnpack].")
@click.option("--delegate-lib", type=click.Path(path_type=Path), metavar="PATH",
              help="A TFLite external delegate library (implies --delegate external).")
@click.option("--delegate-option", "delegate_options", multiple=True, metavar="KEY=VALUE",
              help="Delegate option (repeatable); NAME.KEY=VALUE targets one delegate.")
@click.option("--strict", is_flag=True, help="Fail instead of falling back, or when any operator stays on the CPU.")
@click.option("--threads", type=int, default=None, help="CPU threads [default: the runtime's].")
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
@click.option("--force", is_flag=True, help="Overwrite --plot if it exists.")
@click.option("json_", "--json", is_flag=True, help="Print the results as JSON.")
@click.option("csv_", "--csv", is_flag=True, help="Print the results as CSV, one row per model and delegate.")
@_fail_cleanly
def bench(models, delegate_choices, delegate_lib, delegate_options, strict, threads, warmup, runs, duration, rate,
          input_path, seed, power, power_cmd, power_rail, power_hz, idle_seconds, plot_path, force, json_, csv_):
    """Benchmark models: latency percentiles, memory, temperature, and energy per inference from power sensors."""
    from edgert.benchmark import bench as run_bench

    if json_ and csv_:
        raise click.UsageError("--json and --csv conflict: choose one")
    if threads is not None and threads < 1:
        raise InputDataError(f"--threads must be at least 1, got {threads}")
    if plot_path is not None:
        from edgert.plot import check_plot_path

        check_plot_path(plot_path, force)
    choices = delegate_choices or (None,)
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
                    power_hz=power_hz, idle_s=idle_seconds,
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
        click.echo(json.dumps({"results": [r.to_dict() for r in results],
                               "ratios_p50": [r.ratio_to(results[0]) for r in results]}, indent=2))
    elif csv_:
        click.echo(_csv(results), nl=False)
    else:
        _print_bench(results)
    if plot_path is not None:
        from edgert.plot import plot_results

        plot_results(results, plot_path, force)
        if not quiet:
            click.echo(f"plot written to {plot_path}")
    if interrupted:
        click.echo("interrupted: the results above cover what finished", err=True)
        raise click.exceptions.Exit(130)
    failed = [f"{r.label}: {r.power_error}" for r in results if r.power_error]
    if failed:
        raise click.ClickException("power measurement failed (latency reported above): " + "; ".join(failed))


@cli.command()
@click.option("json_", "--json", is_flag=True, help="Print the list as JSON.")
@_fail_cleanly
def sensors(json_):
    """List the power sensor plugins, whether each finds a meter here, and why not."""
    from edgert.devices import power as registry
    from edgert.devices.machine import thermal_zones

    rows = []
    for name, plugin in sorted(registry.plugins().items(), key=lambda kv: (kv[1].priority, kv[0])):
        probe = plugin.probe()
        rows.append({"name": name, "aliases": list(plugin.aliases), "usable": probe.usable, "reason": probe.reason,
                     "found": probe.library, "auto": plugin.auto, "summary": plugin.summary,
                     "module": type(plugin).__module__})
    zones = thermal_zones()
    if json_:
        click.echo(json.dumps({"power_sensors": rows, "thermal_zones": list(zones)}, indent=2))
        return
    for r in rows:
        state = "found" if r["usable"] else "absent"
        click.echo(f"  {r['name']:<9} {state:<7} {r['summary']}" + ("" if r["auto"] else " (only when asked for)"))
        detail = r["found"] if r["usable"] else r["reason"]
        if detail:
            click.echo(f"  {'':<9} {'':<7} {detail}")
    click.echo("thermal zones: " + (", ".join(zones) or "none"))


# -- devices, bundle, deploy -----------------------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@click.option("json_", "--json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
@_fail_cleanly
def devices(ctx, json_):
    """Board profiles: list them (the default), `show NAME`, or `detect` this board."""
    if ctx.invoked_subcommand is not None:
        return
    from edgert.devices import profiles

    found, broken = profiles.all_profiles()
    if json_:
        click.echo(json.dumps({"profiles": [p.to_dict() for p in found.values()],
                               "broken": [vars(b) for b in broken.values()],
                               "user_dirs": [str(d) for d in profiles.user_dirs()]}, indent=2))
        return
    for p in sorted(found.values(), key=lambda p: p.name):
        origin = "" if p.builtin else f"  (yours: {p.source})"
        click.echo(f"  {p.name:<20} {p.title:<34} {'/'.join(p.arch):<15} {','.join(p.delegates)}{origin}")
    for b in broken.values():
        click.echo(f"  {b.name:<20} broken: {b.error}")
    click.echo(f"your own profiles go in {os.pathsep.join(str(d) for d in profiles.user_dirs())} "
               "(`edgert devices show rpi5` for the format)")


@devices.command("show")
@click.argument("name")
@click.option("json_", "--json", is_flag=True, help="Print the profile as JSON.")
@_fail_cleanly
def devices_show(name, json_):
    """Show one board profile."""
    from edgert.devices import profiles

    p = profiles.get(name)
    if json_:
        click.echo(json.dumps(p.to_dict(), indent=2))
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


@devices.command("detect")
@click.option("json_", "--json", is_flag=True, help="Print the detection as JSON.")
@_fail_cleanly
def devices_detect(json_):
    """Say which board this is, which accelerators are attached, and why."""
    from edgert.devices.detect import detect

    found = detect()
    if json_:
        click.echo(json.dumps(found.to_dict(), indent=2))
        return
    p = found.profile
    click.echo(f"board: {p.title} ({p.name})" if p else "board: unknown (no profile matches; pass --device NAME)")
    for a in found.accelerators:
        if a is not p:
            click.echo(f"accelerator: {a.title} ({a.name})")
    for line in found.evidence:
        click.echo(f"  because {line}")
    click.echo(f"--delegate auto tries: {', '.join(found.delegates) or 'the built-in order'}")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--device", envvar="EDGERT_DEVICE", help="Board profile (`edgert devices`): its delegate order and "
              "runtime go in the manifest [default: the board decides, --delegate auto].")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Bundle path [default: <stem>.edgert].")
@click.option("--name", help="Name on the board [default: the model's file stem].")
@click.option("--force", is_flag=True, help="Overwrite the bundle if it exists.")
@click.option("json_", "--json", is_flag=True, help="Print the manifest as JSON.")
@_fail_cleanly
def bundle(model, device, output, name, force, json_):
    """Pack a model, its recipe and report, a checksummed manifest and edgert's runtime into one runnable file
    (`python3 model.edgert` runs it)."""
    from edgert.bundle import make_bundle

    made = make_bundle(model, device, output, name=name, force=force)
    if json_:
        click.echo(json.dumps({"path": made.path, "size_bytes": made.size_bytes, "sha256": made.sha256,
                               "manifest": made.manifest.to_dict()}, indent=2))
        return
    m = made.manifest
    click.echo(f"wrote {made.path} ({_kib(made.size_bytes)}, {len(m.files)} files, version {m.version})")
    click.echo(f"  for {m.device or 'any board'}: delegates {','.join(m.delegates)}; needs Python >= "
               f"{'.'.join(map(str, m.python_min))} and {', '.join(m.requirements)}")
    click.echo(f"  run it: python3 {made.path} [verify|info|run|bench]")


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
        rows.append((label, _fmt(get(local, *keys), spec), _fmt(get(board, *keys), spec)))
    p50_local, p50_board = get(local, "latency", "p50_ms"), get(board, "latency", "p50_ms")
    if p50_local and p50_board:
        rows.append(("board/local p50", "1.00", f"{p50_board / p50_local:.2f}"))
    return rows


@cli.command()
@click.argument("model", type=click.Path(path_type=Path), required=False)
@click.option("--to", "to", required=True, envvar="EDGERT_DEPLOY_TO", metavar="[USER@]HOST[:PORT]",
              help="The board; HOST may be an alias from your SSH config.")
@click.option("--device", envvar="EDGERT_DEVICE", help="Board profile (`edgert devices`) [default: the board "
              "decides, --delegate auto].")
@click.option("--remote-dir", default="~/edgert", show_default=True, help="Where models and the runtime live on "
              "the board.")
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
@click.option("--remote-python", default="python3", show_default=True,
              help="Python on the board that runs edgert's side of the deploy.")
@click.option("json_", "--json", is_flag=True, help="Print the result as JSON.")
@_fail_cleanly
def deploy(model, to, device, remote_dir, name, setup, bench_, runs, rollback, ssh_config, ssh_options,
           remote_python, json_):
    """Deploy a model to a board over SSH: upload, verify the checksums there, switch atomically (the previous
    version is kept for --rollback); --setup installs the runtime, --bench measures it there."""
    from edgert import deploy as deployer
    from edgert.bundle import bundle_name

    ssh = dict(ssh_config=str(ssh_config) if ssh_config else None, ssh_options=tuple(ssh_options),
               remote_python=remote_python)
    if rollback:
        if model is None and not name:
            raise click.UsageError("--rollback needs the model (for its name) or --name")
        done = deployer.rollback(to, name or bundle_name(model), remote_dir=remote_dir, **ssh)
        if json_:
            click.echo(json.dumps(done.to_dict(), indent=2))
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
        done = deployer.deploy(str(model), to, device, remote_dir=remote_dir, name=name, setup=setup,
                               bench_args=bench_args, progress=progress, **ssh)
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
        click.echo(json.dumps(data, indent=2, default=str))
        return
    what = "already active" if not done.switched else f"active (previous: {done.previous or 'none'})"
    click.echo(f"{done.target}: {done.name} version {done.version} {what} at {done.remote_path} "
               f"({_kib(done.bundle_bytes)}, {done.seconds:.1f} s)")
    if done.setup_installed:
        click.echo(f"  runtime installed in {done.board.root}/venv")
    if done.bench is not None:
        click.echo(f"  {'':<16} {'this machine':<24} {'board':<24}")
        for label, here, there in _compare_rows(local or {}, done.bench):
            click.echo(f"  {label:<16} {here[:24]:<24} {there[:24]:<24}")


# -- metadata, export android -----------------------------------------------------------------------------------


def _metadata_spec(name, description, version, author, license_, labels, input_mean, input_std, input_range, task):
    from edgert.metadata import MetadataSpec, parse_floats, read_labels

    return MetadataSpec(
        name=name, description=description or "", version=version or "", author=author or "",
        license=license_ or "", labels=read_labels(labels) if labels else None,
        labels_file_name=Path(labels).name if labels else "labels.txt",
        labels_data=Path(labels).read_bytes() if labels else None,
        mean=parse_floats(input_mean, "input-mean") if input_mean is not None else None,
        std=parse_floats(input_std, "input-std") if input_std is not None else None,
        input_range=input_range, task=task)


def _metadata_options(f):
    for option in reversed([
        click.option("--name", help="Model name shown by Android Studio [default: the file stem]."),
        click.option("--description", help="What the model does."),
        click.option("--version", "version_", help="Model version."),
        click.option("--author", help="Author."),
        click.option("--license", "license_", help="License."),
        click.option("--labels", type=click.Path(dir_okay=False, path_type=Path),
                     help="Label file, one label per line in output order; packed into the model."),
        click.option("--input-mean", metavar="MEAN[,MEAN...]",
                     help="Input normalisation (value - mean) / std; one value or one per channel [default for "
                          "quantized inputs: derived from the quantization]."),
        click.option("--input-std", metavar="STD[,STD...]", help="See --input-mean."),
        click.option("--input-range", default="0,255", show_default=True, callback=_parse_range,
                     metavar="LOW,HIGH", help="Range of the raw values (pixels) the app feeds."),
        click.option("--task", type=click.Choice(["classification", "detection", "segmentation", "generic"]),
                     default="classification", show_default=True),
    ]):
        f = option(f)
    return f


def _print_metadata(meta) -> None:
    if meta is None:
        click.echo("no TFLite metadata")
        return
    click.echo(f"name         {meta.name}")
    if meta.min_parser_version:
        click.echo(f"parser       >= {meta.min_parser_version}")
    for key in ("description", "version", "author", "license"):
        if getattr(meta, key):
            click.echo(f"{key:<12} {getattr(meta, key)}")
    for kind, tensors in (("input", meta.inputs), ("output", meta.outputs)):
        for t in tensors:
            extra = []
            if t.content:
                extra.append(t.content + (f" {t.color_space}" if t.color_space else ""))
            if t.mean:
                extra.append(f"mean {', '.join(f'{v:g}' for v in t.mean)} std {', '.join(f'{v:g}' for v in t.std)}")
            if t.min:
                extra.append(f"range {', '.join(f'{v:.4g}' for v in t.min)}..{', '.join(f'{v:.4g}' for v in t.max)}")
            extra += [f"{name} ({kind_})" for name, kind_ in t.associated_files]
            click.echo(f"{kind:<12} {t.name}" + (f": {'; '.join(extra)}" if extra else ""))
    if meta.packed_files:
        click.echo(f"packed files {', '.join(meta.packed_files)}")
    if meta.labels:
        shown = ", ".join(meta.labels[:10]) + (f", ... ({len(meta.labels)} in all)" if len(meta.labels) > 10 else "")
        click.echo(f"labels       {shown}")


@cli.group()
def metadata():
    """Write or read TFLite Metadata (what Android Studio and the LiteRT Support Library read)."""


@metadata.command("write")
@click.argument("model", type=click.Path(path_type=Path))
@_metadata_options
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Where to write [default: <stem>_metadata.tflite beside the model].")
@click.option("--force", is_flag=True, help="Overwrite the output if it exists (-o MODEL to write in place).")
@click.option("json_", "--json", is_flag=True, help="Print what was written as JSON.")
@_fail_cleanly
def metadata_write(model, name, description, version_, author, license_, labels, input_mean, input_std, input_range,
                   task, output, force, json_):
    """Embed TFLite metadata (and the label file) in a copy of MODEL."""
    from edgert.metadata import write_metadata

    spec = _metadata_spec(name or model.stem, description, version_, author, license_, labels, input_mean,
                          input_std, input_range, task)
    path, meta = write_metadata(model, spec, output, force=force)
    if json_:
        click.echo(json.dumps({"path": path, "metadata": meta.to_dict()}, indent=2))
        return
    click.echo(f"wrote {path}")
    _print_metadata(meta)


@metadata.command("read")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("json_", "--json", is_flag=True, help="Print the metadata as JSON.")
@_fail_cleanly
def metadata_read(model, json_):
    """Print a model's TFLite metadata (written by edgert or any other tool)."""
    from edgert.metadata import read_metadata

    meta = read_metadata(model)
    if json_:
        click.echo(json.dumps(meta.to_dict() if meta else None, indent=2))
        return
    _print_metadata(meta)


@cli.group()
def export():
    """Export a model for an app platform."""


@export.command("android")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--package", required=True, help="The app's Java/Kotlin package (com.example.app).")
@click.option("--delegate", "delegates", default="gpu", show_default=True, metavar="gpu,nnapi|none",
              help="Delegates the generated class tries, in order, before the CPU.")
@_metadata_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@_fail_cleanly
def export_android_command(model, package, delegates, name, description, version_, author, license_, labels,
                           input_mean, input_std, input_range, task, output, force):
    """Write an Android module: the model with metadata in assets/, a Kotlin classifier, detector or segmenter
    (--task), a Gradle snippet and a README."""
    from edgert.android import export_android

    spec = _metadata_spec(name or model.stem, description, version_, author, license_, labels, input_mean,
                          input_std, input_range, task)
    order = () if delegates.strip().lower() == "none" else tuple(d.strip() for d in delegates.split(",") if d.strip())
    done = export_android(model, package, output, labels_path=labels, delegates=order, meta=spec, force=force)
    click.echo(f"wrote {done.out_dir}/")
    for rel in (done.model_asset, done.kotlin_source, done.gradle_snippet, done.readme):
        click.echo(f"  {rel}")
    click.echo(f"use it: {done.class_name}(context).use {{ it.{done.call} }}  (see {done.readme})")


# -- optimize -------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--train-data", required=True, type=click.Path(path_type=Path),
              help="Labelled training data (.npz with x, y, or an image folder): fine-tuning and calibration.")
@click.option("--eval-data", required=True, type=click.Path(path_type=Path),
              help="Labelled evaluation data: every candidate's accuracy, through the edgert runtime.")
@click.option("--calibration-data", type=click.Path(path_type=Path), help="Calibration inputs [default: from "
              "--train-data].")
@click.option("--device", envvar="EDGERT_DEVICE", help="Board profile, for --to.")
@click.option("--to", metavar="[USER@]HOST[:PORT]", help="Measure latency on this board (edgert deploy).")
@click.option("--allow-local", is_flag=True, help="With --to: measure here when the board cannot be reached.")
@click.option("--max-drop", type=float, default=1.0, show_default=True,
              help="Accuracy points a candidate may lose against the float .tflite.")
@click.option("--min-accuracy", type=float, help="Absolute accuracy floor in percent, on top of --max-drop.")
@click.option("--objective", type=click.Choice(["size", "latency", "energy"]), default="size", show_default=True,
              help="What to minimise: gzip size, p50 latency or energy per inference.")
@click.option("--budget-minutes", type=float, help="Stop starting candidates after this long.")
@click.option("--workers", type=click.IntRange(min=1), help="Parallel worker processes [default: 2].")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="Run candidates as Ray tasks on this cluster "
              "(`local` starts one here); needs edgert[ray].")
@click.option("--epochs", type=click.IntRange(min=1), help="Fine-tuning epochs for pruning and QAT.")
@click.option("--resume", type=click.Path(dir_okay=False, path_type=Path), help="Continue the run recorded in "
              "this optimize.json; finished candidates are not redone.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="A .tflite path for the chosen model (its record beside it: PATH.optimize.json), or a folder "
                   "[default: <stem>_optimize beside the model].")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also draw accuracy against latency (point size = model size): .png, .svg or .pdf.")
@click.option("--custom-objects", type=click.Path(path_type=Path), metavar="FILE.py",
              help="A Python file defining (and registering) the model's own layers.")
@click.option("--trust-model", is_flag=True,
              help="Allow layers that run Python code stored in the model (Lambda); only for files you trust.")
@click.option("--force", is_flag=True, help="Start again over an earlier run's folder, and overwrite --plot.")
@click.option("json_", "--json", is_flag=True, help="Print the result as JSON.")
@_fail_cleanly
def optimize(model, train_data, eval_data, calibration_data, device, to, allow_local, max_drop, min_accuracy,
             objective, budget_minutes, workers, ray_address, epochs, resume, output, plot_path, custom_objects,
             trust_model, force, json_):
    """Search recipes (post-training, int8 with sensitive layers in float, pruning, QAT) for the smallest or
    fastest model within --max-drop accuracy points of the float one; prints the Pareto front."""
    from edgert.converters.optimize import format_table, optimize as run_optimize, plot_pareto

    if plot_path is not None:
        from edgert.plot import check_plot_path

        check_plot_path(plot_path, force)
    progress = (lambda _m: None) if json_ else (lambda m: click.echo(m, err=True))
    try:
        result = run_optimize(model, train_data=train_data, eval_data=eval_data, calibration_data=calibration_data,
                              out_dir=output, max_drop=max_drop, min_accuracy=min_accuracy, objective=objective,
                              budget_minutes=budget_minutes, device=device, to=to, allow_local=allow_local,
                              workers=workers, ray_address=ray_address, resume=resume, epochs=epochs, force=force,
                              custom_objects=custom_objects, trust_model=trust_model, progress=progress)
    except KeyboardInterrupt:
        from edgert.converters.optimize import output_layout
        from edgert.files import shown

        record = output_layout(model, output, resume)[0]
        click.echo(f"interrupted: finished candidates are in the record; continue with --resume {shown(record)}",
                   err=True)
        raise click.exceptions.Exit(130) from None
    if plot_path is not None:
        plot_pareto(result, plot_path, force=True)
    if json_:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(f"{result.model}: {len(result.candidates)} candidates, objective {result.objective}, within "
               f"{result.max_drop:g} points of float ({result.float_candidate.accuracy:.2%}); * Pareto front, > chosen")
    for row in format_table(result):
        click.echo(row)
    if result.reused:
        click.echo(f"reused from the record: {', '.join(result.reused)}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"stopped: {result.stopped_because}")
    if result.chosen:
        c = result.chosen
        click.echo(f"chosen: {c.name} -> {result.chosen_path} ({result.float_candidate.gzip_bytes / c.gzip_bytes:.1f}x "
                   f"smaller gzipped, {c.accuracy_drop:+.2f} points)" + (f"; layers in float: {', '.join(c.kept_float)}"
                                                                       if c.kept_float else ""))
    click.echo(f"record: {result.record_path}" + (f"; plot: {plot_path}" if plot_path else ""))


def _terminated(signum, _frame):
    # SIGTERM (a supervisor stopping us) unwinds like Ctrl-C: temporary outputs are removed, `bench` prints what
    # finished, and nothing half-written is left behind.
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminated)
    cli(prog_name="edgert")


if __name__ == "__main__":
    main()
