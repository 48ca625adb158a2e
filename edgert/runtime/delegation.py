"""Choosing delegates with honest fallback, building the interpreter or compiled model, and the DelegationReport."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from edgert.errors import DelegateError, DelegateUnavailableError, EdgertError, InputDataError, brief
from edgert.tflite.records import FlatModel
from edgert.runtime.native import native_log_captured

DEFAULT_DELEGATE = "xnnpack"
# `--delegate auto` where no device profile applies: the accelerators first, the CPU last.
AUTO_ORDER = ("edgetpu", "nnapi", "gpu", "xnnpack")


def auto_order() -> tuple[str, ...]:
    """The delegate order `--delegate auto` tries: the profile named by `EDGERT_DEVICE`, else the detected board's
    (with attached accelerators first), else `AUTO_ORDER`.

    Raises:
        DeviceProfileError: `EDGERT_DEVICE` names no profile.
    """
    import os

    from edgert.devices import detect, profiles

    name = os.environ.get("EDGERT_DEVICE", "").strip()
    if name:
        return profiles.get(name).delegates
    return detect.detect().delegates or AUTO_ORDER


@dataclass(frozen=True)
class Skipped:
    """A requested delegate that did not take the model, and why."""

    name: str
    reason: str

    def to_dict(self) -> dict:
        return {"name": self.name, "reason": self.reason}


@dataclass(frozen=True)
class DelegationReport:
    """Which delegate ran the model and how many of its operators it took.

    `delegated_ops` is None where the runtime does not say (a partially accelerated LiteRT model without counts);
    `cpu_ops` names the operators left to the CPU kernels (`OPCODE#index`), `xnnpack_ops` how many of those the
    CPU ran through XNNPACK rather than the reference kernels.
    """

    requested: tuple[str, ...]
    used: str
    engine: str
    detail: str
    total_ops: int
    delegated_ops: int | None
    cpu_ops: tuple[str, ...] = ()
    xnnpack_ops: int = 0
    partitions: int = 0
    skipped: tuple[Skipped, ...] = ()
    fallback: bool = False  # nothing requested could be used; the CPU default ran it
    notes: tuple[str, ...] = field(default=())

    @property
    def fully_delegated(self) -> bool:
        return self.delegated_ops == self.total_ops

    def describe(self) -> str:
        """One line for terminals: `gpu (LiteRT GPU, precision fp16): 65/65 operators; skipped edgetpu: ...`."""
        if self.delegated_ops is None:
            share = f"partially accelerated, {len(self.cpu_ops)} operator(s) reported on the CPU"
        else:
            share = f"{self.delegated_ops}/{self.total_ops} operators"
        line = f"{self.used} ({self.detail}): {share}" if self.detail else f"{self.used}: {share}"
        if self.cpu_ops:
            shown = ", ".join(self.cpu_ops[:8]) + (f", +{len(self.cpu_ops) - 8} more" if len(self.cpu_ops) > 8 else "")
            line += f"; on the CPU: {shown}"
        if self.fallback:
            line += "; FALLBACK to the CPU"
        for s in self.skipped:
            line += f"; skipped {s.name}: {s.reason}"
        return line

    def to_dict(self) -> dict:
        return {
            "requested": list(self.requested), "used": self.used, "engine": self.engine, "detail": self.detail,
            "total_ops": self.total_ops, "delegated_ops": self.delegated_ops, "cpu_ops": list(self.cpu_ops),
            "xnnpack_ops": self.xnnpack_ops, "partitions": self.partitions, "fully_delegated": self.fully_delegated,
            "fallback": self.fallback, "skipped": [s.to_dict() for s in self.skipped], "notes": list(self.notes),
        }


@dataclass(frozen=True)
class DelegateRequest:
    """Delegates in priority order with their options (`name -> {key: value}`), and whether fallback is an error."""

    names: tuple[str, ...] = (DEFAULT_DELEGATE,)
    options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    strict: bool = False
    auto: bool = False


def parse_request(delegate: str | Sequence[str] | None = None, options: Sequence[str] | Mapping[str, str] = (),
                  library: str | None = None, strict: bool = False) -> DelegateRequest:
    """Turn `--delegate gpu,xnnpack --delegate-option precision=fp32 --delegate-lib x.so` into a request.

    `NAME:SPEC` (e.g. `edgetpu:usb:0`) sets the delegate's `device` option. `key=value` options go to every
    requested delegate that declares the key; `name.key=value` to one. `library` alone implies `external`.

    Raises:
        DelegateError: unknown delegate (with the closest name), malformed or unknown option.
    """
    from edgert import delegates as registry

    if delegate is None or (not isinstance(delegate, str) and not delegate):
        raw = ["external"] if library else [DEFAULT_DELEGATE]
    elif isinstance(delegate, str):
        raw = [p for p in delegate.split(",")]
    else:
        raw = [p for d in delegate for p in d.split(",")]
    raw = [p.strip() for p in raw]
    if any(not p for p in raw):
        raise DelegateError("--delegate has an empty name; use e.g. --delegate gpu,xnnpack")
    per: dict[str, dict[str, str]] = {}
    names: list[str] = []
    auto = any(p.lower() == "auto" for p in raw)
    if auto:
        expanded = []
        for part in raw:
            # A profile may name delegates another installation lacks: auto skips those rather than failing.
            expanded += [a for a in auto_order() if a.partition(":")[0] in registry.plugins()] \
                if part.lower() == "auto" else [part]
        bases = [p.partition(":")[0].lower() for p in expanded]
        raw = [p for i, p in enumerate(expanded) if bases.index(bases[i]) == i]  # the first mention of each wins
    for part in raw:
        base, _, spec = part.partition(":")
        plugin = registry.get(base)
        if plugin.name not in names:
            names.append(plugin.name)
        if spec or part.endswith(":"):
            if "device" not in plugin.options:
                raise DelegateError(f"delegate {plugin.name} takes no device string ({part!r}); "
                                    f"use --delegate {plugin.name}")
            per.setdefault(plugin.name, {})["device"] = spec
    if library:
        if "external" not in names:
            names.append("external")
        per.setdefault("external", {})["library"] = library
    pairs = options.items() if isinstance(options, Mapping) else [_split_option(o) for o in options]
    for key, value in pairs:
        target, dot, short = key.partition(".")
        if dot and target in names:
            plugin = registry.get(target)
            if short not in plugin.options and not plugin.accepts_any_option:
                raise DelegateError(f"{plugin.name} has no option {short!r}; it has: "
                                    f"{', '.join(plugin.options) or 'none'}")
            per.setdefault(plugin.name, {})[short] = value
            continue
        takers = [n for n in names if key in registry.get(n).options or registry.get(n).accepts_any_option]
        if not takers:
            known = sorted({k for n in names for k in registry.get(n).options})
            raise DelegateError(f"no requested delegate ({', '.join(names)}) has an option {key!r}; "
                                f"known: {', '.join(known) or 'none'}")
        for n in takers:
            per.setdefault(n, {})[key] = value
    return DelegateRequest(tuple(names), per, strict, auto)


def _split_option(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key.strip() or any(c.isspace() for c in key.strip()):
        raise DelegateError(f"--delegate-option {text!r} is not key=value (e.g. --delegate-option precision=fp32)")
    return key.strip(), value.strip()


# -- the engines ---------------------------------------------------------------------------------------------


class CompiledEngine:
    """LiteRT's `CompiledModel` behind the few interpreter calls `Model` makes (set, invoke, get)."""

    def __init__(self, compiled, flat: FlatModel):
        self._cm = compiled
        graph = flat.subgraphs[0]
        signature = compiled.get_signature_by_index(0)
        key = signature["key"]
        in_details = compiled.get_input_tensor_details(key)
        out_details = compiled.get_output_tensor_details(key)
        self._in_pos = {int(in_details[n]["index"]): i for i, n in enumerate(signature["inputs"])}
        self._out_pos = {int(out_details[n]["index"]): i for i, n in enumerate(signature["outputs"])}
        self._tensors = graph.tensors
        self._inputs = compiled.create_input_buffers(0)
        self._outputs = compiled.create_output_buffers(0)
        self._input_order = list(graph.inputs)
        self._output_order = list(graph.outputs)
        missing = [i for i in (*graph.inputs, *graph.outputs) if i not in self._in_pos and i not in self._out_pos]
        if missing:
            raise DelegateUnavailableError(
                f"the compiled model's signature does not cover tensor(s) {missing} of the main subgraph")

    def allocate_tensors(self) -> None:
        pass

    def _details(self, order: list[int]) -> list[dict]:
        out = []
        for i in order:
            t = self._tensors[i]
            q = t.quantization
            out.append({
                "name": t.name, "index": i, "shape": np.array(t.shape, np.int32), "dtype": np.dtype(t.dtype),
                "shape_signature": np.array(t.shape_signature, np.int32),
                "quantization_parameters": {
                    "scales": np.array(q.scale if q else (), np.float32),
                    "zero_points": np.array(q.zero_point if q else (), np.int32),
                    "quantized_dimension": q.quantized_dimension if q else 0}})
        return out

    def get_input_details(self) -> list[dict]:
        return self._details(self._input_order)

    def get_output_details(self) -> list[dict]:
        return self._details(self._output_order)

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        self._inputs[self._in_pos[index]].write(np.ascontiguousarray(value))

    def invoke(self) -> None:
        self._cm.run_by_index(0, self._inputs, self._outputs)

    def get_tensor(self, index: int) -> np.ndarray:
        t = self._tensors[index]
        return self._outputs[self._out_pos[index]].read(int(np.prod(t.shape)), np.dtype(t.dtype)).reshape(t.shape)

    def resize_tensor_input(self, index: int, shape, strict: bool = False) -> None:
        t = self._tensors[index]
        raise InputDataError(f"input '{t.name}' expects shape {t.shape}; got {tuple(shape)} (a LiteRT compiled "
                             "model, as the gpu and xnnpack fp16 delegates use, keeps the shapes it was compiled with)")

    @property
    def fully_accelerated(self) -> bool:
        return self._cm.is_fully_accelerated()

    def __del__(self):
        # LiteRT logs every accelerator it tears down to fd 2; keep that off the user's terminal too.
        try:
            with native_log_captured():
                self._inputs = self._outputs = self._cm = None
        except Exception:  # interpreter shutdown: modules may already be gone
            pass


