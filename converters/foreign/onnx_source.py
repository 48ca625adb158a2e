"""The onnx route's source: an `.onnx` file (or a PyTorch module exported to one) through onnx2tf to a SavedModel
that takes the layout asked for and carries the source's names, and its reference in onnxruntime (or torch).
`onnx_route` runs the tools (onnx, onnx2tf); this module makes the SavedModel the conversion's source."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgert.converters.foreign import layout as lay
from edgert.converters.foreign import onnx_route
from edgert.converters.signature import IONames
from edgert.converters.sources import InputShape, Opened, open_model


def open_onnx(path: Path, workdir: Path, layout: str, input_shapes, notes: list[str], module=None) -> Opened:
    """An `.onnx` file (or a loaded PyTorch module, exported to one first) on the onnx route: onnx2tf's SavedModel,
    rewrapped where its layout of a tensor is not the one asked for, with the source's names, and the reference run
    in onnxruntime (or torch)."""
    if module is not None:
        onnx_path = workdir / "model.onnx"
        onnx_route.export_torch(module.module, module.example, module.names, onnx_path)
        info = onnx_route.read_onnx(onnx_path)
        shapes = {t.name: a.shape for t, a in zip(info.inputs, module.example)}
        run, reference_name, label = module.run, "PyTorch", module.label
    else:
        onnx_path = path
        info = onnx_route.read_onnx(path)
        shapes = onnx_route.fixed_shapes(info, input_shapes, notes)
        runtime = onnx_route.OnnxRuntime(path, info)
        run, reference_name, label = runtime.run, "onnxruntime", info.label
    names = info.names
    example = [np.random.default_rng(0).random(shapes[t.name]).astype(t.dtype) for t in info.inputs]
    source_out = run(example)
    keep = [n for n in names.inputs if lay.transposable(len(shapes[n])) and not lay.wanted(len(shapes[n]), layout)]
    saved = onnx_route.run_onnx2tf(onnx_path, workdir / "onnx2tf", shapes, keep, source=path, notes=notes, info=info)
    sm = open_model(saved)
    sm_names = _match(sm.names, names)
    # Where onnx2tf's layout of a tensor is not the one asked for, a wrapper SavedModel transposes it.
    sm_in = {n: (1, *s.shape) for n, s in zip(sm_names.inputs, sm.inputs)}
    sm_out = _output_shapes(sm, sm_names)
    fix_in = {n: lay.moved(shapes[n], sm_in[n]) for n in names.inputs
              if lay.transposable(len(shapes[n]))
              and lay.moved(shapes[n], sm_in[n]) != lay.wanted(len(shapes[n]), layout)}
    fix_out = {n: lay.moved(source_out[n].shape, sm_out[n]) for n in names.outputs
               if lay.transposable(source_out[n].ndim)
               and lay.moved(source_out[n].shape, sm_out[n]) != lay.wanted(source_out[n].ndim, layout)}
    if fix_in or fix_out:
        saved = _rewrapped(sm, sm_names, fix_in, fix_out, workdir / "wrapped")
        sm = open_model(saved)
        sm_names = _match(sm.names, names)
        sm_in = {n: (1, *s.shape) for n, s in zip(sm_names.inputs, sm.inputs)}
        sm_out = _output_shapes(sm, sm_names)
    position = {n: i for i, n in enumerate(names.inputs)}
    inputs = tuple(InputShape(n, tuple(sm_in[n][1:]), tuple(shapes[n][1:]) if lay.moved(shapes[n], sm_in[n]) else None)
                   for n in sm_names.inputs)
    moved_in = {s.name for s in inputs if s.source_shape is not None}
    moved_out = {n for n in names.outputs if lay.moved(source_out[n].shape, sm_out[n])}

    def reference(samples):  # samples in the SavedModel's input order and the .tflite's layout
        arrays = [None] * len(names.inputs)
        for spec, a in zip(inputs, samples):
            arrays[position[spec.name]] = lay.to_first(a) if spec.name in moved_in else a
        outputs = lay.per_sample(run, arrays)
        return {k: lay.to_last(v) if k in moved_out else v for k, v in outputs.items()}

    source = replace(sm, kind="foreign", inputs=inputs, names=IONames(sm_names.inputs, sm_names.outputs),
                     framework="onnx" if module is None else "torch", described=label, origin=path,
                     size=None if module is None else module.size_bytes)
    lines = (lay.layout_lines(names.inputs, [shapes[n] for n in names.inputs], [sm_in[n] for n in names.inputs])
             + lay.layout_lines(names.outputs, [source_out[n].shape for n in names.outputs],
                             [sm_out[n] for n in names.outputs]))
    return Opened(source, reference, reference_name, None, sm.names, "onnx", lines)


def _match(sm: IONames, source: IONames) -> IONames:
    """The source's names in the SavedModel's order: onnx2tf keeps input names (made safe for TensorFlow) and
    sometimes output names; other outputs are `output_N` in the ONNX graph's order."""

    def safe(name):
        return re.sub(r"[^\w]", "_", name)

    def mapped(ours, theirs, positional):
        out = []
        for name in ours:
            if name in theirs:
                out.append(name)
                continue
            by_safe = [t for t in theirs if safe(t) == safe(name)]
            index = re.fullmatch(r"output_(\d+)", name)
            if len(by_safe) == 1:
                out.append(by_safe[0])
            elif positional and index and int(index.group(1)) < len(theirs):
                out.append(theirs[int(index.group(1))])
            else:
                from edgert.errors import ConversionError

                raise ConversionError(f"onnx2tf renamed '{name}' beyond recognition (the source has "
                                      f"{', '.join(theirs)}); convert with --route litert-torch")
        return tuple(out)

    return IONames(mapped(sm.inputs, source.inputs, False), mapped(sm.outputs, source.outputs, True))


