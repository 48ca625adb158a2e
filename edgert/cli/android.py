"""`edgert metadata` and `edgert export android`."""

from __future__ import annotations

from pathlib import Path

import click

from edgert.cli._common import echo_json, examples, fail_cleanly, parse_range


def _metadata_spec(name, description, version, author, license_, labels, input_mean, input_std, input_range, task):
    from edgert.metadata.writer import MetadataSpec, parse_floats, read_labels

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
        click.option("--display-name", "name", help="Model name shown by Android Studio and in the metadata "
                     "[default: the file stem]."),
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
        click.option("--input-range", default="0,255", show_default=True, callback=parse_range,
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


@click.group(epilog=examples(
    "edgert metadata write model.tflite --labels labels.txt",
    "edgert metadata read model.tflite --json"))
def metadata():
    """Write or read TFLite Metadata (what Android Studio and the LiteRT Support Library read)."""


@metadata.command("write", epilog=examples(
    "edgert metadata write model.tflite --labels labels.txt --display-name Digits",
    "edgert metadata write model.tflite --input-mean 127.5 --input-std 127.5 -o model_md.tflite",
    "edgert metadata write detector.tflite --task detection --labels coco.txt"))
@click.argument("model", type=click.Path(path_type=Path))
@_metadata_options
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Where to write [default: <stem>_metadata.tflite beside the model].")
@click.option("--force", is_flag=True, help="Overwrite the output if it exists (-o MODEL to write in place).")
@click.option("json_", "--json", is_flag=True, help="Print what was written as JSON.")
@fail_cleanly
def metadata_write(model, name, description, version_, author, license_, labels, input_mean, input_std, input_range,
                   task, output, force, json_):
    """Embed TFLite metadata (and the label file) in a copy of MODEL."""
    from edgert.metadata.writer import write_metadata

    spec = _metadata_spec(name or model.stem, description, version_, author, license_, labels, input_mean,
                          input_std, input_range, task)
    path, meta = write_metadata(model, spec, output, force=force)
    if json_:
        echo_json({"path": path, "metadata": meta.to_dict()}, indent=2)
        return
    click.echo(f"wrote {path}")
    _print_metadata(meta)


@metadata.command("read", epilog=examples("edgert metadata read model.tflite",
                                          "edgert metadata read model.tflite --json"))
@click.argument("model", type=click.Path(path_type=Path))
@click.option("json_", "--json", is_flag=True, help="Print the metadata as JSON.")
@fail_cleanly
def metadata_read(model, json_):
    """Print a model's TFLite metadata (written by edgert or any other tool)."""
    from edgert.metadata.reader import read_metadata

    meta = read_metadata(model)
    if json_:
        echo_json(meta.to_dict() if meta else None, indent=2)
        return
    _print_metadata(meta)


@click.group(epilog=examples("edgert export android model.tflite --package com.example.app -o android/"))
def export():
    """Export a model for an app platform."""


@export.command("android", epilog=examples(
    "edgert export android model.tflite --package com.example.app --labels labels.txt -o android/",
    "edgert export android detector.tflite --task detection --delegate gpu,nnapi -o android/ --force"))
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--package", required=True, help="The app's Java/Kotlin package (com.example.app).")
@click.option("--delegate", "delegates", default="gpu", show_default=True, metavar="gpu,nnapi|none",
              help="Delegates the generated class tries, in order, before the CPU.")
@_metadata_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Output folder.")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@click.option("json_", "--json", is_flag=True, help="Print what was written as JSON.")
@fail_cleanly
def export_android_command(model, package, delegates, name, description, version_, author, license_, labels,
                           input_mean, input_std, input_range, task, output, force, json_):
    """Write an Android module: the model with metadata in assets/, a Kotlin classifier, detector or segmenter
    (--task), a Gradle snippet and a README."""
    from edgert.android.export import export_android

    spec = _metadata_spec(name or model.stem, description, version_, author, license_, labels, input_mean,
                          input_std, input_range, task)
    order = () if delegates.strip().lower() == "none" else tuple(d.strip() for d in delegates.split(",") if d.strip())
    done = export_android(model, package, output, labels_path=labels, delegates=order, meta=spec, force=force)
    if json_:
        echo_json(done.to_dict(), indent=2)
        return
    click.echo(f"wrote {done.out_dir}/")
    for rel in (done.model_asset, done.kotlin_source, done.gradle_snippet, done.readme):
        click.echo(f"  {rel}")
    click.echo(f"use it: {done.class_name}(context).use {{ it.{done.call} }}  (see {done.readme})")