class Opened(NamedTuple):
    """What `open_model` built: the engine, the binding that must outlive it, and the report."""

    engine: Any
    binding: Any
    report: DelegationReport


def open_model(data: bytes, flat: FlatModel, request: DelegateRequest, threads: int | None,
               interpreter_class, load_error) -> Opened:
    """Try the requested delegates in order; the first that takes the model wins, the others are recorded.

    Raises:
        DelegateUnavailableError: `strict` and a requested delegate was skipped or operators stayed on the CPU,
            or every delegate (and the CPU default) failed.
        DelegateError: an option is malformed.
        EdgertError: from `load_error` when the interpreter rejects the model itself.
    """
    from edgert import delegates as registry

    for name in request.names:  # malformed options fail before anything is probed or loaded
        registry.get(name).validate(request.options.get(name, {}))
    skipped: list[Skipped] = []
    for name in request.names:
        plugin = registry.get(name)
        options = dict(request.options.get(name, {}))
        probe = plugin.usable_here()
        if not probe.usable:
            skipped.append(Skipped(name, probe.reason))
            continue
        note = plugin.check_model(flat)
        if note:
            skipped.append(Skipped(name, note))
            continue
        try:
            with native_log_captured() as log:
                binding = plugin.bind(flat, options, threads)
                engine, nodes_after_init = _build(data, flat, binding, interpreter_class)
        except DelegateUnavailableError as exc:
            skipped.append(Skipped(name, str(exc)))
            continue
        except EdgertError:
            raise
        except (ValueError, RuntimeError, OSError) as exc:
            reason = _native_reason(exc, log.lines)
            if name == DEFAULT_DELEGATE:  # the CPU itself refused the model: that is the model's fault
                raise load_error(exc) from None
            skipped.append(Skipped(name, reason))
            continue
        report = _report(request, name, binding, engine, nodes_after_init, flat, skipped, log.lines, fallback=False)
        _enforce(request, report)
        return Opened(engine, binding, report)
    if request.strict:
        raise DelegateUnavailableError(
            "no requested delegate could run the model: " + "; ".join(f"{s.name}: {s.reason}" for s in skipped),
            tuple((s.name, s.reason) for s in skipped))
    # Honest fallback: TFLite's CPU default, recorded as such.
    plugin = registry.get(DEFAULT_DELEGATE)
    try:
        with native_log_captured() as log:
            binding = plugin.bind(flat, {}, threads)
            engine, nodes_after_init = _build(data, flat, binding, interpreter_class)
    except (ValueError, RuntimeError) as exc:
        raise load_error(exc) from None
    report = _report(request, DEFAULT_DELEGATE, binding, engine, nodes_after_init, flat, skipped, log.lines,
                     fallback=True)
    return Opened(engine, binding, report)


