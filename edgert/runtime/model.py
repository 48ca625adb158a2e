"""`edgert.load` and `Model`: a validated TFLite model with float-in, float-out inference."""

from __future__ import annotations

import os
import threading
from typing import Callable, Mapping, Sequence, Union

import numpy as np

from edgert.runtime.backend import Backend, get_backend
from edgert.runtime.delegation import DelegateRequest, DelegationReport, open_model, parse_request
from edgert.errors import InferenceError, InputDataError, ModelFormatError, UnsupportedOperatorError, brief
from edgert.tflite.flatbuffer import check_batch, parse
from edgert.tflite.info import ModelInfo, TensorSpec, describe, read_model_bytes

Inputs = Union[np.ndarray, Sequence[np.ndarray], Mapping[str, np.ndarray]]


class _Slot:
    """Per-tensor facts precomputed once so `run` does no lookups on the hot path (a plain class: a dataclass
    would cost start-up time, see flatbuffer.py)."""

    __slots__ = ("spec", "dtype", "scale", "zero_point", "qmin", "qmax", "scratch")

    def __init__(self, spec: TensorSpec, dtype: np.dtype, scale: float = 0.0, zero_point: int = 0, qmin: int = 0,
                 qmax: int = 0):
        self.spec, self.dtype, self.scale, self.zero_point, self.qmin, self.qmax = (
            spec, dtype, scale, zero_point, qmin, qmax)
        self.scratch: np.ndarray | None = None  # float32 buffer reused for quantizing inputs (under the run lock)

    @classmethod
    def of(cls, spec: TensorSpec) -> _Slot:
        dtype = np.dtype(spec.dtype)
        if not spec.quantized:
            return cls(spec, dtype)
        info = np.iinfo(dtype)
        return cls(spec, dtype, float(spec.scale[0]), int(spec.zero_point[0]), info.min, info.max)

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0


def _spec_from_details(d: dict, names: Mapping[int, str]) -> TensorSpec:
    q = d.get("quantization_parameters") or {}
    scales = tuple(float(s) for s in q.get("scales", ()))
    index = int(d["index"])
    return TensorSpec(
        name=names.get(index) or d["name"], shape=tuple(int(x) for x in d["shape"]), dtype=np.dtype(d["dtype"]).name,
        index=index, shape_signature=tuple(int(x) for x in d.get("shape_signature", d["shape"])),
        scale=scales, zero_point=tuple(int(z) for z in q.get("zero_points", ())),
        quantized_dimension=int(q.get("quantized_dimension", 0)), tensor_name=d["name"],
    )


