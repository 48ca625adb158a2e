"""Reading and writing .npy/.npz arrays safely: never unpickling, always atomically."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import numpy as np

from edgert.errors import InputDataError

if TYPE_CHECKING:
    from edgert.tflite.info import TensorSpec


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a .npy (returned under the name `x`) or .npz file; object arrays are refused, never unpickled.

    Raises:
        InputDataError: missing, unreadable, of another format, or holding Python objects.
    """
    p = os.fspath(path)  # os.path, not pathlib: `edgert run --input` on a board does not pay for pathlib's import
    suffix = os.path.splitext(p)[1]
    if not os.path.isfile(p):
        raise InputDataError(f"{p}: no such file")
    if suffix not in (".npy", ".npz"):
        raise InputDataError(f"{p}: use a .npy or .npz file (numpy.save / numpy.savez)")
    try:
        if suffix == ".npy":
            with open(p, "rb") as f:
                if f.read(6) != b"\x93NUMPY":  # numpy would call anything else pickled data
                    raise InputDataError(f"{p} is not a .npy file (no NumPy header); save arrays with numpy.save")
            return {"x": np.load(p, allow_pickle=False)}
        import zipfile  # only for .npz: its import (shutil, bz2, lzma) costs a board's start-up

        try:
            with np.load(p, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except zipfile.BadZipFile as exc:
            raise OSError(exc) from None
    except ValueError as exc:
        if "pickle" in str(exc):
            raise InputDataError(f"{p} holds Python objects; save plain numeric arrays with numpy.save") from None
        raise InputDataError(f"{p} is not a readable {suffix} file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise InputDataError(f"{p} is not a readable {suffix} file ({exc})") from None
    if not arrays:
        raise InputDataError(f"{p} holds no arrays")
    return arrays


def match_inputs(arrays: dict[str, np.ndarray], specs, source: str | os.PathLike):
    """Arrays read from `source` arranged for `Model.run`: one array, a list in input order, or a dict by name
    (each key an input's signature name or its tensor name).

    Raises:
        InputDataError: the file's arrays do not map onto the model's inputs.
    """
    names = [s.name for s in specs]
    if len(arrays) == 1 and len(names) == 1:
        return next(iter(arrays.values()))
    known = {n for s in specs for n in (s.name, s.tensor_name)}
    if len(arrays) == len(names) and set(arrays) <= known:
        return arrays
    if len(arrays) == len(names) and all(k == f"arr_{i}" for i, k in enumerate(arrays)):
        return list(arrays.values())
    raise InputDataError(f"{source} holds {sorted(arrays)}; the model's inputs are {names}: "
                         "save an .npz with one array per input name")


def to_model_layout(inputs, model) -> tuple[object, list[str]]:
    """`inputs` (as `match_inputs` arranges them) with each array that a channel-first source took in its own
    layout (NCHW, where the model takes NHWC: `Model.channel_first_inputs`) transposed, and a line saying so for
    each. Arrays already in the model's shape are left alone."""
    moved = set(getattr(model, "channel_first_inputs", ()))
    if not moved:
        return inputs, []
    specs = model.inputs
    notes: list[str] = []

    def fixed(spec, a):
        a = np.asarray(a)
        if spec.name not in moved and spec.tensor_name not in moved or a.ndim != len(spec.shape) or a.ndim < 3:
            return a
        first = (spec.shape[0], spec.shape[-1], *spec.shape[1:-1])
        if tuple(a.shape[1:]) == tuple(first[1:]) and tuple(a.shape[1:]) != tuple(spec.shape[1:]):
            notes.append(f"input '{spec.name}': {tuple(a.shape)} is in the source's channel-first layout; "
                         f"transposed to the model's channel-last")
            return np.ascontiguousarray(np.moveaxis(a, 1, -1))
        return a

    if isinstance(inputs, dict):
        by_name = {n: s for s in specs for n in (s.name, s.tensor_name)}
        return {k: fixed(by_name[k], v) for k, v in inputs.items()}, notes
    if isinstance(inputs, list):
        return [fixed(s, a) for s, a in zip(specs, inputs)], notes
    return fixed(specs[0], inputs), notes


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write one array to a .npy, or several by name to a .npz, atomically."""
    from edgert.files import atomic_path

    with atomic_path(path) as tmp:
        with tmp.open("wb") as f:
            if os.path.splitext(path)[1] == ".npy":
                (array,) = arrays.values()
                np.save(f, array, allow_pickle=False)
            else:
                np.savez(f, **arrays)


def random_inputs(specs: Sequence[TensorSpec], seed: int = 0) -> list[np.ndarray]:
    """Seeded inputs in each input's own dtype (int8 models get int8, not floats to quantize on every run)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in specs:
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            arrays.append(rng.uniform(-1.0, 1.0, spec.shape).astype(dtype))
        elif dtype.kind in "iu":
            info = np.iinfo(dtype)
            low, high = max(info.min, -(2**31)), min(info.max, 2**31 - 1)
            arrays.append(rng.integers(low, high, spec.shape, endpoint=True).astype(dtype))
        elif dtype.kind == "b":
            arrays.append(rng.integers(0, 2, spec.shape).astype(bool))
        else:
            raise InputDataError(f"input '{spec.name}' is {dtype.name}: pass real inputs with --input")
    return arrays
