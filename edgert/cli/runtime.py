"""`edgert delegates`, `check`, `inspect` and `run`: the runtime on one model."""

from __future__ import annotations

import os
import time

import click
import numpy as np

import edgert
from edgert.cli._common import delegate_options, echo_json, examples, fail_cleanly, kib, load_model, spec_rows
from edgert.cli.images import picture_options
from edgert.errors import InputDataError


@click.command(epilog=examples(
    "edgert delegates",
    "edgert delegates --json",
    "EDGERT_DELEGATES=xnnpack,gpu edgert delegates"))
@click.option("json_", "--json", is_flag=True, help="Print the list as JSON.")
@fail_cleanly
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
        echo_json({"platform": str(current_platform()), "delegates": rows}, indent=2)
        return
    click.echo(f"platform {current_platform()}")
    for r in rows:
        state = "usable" if r["usable"] else "unusable"
        click.echo(f"  {r['name']:<10} {state:<9} {r['summary']}")
        if r["reason"]:
            click.echo(f"  {'':<10} {'':<9} {r['reason']}")


@click.command(epilog=examples(
    "edgert check model.tflite",
    "edgert check model.tflite --delegate gpu,edgetpu --strict",
    "edgert check model.tflite --json"))
@click.argument("model", type=click.Path())
@click.option("--delegate", "delegate_names", default="all", show_default=True, metavar="NAME[,NAME...]",
              help="Delegates to check: xnnpack, gpu, nnapi, edgetpu, or all.")
@click.option("--strict", is_flag=True, help="Exit 1 if any operator would fall back to the CPU.")
@click.option("json_", "--json", is_flag=True, help="Print the verdicts as JSON.")
@fail_cleanly
def check(model, delegate_names, strict, json_):
    """Pre-flight: which operators each delegate will accept, read from the model file alone (no hardware)."""
    from edgert.runtime.preflight import check as check_model

    results = check_model(model, delegate_names)
    if json_:
        echo_json({"model": str(model), "delegates": [r.to_dict() for r in results]}, indent=2)
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


@click.command(epilog=examples(
    "edgert inspect model.tflite",
    "edgert inspect model.tflite --delegate gpu,xnnpack",
    "edgert inspect model.tflite --json"))
@click.argument("model", type=click.Path())
@click.option("json_", "--json", is_flag=True, help="Print the description as JSON.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: the backend's].")
@delegate_options
@fail_cleanly
def inspect(model, json_, threads, delegate, delegate_lib, delegate_options, strict):
    """Describe a .tflite model: inputs, outputs, quantization, operators, custom ops, delegation."""
    info = edgert.inspect_model(model)
    from edgert.runtime.backend import get_backend

    backend = str(get_backend())
    channel_first: tuple[str, ...] = ()
    try:
        loaded = load_model(model, threads, delegate, delegate_lib, delegate_options, strict)
        delegation, channel_first = loaded.delegation, loaded.channel_first_inputs
        delegation_text, delegation_dict = delegation.describe(), delegation.to_dict()
    except edgert.UnsupportedOperatorError as exc:  # still worth describing: the file itself is fine
        if strict:
            raise
        delegation_text, delegation_dict = f"not loadable here: {exc}", None
    if json_:
        echo_json({**info.to_dict(), "backend": backend, "delegation": delegation_dict}, indent=2)
        return
    click.echo(f"model         {info.path}")
    click.echo(f"size          {kib(info.size_bytes)} ({info.size_bytes} bytes)")
    click.echo(f"quantization  {info.quantization}")
    click.echo(f"structure     schema v{info.schema_version}, {info.subgraph_count} subgraph(s), "
               f"{info.tensor_count} tensors, {info.operator_count} operators")
    click.echo(f"backend       {backend}")
    if info.metadata:
        click.echo(f"metadata      {', '.join(info.metadata)}")
    click.echo(f"signature     {info.signature or 'none (tensor names only)'}")
    if channel_first:
        click.echo(f"layout        {', '.join(channel_first)}: channel-last here, channel-first in the source "
                   "(run and bench transpose arrays given that way)")
    click.echo("inputs")
    click.echo("\n".join(spec_rows(info.inputs)))
    click.echo("outputs")
    click.echo("\n".join(spec_rows(info.outputs)))
    click.echo("operators")
    for name, count in info.operators:
        click.echo(f"  {name:<28} {count:>4}")
    click.echo("custom operators: " + (", ".join(info.custom_operators) or "none"))
    click.echo(f"delegation    {delegation_text}")


# -- run ------------------------------------------------------------------------------------------------------


