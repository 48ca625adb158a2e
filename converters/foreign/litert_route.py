"""The litert-torch route: a PyTorch module converted by Google's own converter (`litert_torch.convert`, through
`torch.export`), quantized by Google's `ai-edge-quantizer` on the float `.tflite` with edgert's calibration samples.

The route keeps the module's own operators (no ONNX in between). Its quantizer has no float16-weights recipe and
edgert's Edge TPU preparation needs TensorFlow's converter: those modes take `--route onnx`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from edgert.converters.recipe import Quantization
from edgert.errors import ConversionError, InputDataError, brief

if TYPE_CHECKING:
    from edgert.converters.sources import Opened

LITERT_TORCH_EXTRA = "the litert-torch route needs the [torch] extra: pip install 'edgert[torch]'"
# ai-edge-quantizer's recipes for edgert's modes: int8 weights with int8 or int16 activations (calibrated), int8
# weights with float activations (dynamic range).
_RECIPES = {Quantization.INT8: "static_wi8_ai8", Quantization.INT16X8: "static_wi8_ai16",
            Quantization.DYNAMIC: "dynamic_wi8_afp32"}


def check_mode(mode: Quantization, float_io: bool) -> None:
    """Refuse, in one line naming the route that can, what this route cannot do."""
    if mode in (Quantization.FLOAT16, Quantization.EDGETPU):
        raise InputDataError(f"the litert-torch route cannot do --{mode.value} (its quantizer has no such recipe); "
                             "add --route onnx, which can")
    if float_io:
        raise InputDataError("the litert-torch route quantizes inputs and outputs too, so --float-io is not "
                             "available there; add --route onnx, which can")


def channel_last_module(module, inputs: Sequence[int], outputs: Sequence[int]):
    """`module` taking the `inputs` (positions) channel-last and giving the `outputs` (positions in its flattened
    result) channel-last; its result is a flat tuple."""
    import torch

    from edgert.converters.foreign.torch_module import flatten

    class ChannelLast(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *args):
            args = [a.permute(0, a.dim() - 1, *range(1, a.dim() - 1)) if i in inputs else a
                    for i, a in enumerate(args)]
            result = flatten(self.inner(*args))
            return tuple(t.permute(0, *range(2, t.dim()), 1) if i in outputs else t for i, t in enumerate(result))

    return ChannelLast().eval()


def convert(module, example: Sequence[np.ndarray], mode: Quantization, calibration: list[np.ndarray] | None,
            notes: list[str], keep_float: Sequence[str] = (), int16: Sequence[str] = ()) -> bytes:
    """The module (taking `example`, in the `.tflite`'s layout) as a `.tflite` in `mode`; `calibration` in the same
    layout drives the calibrated modes, and the operators producing the tensors named in `keep_float` stay in
    float. Its signature names are litert-torch's (`args_0`, `output_0`, ...)."""
    import contextlib
    import io

    import torch

    from edgert.runtime.native import native_log_captured

    sample = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in example)
    quiet = io.StringIO()
    try:
        # litert-torch, torchao and TensorFlow print their own chatter at import and conversion: kept out
        with native_log_captured(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            try:
                import litert_torch
            except ImportError as exc:
                raise ConversionError(f"{LITERT_TORCH_EXTRA} ({exc.name or 'litert_torch'} is not "
                                      "installed)") from None
            flatbuffer = bytes(litert_torch.convert(module, sample).model_content())
    except ConversionError:
        raise
    except Exception as exc:  # torch.export and lowering errors: one line, and the other route
        raise ConversionError(f"litert-torch could not convert the module ({brief(exc, 240)}); try --route "
                              "onnx") from None
    if mode is Quantization.FLOAT32:
        return flatbuffer
    return quantize(flatbuffer, mode, calibration, len(example), notes, keep_float, int16)


def _scope(names: Sequence[str]) -> str:
    """ai-edge-quantizer's scope regex for the operators with these output tensors: it matches an operator's output
    names, each followed by ';'."""
    import re

    return "(^|;)(" + "|".join(re.escape(n) for n in names) + ");"


def quantize(flatbuffer: bytes, mode: Quantization, calibration: list[np.ndarray] | None, inputs: int,
             notes: list[str], keep_float: Sequence[str] = (), int16: Sequence[str] = (),
             input_names: Sequence[str] | None = None) -> bytes:
    """ai-edge-quantizer's recipe for `mode` on the float flatbuffer, calibrated sample by sample; the operators
    producing the tensors named in `keep_float` are left in float (its NO_QUANTIZE algorithm), those named in
    `int16` get int16 activations (its int16x8 recipe, for them alone). The calibration arrays go to the
    signature's inputs named `input_names`, in order (default litert-torch's args_0, args_1, ...).

    Both PyTorch and ONNX sources are quantized here: on a YOLOv8 head its int8 keeps the detections where
    TensorFlow's converter, from the same float model, loses half of them (tests/test_detectors.py)."""
    import contextlib
    import io

    from ai_edge_quantizer import quantizer, recipe

    from edgert.tflite.flatbuffer import parse
    from edgert.runtime.native import native_log_captured

    signature = parse(flatbuffer, "the converted model").main_signature()
    names = [name for name, _ in signature.inputs] if signature else [f"args_{i}" for i in range(inputs)]
    try:
        with native_log_captured(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
                io.StringIO()):
            rules = getattr(recipe, _RECIPES[mode])()
            if int16:
                wider = recipe.static_wi8_ai16()[0]
                rules = rules + [dict(wider, regex=_scope(int16))]
            qt = quantizer.Quantizer(bytearray(flatbuffer), rules)
            if keep_float:
                from ai_edge_quantizer import algorithm_manager, qtyping

                qt.update_quantization_recipe(regex=_scope(keep_float),
                                              operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                              algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
            result = None
            if mode.needs_calibration:
                # litert-torch names the inputs args_0, args_1, ... in the order the module takes them
                order = list(input_names) if input_names else sorted(
                    names, key=lambda n: int(n.rsplit("_", 1)[-1]) if n.rsplit("_", 1)[-1].isdigit() else 0)
                samples = [{name: a[i:i + 1] for name, a in zip(order, calibration)}
                           for i in range(len(calibration[0]))]
                result = qt.calibrate({signature.key if signature else "serving_default": samples})
            quantized = qt.quantize(result).quantized_model
    except Exception as exc:
        raise ConversionError(f"ai-edge-quantizer could not quantize the model to {mode.value} ({brief(exc, 240)})"
                              + ("; try --route onnx" if input_names is None else "")) from None
    notes.append(f"quantized by ai-edge-quantizer ({_RECIPES[mode]})")
    return bytes(quantized)


def open_module(path: Path, module, layout: str) -> Opened:
    """A loaded PyTorch module on this route: its inputs and outputs moved to `layout` by a wrapper module, the
    reference run in torch, and the conversion litert-torch does itself."""
    from edgert.converters.foreign import layout as lay
    from edgert.converters.signature import IONames
    from edgert.converters.sources import InputShape, Opened, SourceModel

    source_out = module.run(module.example)
    moved_in = [i for i, a in enumerate(module.example) if lay.wanted(a.ndim, layout)]
    moved_out = [i for i, a in enumerate(source_out.values()) if lay.wanted(a.ndim, layout)]
    wrapped = channel_last_module(module.module, moved_in, moved_out)
    example = [lay.to_last(a) if i in moved_in else a for i, a in enumerate(module.example)]
    inputs = tuple(InputShape(name, a.shape[1:], src.shape[1:] if i in moved_in else None)
                   for i, (name, a, src) in enumerate(zip(module.names.inputs, example, module.example)))
    out_shapes = [lay.last_shape(a.shape) if i in moved_out else a.shape for i, a in enumerate(source_out.values())]

    def reference(samples):
        arrays = [lay.to_first(a) if i in moved_in else a for i, a in enumerate(samples)]
        outputs = lay.per_sample(module.run, arrays)
        return {k: lay.to_last(v) if i in moved_out else v for i, (k, v) in enumerate(outputs.items())}

    def converts(mode, calibration, notes, keep_float=(), int16=()):
        return convert(wrapped, example, mode, calibration, notes, keep_float, int16)

    source = SourceModel(path, "foreign", inputs, framework="torch", names=module.names, described=module.label,
                         size=module.size_bytes)
    model_names = IONames(tuple(f"args_{i}" for i in range(len(example))),
                          tuple(f"output_{i}" for i in range(len(out_shapes))))
    lines = (lay.layout_lines(module.names.inputs, [a.shape for a in module.example], [a.shape for a in example])
             + lay.layout_lines(module.names.outputs, [a.shape for a in source_out.values()], out_shapes))
    return Opened(source, reference, "PyTorch", converts, model_names, "litert-torch", lines)
