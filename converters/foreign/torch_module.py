"""A PyTorch module as the user gives it: `FILE.py:FACTORY`, optional `--weights` (a state dict, loaded with
`weights_only=True`), example inputs and the names of its inputs and outputs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgert.converters.signature import IONames
from edgert.errors import ConversionError, InputDataError, ModelFormatError, brief

TORCH_EXTRA = ("PyTorch modules need the [torch] extra: pip install 'edgert[torch]' (torch 2.13.0's CPU build: "
               "add --extra-index-url https://download.pytorch.org/whl/cpu where no local wheel provides it)")
# Where a checkpoint keeps the state dict, in the layouts training scripts save (Lightning, timm, torchvision).
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "ema")


def import_torch():
    try:
        import torch
    except ImportError as exc:
        raise ConversionError(f"{TORCH_EXTRA} ({exc.name or 'torch'} is not installed)") from None
    return torch


@dataclass
class TorchModule:
    """A module ready to convert: evaluated, with its weights, example inputs (batch included) and names."""

    module: Any
    example: tuple[np.ndarray, ...]
    names: IONames
    label: str
    notes: tuple[str, ...] = ()

    @property
    def size_bytes(self) -> int:
        """The module's parameters and buffers, as torch holds them."""
        return sum(t.numel() * t.element_size() for t in self.module.state_dict().values())

    def run(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """The module's outputs by name, for inputs in its own layout."""
        torch = import_torch()
        with torch.no_grad():
            result = self.module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        return dict(zip(self.names.outputs, (t.detach().numpy() for t in flatten(result))))


def flatten(result) -> list:
    """A module's result as a flat list of tensors: a tensor, a tuple or list (a namedtuple), or a dict."""
    if isinstance(result, dict):
        return [t for v in result.values() for t in flatten(v)]
    if isinstance(result, (tuple, list)):
        return [t for v in result for t in flatten(v)]
    return [result]


def _output_names(result) -> list[str] | None:
    if isinstance(result, dict) and all(not isinstance(v, (dict, list, tuple)) for v in result.values()):
        return [str(k) for k in result]
    fields = getattr(type(result), "_fields", None)
    if fields and len(fields) == len(flatten(result)):
        return list(fields)
    return None


def load_module(path: Path, factory: str, *, weights: str | Path | None = None, trust_model: bool = False,
                input_shapes: Sequence[tuple[str | None, tuple[int, ...]]] = ()) -> TorchModule:
    """Import `path`, call `factory()` and make the module it returns ready to convert.

    The factory returns a `torch.nn.Module` or `(module, example_inputs)`. Example inputs come from
    `input_shapes` (each batch included, optionally named), else that tuple, else an `example_inputs` attribute of
    the module or the file (a tensor, a tuple of them, or a function returning either). Names come from
    `input_names`/`output_names` on the module or in the file, else the parameters of `forward` and the keys (or
    namedtuple fields) of what it returns, else `output_0, ...`.

    Raises:
        InputDataError: a missing file or factory, a factory that fails, weights that are not a state dict or do
            not fit, no way to know the input shapes.
        ModelFormatError: a checkpoint that needs unpickling arbitrary objects, without `trust_model`.
    """
    from edgert.converters.custom_objects import import_user_file

    torch = import_torch()
    what = f"{path}:{factory}"
    if not path.is_file():
        raise InputDataError(f"{path}: no such file (give a PyTorch module as FILE.py:FACTORY)")
    code = import_user_file(path, "the module file")
    make = getattr(code, factory, None)
    if not callable(make):
        found = [n for n, v in vars(code).items() if inspect.isfunction(v) and v.__module__ == code.__name__]
        raise InputDataError(f"{path} has no function '{factory}'" + (f"; it defines {', '.join(found[:8])}"
                                                                      if found else ""))
    try:
        made = make()
    except Exception as exc:  # the user's code: one line with its error
        raise InputDataError(f"{what}() failed: {type(exc).__name__}: {brief(exc, 200)}") from None
    example = None
    if isinstance(made, tuple) and len(made) == 2 and isinstance(made[0], torch.nn.Module):
        made, example = made
    if not isinstance(made, torch.nn.Module):
        raise InputDataError(f"{what}() returned {type(made).__name__}; it must return a torch.nn.Module "
                             "(or a (module, example_inputs) tuple)")
    module = made
    notes = []
    if weights is not None:
        import sys

        folder = str(path.resolve().parent)
        sys.path.insert(0, folder)  # a pickled checkpoint names the modules beside the file (trusted only)
        try:
            notes.extend(_load_weights(torch, module, Path(weights), what, trust_model))
        finally:
            sys.path.remove(folder)
    module.eval()

    declared_inputs = getattr(module, "input_names", None) or getattr(code, "input_names", None)
    if input_shapes:
        example = tuple(torch.rand(shape, generator=torch.Generator().manual_seed(0)) for _, shape in input_shapes)
        if all(name for name, _ in input_shapes):
            declared_inputs = [name for name, _ in input_shapes]
    elif example is None:
        example = getattr(module, "example_inputs", None)
        if example is None:
            example = getattr(code, "example_inputs", None)
        if callable(example):
            example = example()
        if example is None:
            raise InputDataError(f"{what}: the input shapes are unknown; give them with --input-shape 1,3,224,224 "
                                 f"(once per input), or define example_inputs in {path.name}")
    if isinstance(example, torch.Tensor):
        example = (example,)
    example = tuple(example)
    if not all(isinstance(t, torch.Tensor) for t in example):
        raise InputDataError(f"{what}: example_inputs must be a tensor or a tuple of tensors")
    try:
        with torch.no_grad():
            result = module(*example)
    except Exception as exc:
        shapes = ", ".join(str(tuple(t.shape)) for t in example)
        raise InputDataError(f"{what}: the module fails on inputs of shape {shapes}: {type(exc).__name__}: "
                             f"{brief(exc, 200)}") from None
    count = len(flatten(result))
    inputs = _names(declared_inputs, _forward_names(module, len(example)), len(example), "input", what)
    outputs = _names(getattr(module, "output_names", None) or getattr(code, "output_names", None),
                     _output_names(result), count, "output", what)
    label = f"PyTorch {torch.__version__.split('+')[0]} module ({path.name}:{factory})"
    return TorchModule(module, tuple(t.detach().numpy() for t in example), IONames(inputs, outputs), label,
                       tuple(notes))


def _forward_names(module, count: int) -> list[str] | None:
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    plain = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return plain[:count] if len(plain) >= count else None


def _names(declared, found, count: int, prefix: str, what: str) -> tuple[str, ...]:
    if declared is not None:
        declared = [str(n) for n in declared]
        if len(declared) != count or len(set(declared)) != count:
            raise InputDataError(f"{what}: {prefix}_names lists {len(declared)} distinct name(s) for {count} "
                                 f"{prefix}(s)")
        return tuple(declared)
    if found and len(set(found)) == count:
        return tuple(found)
    return tuple(f"{prefix}_{i}" for i in range(count))


def _load_weights(torch, module, path: Path, what: str, trust_model: bool) -> list[str]:
    if not path.is_file():
        raise InputDataError(f"--weights {path}: no such file")
    notes = []
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for pickled objects, RuntimeError for files of another kind
        text = brief(exc, 300)
        if "weights_only" not in text and "Unpickl" not in type(exc).__name__:
            raise InputDataError(f"--weights {path} is not a PyTorch checkpoint ({brief(exc, 160)})") from None
        if not trust_model:
            raise ModelFormatError(f"--weights {path} is not a plain state dict: loading it would unpickle Python "
                                   "objects (run code); save model.state_dict() instead, or pass --trust-model if "
                                   "you trust where the file came from") from None
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except ImportError as exc:
            raise InputDataError(f"--weights {path} needs the module '{exc.name}' to unpickle; save "
                                 "model.state_dict() instead, or run where that module imports") from None
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    if isinstance(state, dict) and not _is_state_dict(torch, state):
        for key in _STATE_KEYS:
            if _is_state_dict(torch, state.get(key)):
                notes.append(f"--weights: took the checkpoint's '{key}' entry")
                state = state[key]
                break
    if not _is_state_dict(torch, state):
        held = sorted(map(str, state))[:6] if isinstance(state, dict) else type(state).__name__
        raise InputDataError(f"--weights {path} is not a state dict (it holds {held}); save "
                             "model.state_dict() with torch.save")
    own = module.state_dict()
    for key, tensor in own.items():
        if key not in state:
            raise InputDataError(f"--weights {path} does not fit {what}(): first mismatch '{key}' (missing from "
                                 "the file)")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise InputDataError(f"--weights {path} does not fit {what}(): first mismatch '{key}' (shape "
                                 f"{tuple(state[key].shape)} in the file, {tuple(tensor.shape)} in the module)")
    extra = [k for k in state if k not in own]
    if extra:
        raise InputDataError(f"--weights {path} does not fit {what}(): first mismatch '{extra[0]}' (in the file, "
                             "not in the module)")
    module.load_state_dict(state, strict=True)
    return notes


def _is_state_dict(torch, value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())
