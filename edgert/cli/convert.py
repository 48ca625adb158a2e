"""`edgert convert`."""

from __future__ import annotations

from pathlib import Path

import click

from edgert.cli._common import echo_json, examples, fail_cleanly, kib, parse_range, spec_rows


@click.command(epilog=examples(
    "edgert convert model.keras --int8 --calibration-data calibration.npy",
    "edgert convert model.onnx --int8 --calibration-data calibration.npy",
    "edgert convert net.py:make_model --weights net.pt --int8 --calibration-data calibration.npy"))
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
@click.option("--prune-channels", type=float, metavar="FRACTION",
              help="Structured pruning: remove this fraction of the prunable channels and rebuild a smaller dense "
                   "model (fine-tuned by distillation from the original with --train-data).")
@click.option("--prune-channels-criterion", type=click.Choice(["l2", "bn"]),
              help="Channel importance: filter L2 norm or BatchNorm scale [default: l2].")
@click.option("--prune-channels-policy", type=click.Choice(["uniform", "global"]),
              help="The same fraction in every group, or ranked across the model [default: uniform].")
@click.option("--min-channels", type=int, help="With --prune-channels-policy global: keep at least this many "
              "channels per group [default: 8].")
@click.option("--channel-multiple", type=int, help="Round channel counts of groups with 32+ channels to a multiple "
              "of this [default: 8].")
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
     "prune50_2of4_int8", "qat_int8", "prune75_qat_int8", "cluster16_int8", "prune50_cluster16_qat_int8",
     "channels25_int8", "channels50_int8", "channels75_int8"]) + ".")
@click.option("--image-range", callback=parse_range, metavar="LOW,HIGH",
              help="Value range image folders are scaled to (0,1 / -1,1 / 0,255) [default: the range the model "
                   "states with a leading Rescaling or Normalization layer].")
@click.option("--force-range", is_flag=True,
              help="Accept calibration data whose range disagrees with the training/eval data or the model's.")
@click.option("--custom-objects", type=click.Path(path_type=Path), metavar="FILE.py",
              help="A Python file defining (and registering) the model's own layers.")
@click.option("--trust-model", is_flag=True,
              help="Allow layers that run Python code stored in the model (Lambda); only for files you trust.")
@click.option("--signature", metavar="NAME", help="The SavedModel signature to convert, where it has several "
              "[default: serving_default]; the .tflite carries it as serving_default.")
@click.option("--route", type=click.Choice(["litert-torch", "onnx"]), help="How a PyTorch module or .onnx "
              "converts [default: litert-torch for a module, onnx for an .onnx file].")
@click.option("--layout", type=click.Choice(["nhwc", "nchw"]), help="PyTorch or ONNX source: 4-D inputs and "
              "outputs channel-last (nhwc) or as the source has them (nchw) [default: nhwc].")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="[NAME:]1,3,224,224",
              help="PyTorch or ONNX source: an input's shape, batch included (once per input).")
@click.option("--weights", type=click.Path(path_type=Path), help="PyTorch module: a state dict to load "
              "(torch.save(model.state_dict(), ...)), read with weights_only=True.")
@click.option("--explain", is_flag=True, help="With a calibrated mode: each layer's error against float, worst "
              "first (the names --keep-float and --int16 take).")
@click.option("--keep-float", "keep_float", multiple=True, metavar="LAYER[,LAYER]",
              help="With --int8: keep these operators (output tensor names, as --explain lists them) in float.")
@click.option("--int16", "int16", multiple=True, metavar="LAYER[,LAYER]",
              help="With --int8 on the litert-torch route: int16 activations for these operators.")
@click.option("--no-fallback", is_flag=True, help="Keep full int8 even where it loses a detector's detections "
              "(warn only) [default: write dynamic range instead when that keeps them].")