def _load_inputs(path: str, model: edgert.Model):
    from edgert.runtime.arrays import load_arrays, match_inputs, to_model_layout

    inputs, notes = to_model_layout(match_inputs(load_arrays(path), model.inputs, path), model)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    return inputs


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


@click.command(epilog=examples(
    "edgert run model.tflite --input x.npy",
    "edgert run yolo.tflite --image street.jpg -o street_boxes.jpg",
    "edgert run mobilenet.tflite --image photos/*.jpg --labels labels.txt --json"))
@click.argument("model", type=click.Path())
@click.argument("more_images", nargs=-1, metavar="[PICTURES]...")
@click.option("-i", "--input", "input_path", type=click.Path(),
              help="Input data: .npy (one input) or .npz (one array per input name) [default: seeded random inputs "
                   "in the model's dtypes, a smoke test].")
@click.option("-o", "--output", type=click.Path(),
              help="Save outputs: .npy (single output) or .npz (one array per output name); with --image the "
                   "pictures drawn (a .png/.jpg, or a folder), with --video the video drawn (.mp4, .avi).")
@click.option("--raw", is_flag=True, help="Return quantized outputs as stored, not dequantized to float.")
@picture_options
@click.option("--video", type=click.Path(), help="A video file: every frame through the task.")
@click.option("--camera", type=int, metavar="N", help="Camera N (/dev/videoN): every frame through the task.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop a video or camera after this many frames.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads [default: the backend's].")
@click.option("--force", is_flag=True, help="Overwrite --output if it exists.")
@click.option("json_", "--json", is_flag=True, help="Print outputs as JSON.")
@delegate_options
@fail_cleanly
def run(model, more_images, input_path, output, raw, images, task, labels, mean, std, bgr, layout, conf, iou, top_k, video, camera,
        max_frames, threads, force, json_, delegate, delegate_lib, delegate_options, strict):
    """Run a .tflite model on inputs from a file (or, without --input, on seeded random inputs), or on pictures,
    a video or a camera for its task: labels, boxes or a mask. Pictures after the first --image (as a shell's
    glob gives them) are run too."""
    if more_images and not images:
        raise click.UsageError(f"unexpected argument {more_images[0]!r}: pictures follow --image")
    images = tuple(images) + tuple(more_images)

    if images or video is not None or camera is not None:
        from edgert.cli import images as pictures

        if input_path is not None or raw:
            raise InputDataError("--image/--video/--camera run the model's task on pictures; --input and --raw are "
                                 "for arrays")
        m = load_model(model, threads, delegate, delegate_lib, delegate_options, strict)
        pipe = pictures.pipeline(model, task, labels, mean, std, bgr, layout, conf, iou, top_k, m)
        pictures.run_pictures(pipe, images, video, camera, output, force, json_, max_frames)
        return

    if output is not None:
        from edgert.files import check_output_path

        check_output_path(output, force=force)
        if os.path.splitext(output)[1] not in (".npy", ".npz"):
            raise InputDataError(f"--output {output}: use a .npy or .npz path")
    m = load_model(model, threads, delegate, delegate_lib, delegate_options, strict)
    if input_path is None:
        from edgert.runtime.arrays import random_inputs

        inputs = random_inputs(m.inputs)
    else:
        inputs = _load_inputs(input_path, m)
    started = time.perf_counter_ns()
    outputs = m.run(inputs, raw=raw)
    latency_ms = (time.perf_counter_ns() - started) / 1e6
    names = [s.name for s in m.outputs]
    if output is not None:
        if os.path.splitext(output)[1] == ".npy" and len(outputs) != 1:
            raise InputDataError(f"the model has {len(outputs)} outputs; save them to an .npz, not {output}")
        from edgert.runtime.arrays import save_arrays

        save_arrays(output, dict(zip(names, outputs)))
    if json_:
        echo_json({
            "model": str(model), "backend": str(m.backend), "latency_ms": round(latency_ms, 3),
            "inputs": str(input_path) if input_path else "seeded random",
            "delegation": m.delegation.to_dict(),
            "outputs": {n: {"shape": list(o.shape), "dtype": o.dtype.name, "values": o.tolist()}
                        for n, o in zip(names, outputs)},
            "saved_to": str(output) if output else None}, indent=2)
        return
    for n, o in zip(names, outputs):
        click.echo(_summary(n, o))
    click.echo(f"ran in {latency_ms:.2f} ms on {m.backend}" + ("" if input_path else " (seeded random inputs)")
               + (f"; saved to {output}" if output else ""))
    click.echo(f"delegation: {m.delegation.describe()}")
