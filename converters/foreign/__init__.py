"""PyTorch modules (`FILE.py:FACTORY`) and ONNX files as conversion sources, through one of two routes:

- `onnx`: the `.onnx` (a module is exported to one first) through `onnx2tf` to a SavedModel, which edgert's
  TFLite conversion takes in every mode, calibrated as for Keras models. The default for `.onnx` files.
- `litert-torch`: Google's PyTorch converter, then Google's `ai-edge-quantizer` with edgert's calibration samples
  (float32, dynamic, int8, int16x8). The default for modules.

Either way the `.tflite` carries the source's input and output names, takes the layout the user chose (`nhwc`:
4-D tensors channel-last; `nchw`: as the source has them), and is checked against the source framework itself
(torch, onnxruntime) on the same samples.

This package's face: the options (`ForeignOptions`, `parse_input_shape`) and `open_foreign`, which hands a source to
its route. The routes' code is in their modules: `litert_route` (`open_module`, the conversion and quantization),
`onnx_source` (`open_onnx`: onnx2tf's SavedModel as the source) over `onnx_route` (the ONNX tools), `torch_module`
(loading a module) and `layout`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgert.converters.foreign import layout as lay
from edgert.converters.recipe import Quantization
from edgert.errors import InputDataError

if TYPE_CHECKING:
    from edgert.converters.sources import Opened

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
            from edgert.converters.foreign.litert_route import open_module

            opened = open_module(path, module, options.layout)
        else:
            from edgert.converters.foreign.onnx_source import open_onnx

            opened = open_onnx(path, workdir, options.layout, options.input_shapes, notes, module=module)
        return replace(opened, other_route=ONNX if route == LITERT_TORCH else LITERT_TORCH)
    if options.weights is not None:
        raise InputDataError("--weights loads a state dict into a PyTorch module; an .onnx file holds its weights")
    from edgert.converters.foreign.onnx_source import open_onnx

    return open_onnx(path, workdir, options.layout, options.input_shapes, notes)