@click.option("--force", is_flag=True, help="Overwrite the output (and its .recipe.json/.report.json).")
@click.option("json_", "--json", is_flag=True, help="Print the result as JSON.")
@fail_cleanly
def convert(model, output, calibration_data, train_data, val_data, eval_data, recipe_path, preset, image_range,
            force_range, custom_objects, trust_model, signature, seed, route, layout, input_shapes, weights,
            explain, no_fallback, force, json_, **options):
    """Convert a Keras model (.h5, .keras), SavedModel directory, ONNX file (model.onnx) or PyTorch module
    (FILE.py:FACTORY, a function returning it) to TFLite, optionally pruning, clustering, distilling and training
    for quantization on the way (Keras models)."""
    from edgert.converters import ConvertRecipe, RecipeError, recipe_from_options  # TensorFlow loads later
    from edgert.converters import convert as convert_model
    from edgert.converters import preset as named_preset

    given = {k: v for k, v in options.items() if v not in (None, False) and
             (k, v) not in {("calibration_samples", 200), ("batch_size", 32), ("distill_temperature", 4.0),
                            ("distill_alpha", 0.1), ("keep_float", ()), ("int16", ())}}
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

    foreign = None
    if route or layout or input_shapes or weights:
        from edgert.converters.foreign import ForeignOptions, parse_input_shape

        foreign = ForeignOptions(route=route, layout=layout or "nhwc", weights=weights,
                                 input_shapes=tuple(parse_input_shape(t) for t in input_shapes))
    try:
        result = convert_model(model, output, recipe=recipe, calibration_data=calibration_data,
                               train_data=train_data, val_data=val_data, eval_data=eval_data,
                               image_range=image_range, force=force, custom_objects=custom_objects,
                               trust_model=trust_model, force_range=force_range, signature=signature,
                               foreign=foreign, fallback=not no_fallback, explain=explain)
    except ConversionInterrupted as stopped:
        click.echo(stopped.describe(), err=True)
        raise click.exceptions.Exit(130) from None
    if json_:
        echo_json(result.to_dict(), indent=2)
        return
    click.echo(f"wrote {result.output_path}")
    click.echo(f"  from        {result.source_format}" + (f" (route {result.route})" if result.route else ""))
    click.echo(f"  recipe      {result.recipe.name}  ({result.recipe_path})")
    click.echo(f"  mode        {result.mode.value}"
               + (f" (calibrated on {result.calibration_samples} samples)" if result.calibration_samples else "")
               + (f" instead of {result.mode_requested.value}, which lost detections (see the note)"
                  if result.mode_requested else ""))
    click.echo(f"  size        {kib(result.source_size_bytes)} -> {kib(result.output_size_bytes)} "
               f"({result.size_ratio:.1f}x smaller; {kib(result.output_gzip_bytes)} gzipped)")
    if result.accuracy_tflite is not None:
        src = "-" if result.accuracy_source is None else f"{result.accuracy_source:.2%}"
        drop = "" if result.accuracy_drop is None else f", drop {result.accuracy_drop:+.2f} points"
        click.echo(f"  accuracy    {src} -> {result.accuracy_tflite:.2%} on {result.eval_samples} samples{drop}")
    if result.agreement is not None:
        click.echo(f"  agreement   {result.agreement.describe()}")
        if len(result.agreement.outputs) > 1:
            for o in result.agreement.outputs:
                measure = (f"max relative difference {o.max_rel_diff:.1e}" if result.agreement.mode == "float32"
                           else f"cosine {o.cosine:.4f}")
                click.echo(f"    {o.name:<20} {measure}")
    click.echo(f"  time        {result.duration_s:.1f} s")
    if len(result.stages) > 1:
        click.echo("stages")
        click.echo(f"  {'stage':<10} {'params':>8} {'size':>11} {'gzip':>11} {'sparsity':>9} {'clusters':>9} "
                   f"{'float layers':>13} {'time':>7}")
        for st in result.stages:
            sparsity = max(st.sparsity.values(), default=0.0)
            clusters = min(st.clusters.values(), default=0)
            click.echo(f"  {st.stage:<10} {st.params:>8} {kib(st.size_bytes):>11} {kib(st.gzip_bytes):>11} "
                       f"{sparsity:>9.2f} {clusters or '-':>9} {len(st.float_layers) or '-':>13} "
                       f"{st.seconds:>6.1f}s")
    if result.channels is not None:
        ch = result.channels
        def count(n):
            return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"

        click.echo(f"channels    MACs {count(ch.macs_before)} -> {count(ch.macs_after)} ({ch.macs_ratio:.2f}x), "
                   f"parameters {ch.params_before} -> {ch.params_after} ({ch.params_ratio:.2f}x); "
                   f"{ch.pruned_groups} of {ch.groups} channel groups pruned (per layer: the .report.json)")
        if ch.latency_before_ms:
            click.echo(f"            p50 {ch.latency_before_ms:.3f} -> {ch.latency_after_ms:.3f} ms here "
                       f"({ch.latency_after_ms / ch.latency_before_ms:.2f}x, one thread)")
    click.echo("inputs")
    click.echo("\n".join(spec_rows(result.inputs)))
    click.echo("outputs")
    click.echo("\n".join(spec_rows(result.outputs)))
    if result.layer_errors:
        click.echo(f"layers losing the most ({result.layer_errors[0].measure}, worst first; --keep-float takes "
                   "the names)")
        for e in result.layer_errors[:10]:
            click.echo(f"  {e.error:8.3f}  {e.op:<22} {e.name}")
    if result.layout:
        click.echo("layout")
        click.echo("\n".join(f"  {line}" for line in result.layout))
    for note in result.notes:
        click.echo(f"note: {note}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
