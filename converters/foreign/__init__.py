"""PyTorch modules (`FILE.py:FACTORY`) and ONNX files as conversion sources, through one of two routes:

- `onnx`: the `.onnx` (a module is exported to one first) through `onnx2tf` to a SavedModel, which edgert's
  TFLite conversion takes in every mode, calibrated as for Keras models. The default for `.onnx` files.
- `litert-torch`: Google's PyTorch converter, then Google's `ai-edge-quantizer` with edgert's calibration samples
  (float32, dynamic, int8, int16x8). The default for modules.

Either way the `.tflite` carries the source's input and output names, takes the layout the user chose (`nhwc`:
4-D tensors channel-last; `nchw`: as the source has them), and is checked against the source framework itself
(torch, onnxruntime) on the same samples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgert.converters.foreign import layout as lay
from edgert.converters.recipe import Quantization
from edgert.converters.signature import IONames
from edgert.errors import InputDataError

ONNX, LITERT_TORCH = "onnx", "litert-torch"
ROUTES = (LITERT_TORCH, ONNX)


@dataclass(frozen=True)
class ForeignOptions:
    """How a PyTorch or ONNX source is converted.

    route: `litert-torch` or `onnx` (default: litert-torch for a module, onnx for an `.onnx` file).
    layout: `nhwc` (4-D inputs and outputs channel-last, as TFLite's image kernels and delegates take them) or
        `nchw` (as the source has them).
    input_shapes: `(name or None, shape with batch)` per input: for open dimensions of an `.onnx`, or a module's
        inputs where it declares no `example_inputs`.
    weights: a state dict for the module (`torch.save(model.state_dict(), ...)`).
    """

    route: str | None = None
    layout: str = lay.NHWC
    input_shapes: tuple[tuple[str | None, tuple[int, ...]], ...] = ()
    weights: str | None = None


def parse_source(model_path) -> tuple[str, Path, str | None] | None:
    """`("onnx", file, None)` for an `.onnx`, `("torch", file, factory)` for `FILE.py:FACTORY`, else None."""
    text = str(model_path)
    if text.lower().endswith(".onnx"):
        return "onnx", Path(text), None
    match = re.fullmatch(r"(.+\.py):([A-Za-z_]\w*)", text)
    if match:
        return "torch", Path(match.group(1)), match.group(2)
    if text.endswith(".py") or re.fullmatch(r".+\.py:.*", text):
        raise InputDataError(f"{text}: give a PyTorch module as FILE.py:FACTORY, a function in FILE.py that "
                             "returns it")
    return None


def parse_input_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """`1,3,224,224` or `image:1,3,224,224`."""
    name, _, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise InputDataError(f"--input-shape {text}: give the dimensions, batch included, as 1,3,224,224 (or "
                             "NAME:1,3,224,224)")
    return name or None, shape


@dataclass(frozen=True)
class Opened:
    """What `open_foreign` hands the conversion: the source as edgert's converter sees it, and how to run it."""

    source: object  # a sources.SourceModel
    reference: Callable[[list[np.ndarray]], dict[str, np.ndarray]]  # samples in the .tflite's layout, by name
    reference_name: str
    convert: Callable | None  # (mode, calibration, notes, keep_float) -> flatbuffer, for a route that converts itself
    model_names: IONames  # the names the route's flatbuffer or SavedModel uses, position for position
    route: str
    layout: tuple[str, ...]  # one line per input and output: its shape in the .tflite, and the source's


def open_foreign(kind: str, path: Path, factory: str | None, options: ForeignOptions, mode: Quantization,
                 float_io: bool, trust_model: bool, workdir: Path, notes: list[str]) -> Opened:
    """Load a PyTorch module or an ONNX file and prepare its route (see the module's docstring).

    Raises:
        InputDataError, ModelFormatError, ConversionError: one line each.
    """
    if options.layout not in lay.LAYOUTS:
        raise InputDataError(f"--layout {options.layout}: choose nchw or nhwc")
    route = options.route or (LITERT_TORCH if kind == "torch" else ONNX)
    if route not in ROUTES:
        raise InputDataError(f"--route {route}: choose {' or '.join(ROUTES)}")
    if kind == "onnx" and route == LITERT_TORCH:
        raise InputDataError("litert-torch converts PyTorch modules; an .onnx file takes --route onnx")
    if route == LITERT_TORCH:
        from edgert.converters.foreign.litert_route import check_mode

        check_mode(mode, float_io)
    if kind == "torch":
        from edgert.converters.foreign.torch_module import load_module

        module = load_module(path, factory, weights=options.weights, trust_model=trust_model,
                             input_shapes=options.input_shapes)
        notes.extend(module.notes)
        if route == LITERT_TORCH:
            return _litert(path, module, options, workdir)
        return _onnx(path, workdir, options, notes, module=module)
    if options.weights is not None:
        raise InputDataError("--weights loads a state dict into a PyTorch module; an .onnx file holds its weights")
    return _onnx(path, workdir, options, notes)


def _wanted(rank: int, options: ForeignOptions) -> bool:
    """Whether a source tensor of this rank (batch included) is channel-last in the .tflite."""
    return options.layout == lay.NHWC and rank == 4


def _layout_lines(names, source_shapes, model_shapes) -> tuple[str, ...]:
    return tuple(lay.describe(n, s, m) for n, s, m in zip(names, source_shapes, model_shapes))


def _litert(path: Path, module, options: ForeignOptions, workdir: Path) -> Opened:
    from edgert.converters.foreign import litert_route
    from edgert.converters.sources import InputShape, SourceModel

    source_out = module.run(module.example)
    moved_in = [i for i, a in enumerate(module.example) if _wanted(a.ndim, options)]
    moved_out = [i for i, a in enumerate(source_out.values()) if _wanted(a.ndim, options)]
    wrapped = litert_route.channel_last_module(module.module, moved_in, moved_out)
    example = [lay.to_last(a) if i in moved_in else a for i, a in enumerate(module.example)]
    inputs = tuple(InputShape(name, a.shape[1:], src.shape[1:] if i in moved_in else None)
                   for i, (name, a, src) in enumerate(zip(module.names.inputs, example, module.example)))
    out_shapes = [lay.last_shape(a.shape) if i in moved_out else a.shape for i, a in enumerate(source_out.values())]

    def reference(samples):
        arrays = [lay.to_first(a) if i in moved_in else a for i, a in enumerate(samples)]
        outputs = _per_sample(module.run, arrays)
        return {k: lay.to_last(v) if i in moved_out else v for i, (k, v) in enumerate(outputs.items())}

    def convert(mode, calibration, notes, keep_float=(), int16=()):
        return litert_route.convert(wrapped, example, mode, calibration, notes, keep_float, int16)

    source = SourceModel(path, "foreign", inputs, framework="torch", names=module.names, described=module.label,
                         size=module.size_bytes)
    model_names = IONames(tuple(f"args_{i}" for i in range(len(example))),
                          tuple(f"output_{i}" for i in range(len(out_shapes))))
    lines = (_layout_lines(module.names.inputs, [a.shape for a in module.example], [a.shape for a in example])
             + _layout_lines(module.names.outputs, [a.shape for a in source_out.values()], out_shapes))
    return Opened(source, reference, "PyTorch", convert, model_names, LITERT_TORCH, lines)


def _onnx(path: Path, workdir: Path, options: ForeignOptions, notes: list[str], module=None) -> Opened:
    from edgert.converters.foreign import onnx_route
    from edgert.converters.sources import InputShape, open_model

    if module is not None:
        onnx_path = workdir / "model.onnx"
        onnx_route.export_torch(module.module, module.example, module.names, onnx_path)
        info = onnx_route.read_onnx(onnx_path)
        shapes = {t.name: a.shape for t, a in zip(info.inputs, module.example)}
        run, reference_name, label = module.run, "PyTorch", module.label
    else:
        onnx_path = path
        info = onnx_route.read_onnx(path)
        shapes = onnx_route.fixed_shapes(info, options.input_shapes, notes)
        runtime = onnx_route.OnnxRuntime(path)
        run, reference_name, label = runtime.run, "onnxruntime", info.label
    names = info.names
    example = [np.random.default_rng(0).random(shapes[t.name]).astype(t.dtype) for t in info.inputs]
    source_out = run(example)
    keep = [n for n in names.inputs if lay.transposable(len(shapes[n])) and not _wanted(len(shapes[n]), options)]
    saved = onnx_route.run_onnx2tf(onnx_path, workdir / "onnx2tf", shapes, keep, source=path, notes=notes)
    sm = open_model(saved)
    sm_names = _match(sm.names, names)
    # Where onnx2tf's layout of a tensor is not the one asked for, a wrapper SavedModel transposes it.
    sm_in = {n: (1, *s.shape) for n, s in zip(sm_names.inputs, sm.inputs)}
    sm_out = _output_shapes(sm, sm_names)
    fix_in = {n: lay.moved(shapes[n], sm_in[n]) for n in names.inputs
              if lay.transposable(len(shapes[n]))
              and lay.moved(shapes[n], sm_in[n]) != _wanted(len(shapes[n]), options)}
    fix_out = {n: lay.moved(source_out[n].shape, sm_out[n]) for n in names.outputs
               if lay.transposable(source_out[n].ndim)
               and lay.moved(source_out[n].shape, sm_out[n]) != _wanted(source_out[n].ndim, options)}
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
        outputs = _per_sample(run, arrays)
        return {k: lay.to_last(v) if k in moved_out else v for k, v in outputs.items()}

    source = replace(sm, kind="foreign", inputs=inputs, names=IONames(sm_names.inputs, sm_names.outputs),
                     framework="onnx" if module is None else "torch", described=label, origin=path,
                     size=None if module is None else module.size_bytes)
    lines = (_layout_lines(names.inputs, [shapes[n] for n in names.inputs], [sm_in[n] for n in names.inputs])
             + _layout_lines(names.outputs, [source_out[n].shape for n in names.outputs],
                             [sm_out[n] for n in names.outputs]))
    return Opened(source, reference, reference_name, None, sm.names, ONNX, lines)


def _per_sample(run, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The source run one sample at a time (a file exported with batch 1 takes no other), outputs concatenated."""
    results = [run([a[i:i + 1] for a in arrays]) for i in range(len(arrays[0]))]
    return {k: np.concatenate([r[k] for r in results]) for k in results[0]}


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