def _build(data: bytes, flat: FlatModel, binding, interpreter_class) -> tuple[Any, int | None]:
    """The engine for `binding`, and how many nodes the interpreter had before XNNPACK was applied lazily."""
    if binding.engine == "compiled_model":
        from ai_edge_litert.compiled_model import CompiledModel

        compiled = CompiledModel.from_buffer(data, options=binding.compiled_options)
        return CompiledEngine(compiled, flat), None
    kwargs: dict[str, Any] = {"model_content": data, "num_threads": binding.threads}
    if binding.delegates:
        kwargs["experimental_delegates"] = list(binding.delegates)
    if not binding.default_delegates:
        kwargs["experimental_op_resolver_type"] = _resolver_without_defaults(interpreter_class)
    interpreter = interpreter_class(**kwargs)
    nodes_after_init = _num_nodes(interpreter)
    interpreter.allocate_tensors()
    return interpreter, nodes_after_init


def _resolver_without_defaults(interpreter_class):
    import sys

    module = sys.modules[interpreter_class.__module__]
    return module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def _num_nodes(interpreter) -> int | None:
    try:
        return int(interpreter._interpreter.NumNodes())
    except Exception:  # other backends may not expose the node list; counts are then unknown
        return None


def _native_reason(exc: Exception, lines: list[str]) -> str:
    """The native error plus the most telling line of what the library logged (e.g. no Vulkan, no adapter)."""
    message = " ".join(str(exc).split())
    telling = [ln.strip() for ln in lines
               if re.search(r"(?i)\b(error|couldn't|cannot|failed|no adapters|not found)\b", ln)]
    detail = telling[0] if telling else ""
    text = message if not detail or detail in message else f"{detail} ({message})" if message else detail
    return brief(text, 300)


