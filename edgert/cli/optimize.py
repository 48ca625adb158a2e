"""`edgert optimize`."""

from __future__ import annotations

from pathlib import Path

import click

from edgert.cli._common import echo_json, examples, fail_cleanly


@click.command(epilog=examples(
    "edgert optimize model.h5 --train-data train.npz --eval-data test.npz -o best.tflite",
    "edgert optimize model.h5 --train-data train.npz --eval-data test.npz --objective latency --to mypi",
    "edgert optimize model.h5 --train-data train.npz --eval-data test.npz --resume best.tflite.optimize.json"))
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
@fail_cleanly
def optimize(model, train_data, eval_data, calibration_data, device, to, allow_local, max_drop, min_accuracy,
             objective, budget_minutes, workers, ray_address, epochs, resume, output, plot_path, custom_objects,
             trust_model, force, json_):
    """Search recipes (post-training, int8 with sensitive layers in float, pruning, QAT) for the smallest or
    fastest model within --max-drop accuracy points of the float one; prints the Pareto front."""
    from edgert.converters.optimize import format_table, optimize as run_optimize, plot_pareto

    if plot_path is not None:
        from edgert.measure.plot import check_plot_path

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
        echo_json(result.to_dict(), indent=2)
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