def _output_shapes(sm, sm_names: IONames) -> dict[str, tuple[int, ...]]:
    outputs = sm.function.structured_outputs
    return {name: tuple(outputs[key].shape) for key, name in zip(sm.names.outputs, sm_names.outputs)}


def _rewrapped(sm, sm_names: IONames, fix_in: dict[str, bool], fix_out: dict[str, bool], target: Path) -> Path:
    """A SavedModel calling `sm`'s signature with the inputs in `fix_in` and the outputs in `fix_out` in the other
    layout: each maps to whether onnx2tf made it channel-last (it is then moved back to channel-first, else
    forward to channel-last)."""
    from edgert.converters._tf import import_tf

    tf, _ = import_tf()
    function = sm.function
    _, specs = function.structured_input_signature
    keys_in = dict(zip(sm_names.inputs, sm.names.inputs))
    keys_out = dict(zip(sm_names.outputs, sm.names.outputs))

    def flip(x, to_first: bool):
        rank = len(x.shape)
        return tf.transpose(x, lay.to_first_perm(rank) if to_first else lay.to_last_perm(rank))

    signature = []
    for name in sm_names.inputs:
        spec = specs[keys_in[name]]
        shape = tuple(spec.shape)
        if name in fix_in:  # the wrapper takes the other layout and hands onnx2tf's graph its own
            perm = lay.to_first_perm(len(shape)) if fix_in[name] else lay.to_last_perm(len(shape))
            shape = tuple(shape[i] for i in perm)
        signature.append(tf.TensorSpec(shape, spec.dtype, name=name))

    @tf.function(input_signature=signature, autograph=False)
    def call(*args):
        feed = {keys_in[name]: flip(x, to_first=not fix_in[name]) if name in fix_in else x
                for name, x in zip(sm_names.inputs, args)}
        result = function(**feed)
        return {name: flip(result[keys_out[name]], to_first=fix_out[name]) if name in fix_out
                else result[keys_out[name]] for name in sm_names.outputs}

    holder = tf.Module()
    holder.inner = function._edgert_keep  # the loaded SavedModel owns the variables
    tf.saved_model.save(holder, str(target), signatures=call.get_concrete_function())
    return target