_GPU_HEADER = "operations are not supported by GPU delegate"
# Patterns compiled on first use (re caches them): a model run without the GPU delegate never pays for them.
_GPU_SPLIT = r"(\d+) operations will run on the GPU, and the remaining (\d+) operations? will run on the CPU"
_GPU_REFUSED = r"^([A-Z][A-Z0-9_]+): (.+)$"


def _gpu_log(lines: list[str]) -> tuple[int | None, list[tuple[str, str]]]:
    """What LiteRT's GPU delegate logged about a partial model: how many operators it took, and each it refused.

    It writes "Following operations are not supported by GPU delegate:", one "OPCODE: reason" line per refused
    operator, then "N operations will run on the GPU, and the remaining M operations will run on the CPU."
    """
    delegated, refused, inside = None, [], False
    for raw in lines:
        line = raw.strip()
        split = re.search(_GPU_SPLIT, line)
        if split:
            delegated, inside = int(split.group(1)), False
        elif _GPU_HEADER in line:
            inside = True
        elif inside and (m := re.match(_GPU_REFUSED, line)):
            refused.append((m.group(1), m.group(2)))
    return delegated, refused


def _label_ops(graph, opcodes: list[str]) -> tuple[str, ...]:
    """`OPCODE#index` for each named operator, taking the graph's operators of that opcode in order."""
    used: set[int] = set()
    labels = []
    for opcode in opcodes:
        index = next((i for i, op in enumerate(graph.operators) if op.opcode == opcode and i not in used), None)
        if index is None:
            labels.append(opcode)
        else:
            used.add(index)
            labels.append(f"{opcode}#{index}")
    return tuple(labels)


