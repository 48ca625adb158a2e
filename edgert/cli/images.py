"""`edgert run --image/--video/--camera` and `edgert bench --image`: the options they share and how results print.
The work is `edgert.tasks`'."""

from __future__ import annotations

import os


import click

from edgert.cli._common import echo_json
from edgert.errors import InputDataError


def _floats(_ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number or comma-separated numbers (one per channel)") from None


def picture_options(f):
    """The options of a picture task, shared by `run` and `bench`."""
    for option in reversed([
        click.option("--image", "images", multiple=True, metavar="PATH",
                     help="A picture, a folder of them or a glob (repeatable): run the model's task on each."),
        click.option("--task", type=click.Choice(["classify", "detect", "segment"]),
                     help="The task [default: from the model's metadata, or its outputs' layout when only one fits]."),
        click.option("--labels", type=click.Path(),
                     help="Labels, one per line in class order, or `ID LABEL` lines [default: the metadata's]."),
        click.option("--mean", callback=_floats, metavar="M[,M,M]",
                     help="Normalisation in pixel units, input = (pixel - mean) / std [default: the metadata's, else "
                          "the input's quantization, else 0..1]."),
        click.option("--std", callback=_floats, metavar="S[,S,S]", help="See --mean."),
        click.option("--bgr", is_flag=True, default=None, help="The model takes BGR (trained with OpenCV)."),
        click.option("--layout", type=click.Choice(["yolov8", "yolov5", "yolox", "yolox-raw", "ssd", "nms"]),
                     help="A detector's output layout [default: recognised from its shapes]."),
        click.option("--conf", type=float, default=0.25, show_default=True, help="Detections below this score go."),
        click.option("--iou", type=float, default=0.45, show_default=True, help="NMS overlap, class by class."),
        click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
                     help="A classifier's best classes shown."),
    ]):
        f = option(f)
    return f


def pipeline(model, task, labels, mean, std, bgr, layout, conf, iou, top_k, loaded):
    from edgert.tasks.pipeline import Pipeline

    return Pipeline(loaded, task, labels=labels, mean=mean, std=std, bgr=bgr, layout=layout, conf=conf, iou=iou,
                    top_k=top_k)


def _table(result) -> list[str]:
    t = result.timings
    head = (f"{result.image or 'picture'} ({result.width}x{result.height}): pre {t.pre_ms:.2f} ms, infer "
            f"{t.infer_ms:.2f} ms, post {t.post_ms:.2f} ms")
    if result.task == "classify":
        return [head] + [f"  {c.label:<24} {c.score:.4f}" for c in result.classes]
    if result.task == "segment":
        return [head] + [f"  {label:<24} {share:6.1%} of the picture" for label, _, share in result.areas()]
    lines = [f"{head}; {len(result.detections)} detection{'s' if len(result.detections) != 1 else ''}"]
    if result.detections:
        lines.append(f"  {'label':<16} {'score':>6} {'x1':>7} {'y1':>7} {'x2':>7} {'y2':>7}")
        lines += [f"  {d.label:<16} {d.score:6.3f} " + " ".join(f"{v:7.1f}" for v in d.box)
                  for d in result.detections]
    return lines


def run_pictures(pipe, images, video, camera, output, force, json_, max_frames) -> None:
    """Print each picture's result (a table, or one JSON object a line) and draw them with -o."""
    from edgert.tasks.image import list_images

    if video is not None or camera is not None:
        if images:
            raise InputDataError("give --image, or --video/--camera, not both")
        _stream(pipe, video, camera, output, force, json_, max_frames)
        return
    pictures = list_images(images)
    targets = _targets(pictures, output, force)
    if not json_:
        click.echo(f"task {pipe.plan.describe()}")
    from edgert.tasks.draw import annotate, save

    for i, path in enumerate(pictures):
        result = pipe(path)
        if json_:
            echo_json(result.to_dict())
        else:
            click.echo("\n".join(_table(result)))
        if targets:
            save(annotate(result, path), targets[i], force=force)
            if not json_:
                click.echo(f"  drawn to {targets[i]}")


def _targets(pictures, output, force):
    if output is None:
        return None
    from pathlib import Path

    from edgert.files import check_output_path
    from edgert.tasks.draw import output_paths

    targets = output_paths(pictures, output)
    if targets[0].parent == Path(output) and not Path(output).is_dir():
        if not Path(output).parent.is_dir():
            raise InputDataError(f"-o {output}: its folder {Path(output).parent} does not exist")
        try:
            Path(output).mkdir()
        except OSError as exc:  # a read-only disk, a full one, no permission: one line
            from edgert.files import not_writable

            raise not_writable(Path(output).parent, exc) from None
    for target in targets:  # every refusal before the first picture is run
        check_output_path(target, force=force)
    return targets


def _stream(pipe, video, camera, output, force, json_, max_frames) -> None:
    from edgert.tasks.video import VideoWriter, open_capture, run_stream

    capture = open_capture(video, camera)
    if not json_:
        click.echo(f"task {pipe.plan.describe()}")
    writer = None
    try:
        if output is not None:
            writer = VideoWriter(output, capture.fps, (capture.width, capture.height), force=force)

        def each(index, result, pixels):
            if json_:
                echo_json(dict(result.to_dict(), frame=index))
            if writer is not None:
                from edgert.tasks.draw import annotate

                writer.write(annotate(result, pixels))

        stats = run_stream(pipe, capture, max_frames=max_frames, on_result=each,
                           on_stats=None if json_ else lambda s: click.echo(f"{capture.source}: {s.describe()}"))
    except BaseException:
        if writer is not None:
            writer.close(keep=False)
        raise
    finally:
        capture.close()
    if writer is not None:
        writer.close()
    if json_:
        echo_json({"source": capture.source, "stats": stats.to_dict()})
    elif writer is not None:
        click.echo(f"drawn to {output}")
    if not stats.frames:
        raise InputDataError(f"{capture.source}: no frame could be read")


def bench_pictures(pipe, images, runs, warmup, power, power_cmd, power_rail, power_hz, idle_seconds, json_) -> None:
    from edgert.tasks.bench import bench_pictures as run_bench
    from edgert.tasks.image import list_images

    pictures = list_images(images)
    result = run_bench(pipe, pictures, runs=runs or 50, warmup=warmup, power=power, power_cmd=power_cmd,
                       power_options={"rail": power_rail} if power_rail else None, power_hz=power_hz,
                       idle_s=idle_seconds)
    if json_:
        echo_json(result.to_dict(), indent=2)
        return
    click.echo(f"{os.path.basename(result.model)}: {result.task}, {len(pictures)} picture(s), "
               f"{result.total.count} timed; "
               f"{result.delegation}")
    click.echo(f"  {'stage':<8} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for name, stats in (("pre", result.pre), ("infer", result.infer), ("post", result.post),
                        ("total", result.total)):
        click.echo(f"  {name:<8} {stats.p50_ms:9.3f} {stats.p90_ms:9.3f} {stats.p99_ms:9.3f} {stats.mean_ms:9.3f}")
    per = result.energy_per_picture_mj
    click.echo(f"  energy   {per:.3f} mJ/picture" if per is not None else f"  energy   - ({result.power_note})")