class Model:
    """A TFLite model loaded into an interpreter (or a LiteRT compiled model), with its delegates.

    `run` is safe to call from several threads: calls are serialised by a lock, since one TFLite interpreter
    holds one set of input and output buffers. `delegation` says which delegate runs which operators.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int | None = None,
                 delegate: str | Sequence[str] | DelegateRequest | None = None,
                 delegate_options: Sequence[str] | Mapping[str, str] = (), delegate_lib: str | None = None,
                 strict: bool = False):
        if threads is not None and threads < 1:
            raise InputDataError(f"threads must be at least 1, got {threads}")
        self.path = str(path)
        data = read_model_bytes(path)
        flat = parse(data, self.path)  # validates the flatbuffer before native code sees it
        self.info: ModelInfo = describe(data, self.path, flat)
        self._flat = flat
        self._names = flat.signature_names()  # tensor index -> the signature's name for it
        self.channel_first_inputs = _channel_first_inputs(flat, data)
        self._check_planned_sizes(None)  # before the interpreter allocates anything
        self.backend: Backend = get_backend()
        self.threads = threads
        request = delegate if isinstance(delegate, DelegateRequest) else parse_request(
            delegate, delegate_options, delegate_lib, strict)
        # The interpreter gets the very bytes that were validated, not the path (nothing can change between).
        opened = open_model(data, flat, request, threads, self.backend.interpreter_class,
                            self._load_error)
        self._interpreter = opened.engine
        self._binding = opened.binding  # holds the native delegates for as long as the interpreter lives
        self.delegation: DelegationReport = opened.report
        self._lock = threading.Lock()
        self._refresh_slots()

    def _check_planned_sizes(self, resized: tuple[int, ...] | None) -> None:
        """Refuse a batch that makes some activation bigger than the limit: every declared size was checked in the
        file, but a huge batch on the input makes every batch-dynamic tensor huge too (found by fuzzing)."""
        shapes = [resized] if resized else [s.shape for s in self.info.inputs]
        batch = max((s[0] for s in shapes if s), default=1)
        check_batch(self._flat, batch, self.path)

    def _load_error(self, exc: Exception) -> Exception:
        native = " ".join(str(exc).split())
        custom = self.info.custom_operators
        if custom or "custom op" in native.lower():
            names = ", ".join(custom) or "unknown"
            return UnsupportedOperatorError(
                f"{self.path} uses custom operator(s) {names} that {self.backend.name} does not know; "
                "register them (or load the delegate that provides them) or convert without custom ops",
                tuple(custom))
        return ModelFormatError(f"{self.path}: the interpreter rejected the model: {brief(native, 300)}")

    def _refresh_slots(self) -> None:
        it = self._interpreter
        self._in = [_Slot.of(_spec_from_details(d, self._names)) for d in it.get_input_details()]
        self._out = [_Slot.of(_spec_from_details(d, self._names)) for d in it.get_output_details()]
        # Inputs by signature name, and by tensor name as an alias where that does not shadow a signature name.
        self._by_name = {s.spec.tensor_name: i for i, s in enumerate(self._in)}
        self._by_name.update({s.spec.name: i for i, s in enumerate(self._in)})

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(s.spec for s in self._in)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(s.spec for s in self._out)

    def __repr__(self) -> str:
        return (f"Model({self.path!r}, backend={self.backend.name}, delegate={self.delegation.used}, "
                f"inputs={len(self._in)}, outputs={len(self._out)})")

    # -- inference ---------------------------------------------------------------------------------------------

    def output_index(self, name: str) -> int:
        """The position in `outputs` (and in `run`'s list) of the output called `name`: its signature name or its
        tensor name.

        Raises:
            InputDataError: no output has that name (the message lists the names there are).
        """
        for by in ("name", "tensor_name"):
            for i, s in enumerate(self._out):
                if getattr(s.spec, by) == name:
                    return i
        raise InputDataError(f"the model has no output '{name}'; its outputs are "
                             f"{', '.join(s.spec.name for s in self._out)}")

    def run_by_name(self, inputs: Inputs, *, raw: bool = False) -> dict[str, np.ndarray]:
        """`run`, with the outputs in a dict by name (the signature's names; tensor names in a file without one)."""
        return dict(zip((s.spec.name for s in self._out), self.run(inputs, raw=raw)))

    def run(self, inputs: Inputs, *, raw: bool = False) -> list[np.ndarray]:
        """Run one inference.

        Args:
            inputs: one array (single-input models), a sequence in input order, or a mapping by input name (the
                signature's names, or the tensor names as aliases).
                Quantized inputs take float arrays, which are quantized with the input's scale and zero point,
                or arrays of the input's own integer dtype, which are passed through untouched.
            raw: return outputs as the model stores them (int8 for full-integer models) instead of dequantized.

        Returns:
            The outputs in model order, float32 unless `raw` (or the output is not quantized); `run_by_name`
            returns them by name.

        Raises:
            InputDataError: the inputs do not match the model's in count, name, shape or dtype.
            InferenceError: the interpreter failed while running.
        """
        arrays = self._bind(inputs)
        it = self._interpreter
        with self._lock:
            changed = [(slot, a.shape) for slot, a in zip(self._in, arrays) if a.shape != slot.spec.shape]
            if changed:
                self._resize(changed)  # all inputs at once: one input's new batch alone may not fit the graph
            for slot, array in zip(self._in, arrays):
                it.set_tensor(slot.spec.index, self._prepare(slot, array))
            try:
                it.invoke()
                outputs = [it.get_tensor(s.spec.index) for s in self._out]
            except (RuntimeError, ValueError) as exc:  # ValueError: an output with no data (found by fuzzing)
                raise InferenceError(f"{self.path}: inference failed: {brief(exc, 300)}") from None
        if raw:
            return outputs
        return [(o.astype(np.float32) - s.zero_point) * np.float32(s.scale) if s.quantized else o
                for s, o in zip(self._out, outputs)]

    def prepare(self, inputs: Inputs) -> Callable[[], list[np.ndarray]]:
        """Check and convert `inputs` once, and return a function that runs the model on them.

        The function does only what each inference must (set the inputs, invoke, read the outputs as the model
        stores them) under the same lock as `run`: what a benchmark or a fixed-input loop should time.

        Raises:
            InputDataError: as `run`. The returned function raises InferenceError.
        """
        self.run(inputs, raw=True)  # validates, converts and resizes exactly as run does, once
        arrays = [self._prepare(slot, array) for slot, array in zip(self._in, self._bind(inputs))]
        pairs = [(slot.spec.index, array) for slot, array in zip(self._in, arrays)]
        out_indices = [s.spec.index for s in self._out]
        it, lock = self._interpreter, self._lock

        def run_prepared() -> list[np.ndarray]:
            with lock:
                try:
                    for index, array in pairs:
                        it.set_tensor(index, array)
                    it.invoke()
                    return [it.get_tensor(i) for i in out_indices]
                except (RuntimeError, ValueError) as exc:
                    raise InferenceError(f"{self.path}: inference failed: {brief(exc, 300)}") from None

        return run_prepared

    def quantize_inputs(self, inputs: Inputs) -> list[np.ndarray]:
        """The inputs as the model stores them, in input order: float arrays for quantized inputs are quantized
        with each input's scale and zero point, exactly as `run` would, and `run` passes the results through
        untouched. Safe to call from any thread, outside the run lock (a server quantizes while the interpreter
        runs the previous request).

        Raises:
            InputDataError: as `run` (count, name or dtype).
        """
        return [self._prepare(slot, array, fresh=True) for slot, array in zip(self._in, self._bind(inputs))]

    def _bind(self, inputs: Inputs) -> list[np.ndarray]:
        n = len(self._in)
        if isinstance(inputs, Mapping):
            arrays: list = [None] * n
            unknown, twice = [], []
            for key, value in inputs.items():
                position = self._by_name.get(key)
                if position is None:
                    unknown.append(key)
                elif arrays[position] is not None:
                    twice.append(self._in[position].spec.name)
                else:
                    arrays[position] = value
            missing = [s.spec.name for s, a in zip(self._in, arrays) if a is None]
            if unknown or missing or twice:
                raise InputDataError(
                    f"inputs by name must be exactly {[s.spec.name for s in self._in]}; "
                    f"unknown: {sorted(map(str, unknown)) or 'none'}, missing: {missing or 'none'}"
                    + (f", given twice (by name and by tensor name): {twice}" if twice else ""))
            return [np.asarray(a) for a in arrays]
        if isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
            if n != 1:
                raise InputDataError(f"the model has {n} inputs; pass a list or a dict by name, not one array")
            return [np.asarray(inputs)]
        if len(inputs) != n:
            raise InputDataError(f"the model has {n} input(s); got {len(inputs)} arrays")
        return [np.asarray(a) for a in inputs]

    @staticmethod
    def _prepare(slot: _Slot, array: np.ndarray, *, fresh: bool = False) -> np.ndarray:
        """`array` in the input's stored type. The quantizing buffer is the slot's (callers hold the run lock) or,
        when `fresh`, a new one."""
        if array.dtype == slot.dtype:
            return array
        kind = array.dtype.kind
        if slot.quantized and kind == "f":
            buf = None if fresh else slot.scratch
            if buf is None or buf.shape != array.shape:
                buf = np.empty(array.shape, np.float32)
                if not fresh:
                    slot.scratch = buf
            np.divide(array, np.float32(slot.scale), out=buf, casting="unsafe")
            np.rint(buf, out=buf)
            np.add(buf, slot.zero_point, out=buf)
            np.clip(buf, slot.qmin, slot.qmax, out=buf)
            return buf.astype(slot.dtype)
        if slot.dtype.kind == "f" and kind in "fiub":
            return array.astype(slot.dtype)
        if slot.dtype.kind in "iu" and kind in "iub" and np.can_cast(array.dtype, slot.dtype):
            return array.astype(slot.dtype)
        hint = " (quantized: pass float values or the model's integer type)" if slot.quantized else ""
        raise InputDataError(
            f"input '{slot.spec.name}' expects {slot.dtype.name}{hint}; got {array.dtype.name}")

    def _resize(self, changed: list[tuple[_Slot, tuple[int, ...]]]) -> None:
        for slot, shape in changed:
            spec, expected = slot.spec, slot.spec.shape
            fixed = [i for i, (a, b) in enumerate(zip(shape, expected))
                     if a != b and i != 0 and i not in spec.dynamic_dims]
            if len(shape) != len(expected) or fixed:
                raise InputDataError(
                    f"input '{spec.name}' expects shape {expected}; got {tuple(shape)}"
                    + (" (only the batch dimension can change)" if len(shape) == len(expected) else ""))
        it = self._interpreter
        try:
            for slot, shape in changed:
                it.resize_tensor_input(slot.spec.index, list(shape), strict=False)
            it.allocate_tensors()
            self._check_planned_sizes(max((tuple(shape) for _, shape in changed), key=lambda s: s[0] if s else 1))
        except (ValueError, RuntimeError, ModelFormatError) as exc:
            for slot, _ in changed:
                it.resize_tensor_input(slot.spec.index, list(slot.spec.shape), strict=False)
            it.allocate_tensors()
            planned = str(exc).partition(": tensor ")[2]
            why = f"tensor {planned}" if planned else brief(exc, 200)
            names = ", ".join(f"'{slot.spec.name}'" for slot, _ in changed)
            shapes = ", ".join(f"{slot.spec.shape} to {tuple(shape)}" for slot, shape in changed)
            raise InputDataError(f"input {names} cannot be resized from {shapes}: {why}") from None
        self._refresh_slots()

def load(path: str | os.PathLike, threads: int | None = None, *,
         delegate: str | Sequence[str] | None = None, delegate_options: Sequence[str] | Mapping[str, str] = (),
         delegate_lib: str | None = None, strict: bool = False) -> Model:
    """Load a `.tflite` model, validating it first, with delegates tried in priority order.

    Args:
        delegate: `"xnnpack"` (default), `"gpu"`, `"nnapi"`, `"edgetpu[:usb:0]"`, `"external"`, a list or
            comma-separated priority order, or `"auto"`. A delegate that cannot be used is skipped with its reason
            in `model.delegation`; when none can, the CPU default runs the model (`delegation.fallback`).
        delegate_options: `key=value` strings or a mapping; `name.key=value` targets one delegate.
        delegate_lib: a TFLite external delegate library (implies the `external` delegate).
        strict: make any fallback, or any operator left on the CPU, an error.

    Raises:
        ModelFormatError: missing file, not a TFLite model, or rejected by the interpreter.
        UnsupportedOperatorError: the model needs custom operators that are not registered (named).
        DelegateError: unknown delegate or malformed option. DelegateUnavailableError: `strict` refused.
    """
    return Model(path, threads=threads, delegate=delegate, delegate_options=delegate_options,
                 delegate_lib=delegate_lib, strict=strict)


def _channel_first_inputs(flat, data: bytes) -> tuple[str, ...]:
    """The inputs this model takes channel-last where its source (PyTorch, ONNX) took them channel-first, as
    `edgert convert` records them: arrays in the source's layout are transposed for the user (`arrays.
    to_model_layout`)."""
    for name, index in flat.metadata:
        if name == "edgert_source_layout":
            import json  # only for such a file: start-up pays nothing

            try:
                return tuple(str(n) for n in json.loads(flat.buffer(data, index))["channel_first_inputs"])
            except (ValueError, KeyError, TypeError, IndexError):
                return ()
    return ()