def _report(request, name, binding, engine, nodes_after_init, flat: FlatModel, skipped, lines,
            fallback) -> DelegationReport:
    graph = flat.subgraphs[0]
    total = len(graph.operators)
    notes: list[str] = []
    if isinstance(engine, CompiledEngine):
        cpu_ops: tuple[str, ...] = ()
        if engine.fully_accelerated:
            delegated: int | None = total
        else:
            delegated, refused = _gpu_log(lines)
            cpu_ops = _label_ops(graph, [op for op, _ in refused])
            notes += [f"{op}: {why}" for op, why in refused]
        return DelegationReport(request.names, name, "compiled_model", binding.detail, total, delegated, cpu_ops,
                                0, 1 if delegated else 0, tuple(skipped), fallback, tuple(notes))
    counts = _interpreter_counts(engine, graph, nodes_after_init,
                                 own_delegate=bool(binding.delegates))
    if counts is None:
        return DelegationReport(request.names, name, "interpreter", binding.detail, total, None, (), 0, 0,
                                tuple(skipped), fallback, ("this interpreter does not expose its node list",))
    mine, xnnpack, partitions = counts
    cpu = tuple(f"{op.opcode}#{i}" for i, op in enumerate(graph.operators) if i not in mine)
    return DelegationReport(request.names, name, "interpreter", binding.detail, total, len(mine), cpu,
                            len(xnnpack - mine), partitions, tuple(skipped), fallback)


def _interpreter_counts(interpreter, graph, nodes_after_init, own_delegate):
    """Which original operators each delegate kernel replaced, found by walking back from its outputs.

    TFLite keeps the original nodes and appends one DELEGATE node per partition; a partition's operators are
    exactly those reachable backwards from the delegate node's outputs without crossing its inputs.
    Delegate nodes added before `allocate_tensors` belong to the requested delegate, later ones to XNNPACK.
    """
    try:
        native = interpreter._interpreter
        n_nodes = int(native.NumNodes())
    except Exception:
        return None
    n_ops = len(graph.operators)
    producer = {t: i for i, op in enumerate(graph.operators) for t in op.outputs if t >= 0}
    mine: set[int] = set()
    xnnpack: set[int] = set()
    partitions = 0
    for node in range(n_ops, n_nodes):
        inputs = {int(t) for t in native.NodeInputs(node)}
        stack = [int(t) for t in native.NodeOutputs(node)]
        covered: set[int] = set()
        while stack:
            t = stack.pop()
            p = producer.get(t)
            if p is None or t in inputs or p in covered:
                continue
            covered.add(p)
            stack.extend(i for i in graph.operators[p].inputs if i >= 0 and i not in inputs)
        by_requested = own_delegate and nodes_after_init is not None and node < nodes_after_init
        if by_requested or not own_delegate:
            mine |= covered
            partitions += 1
        else:
            xnnpack |= covered
    return mine, xnnpack, partitions


def _enforce(request: DelegateRequest, report: DelegationReport) -> None:
    if not request.strict:
        return
    explicit = [s for s in report.skipped if not request.auto]
    if explicit:
        raise DelegateUnavailableError(
            f"--strict: fell back from {', '.join(s.name for s in explicit)} to {report.used} ("
            + "; ".join(f"{s.name}: {s.reason}" for s in explicit) + ")",
            tuple((s.name, s.reason) for s in explicit))
    if report.delegated_ops is None or report.cpu_ops or not report.fully_delegated:
        left = ", ".join(report.cpu_ops) or "an unknown number"
        raise DelegateUnavailableError(
            f"--strict: {report.used} left operator(s) on the CPU: {left} "
            f"(`edgert check MODEL --delegate {report.used}` says why)")
