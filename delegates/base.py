"""What a delegate plugin declares: name, platforms, probe, how it binds to a model, and what operators it takes."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

from edgert.tflite.records import ACTIVATIONS, FlatModel, OperatorInfo, SubgraphInfo
from edgert.runtime.plugins import Probe

OS_NAMES = ("linux", "android", "darwin", "windows")


@dataclass(frozen=True)
class Platform:
    """The operating system family (`linux`, `android`, `darwin`, `windows`) and machine (`x86_64`, `aarch64`)."""

    os: str
    machine: str

    def __str__(self) -> str:
        return f"{self.os}-{self.machine}"


def current_platform() -> Platform:
    """This machine's platform; Android is told apart from Linux by its system properties and root."""
    system = sys.platform
    if system.startswith("linux"):
        android = bool(os.environ.get("ANDROID_ROOT")) or os.path.exists("/system/build.prop")
        name = "android" if android or hasattr(sys, "getandroidapilevel") else "linux"
    elif system == "darwin":
        name = "darwin"
    elif system in ("win32", "cygwin"):
        name = "windows"
    else:
        name = system
    machine = platform.machine().lower()
    return Platform(name, {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine))


@dataclass(frozen=True)
class OpVerdict:
    """A pre-flight verdict on one operator of the main subgraph."""

    index: int
    opcode: str
    accepted: bool
    reason: str = ""

    @property
    def label(self) -> str:
        return f"{self.opcode}#{self.index}"

    def to_dict(self) -> dict:
        return {"index": self.index, "opcode": self.opcode, "accepted": self.accepted, "reason": self.reason}


@dataclass
class Binding:
    """How the runtime must build the model for a delegate.

    `engine` is `interpreter` (the TFLite interpreter, with `delegates` applied in order and, when
    `default_delegates`, TFLite's XNNPACK taking what they leave) or `compiled_model` (LiteRT's `CompiledModel`
    with `compiled_options`). The loaded delegate objects are kept here for as long as the model lives.
    """

    engine: str = "interpreter"
    delegates: tuple[Any, ...] = ()
    default_delegates: bool = True
    compiled_options: Any = None
    detail: str = ""
    threads: int | None = None


class DelegatePlugin:
    """Base class of delegate plugins; subclasses are registered under the `edgert.delegates` entry point group.

    A plugin sets `name`, `aliases`, `platforms`, `summary` and `options` (name -> help), and implements `probe`,
    `bind`, and the pre-flight `check_operator` (and `check_model` for whole-model requirements).
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    platforms: ClassVar[tuple[str, ...]] = OS_NAMES
    summary: ClassVar[str] = ""
    options: ClassVar[dict[str, str]] = {}
    accepts_any_option: ClassVar[bool] = False  # external delegates take options edgert cannot know
    source: ClassVar[str] = ""  # where the support table comes from (cited by `edgert check`)

    def probe(self) -> Probe:
        return Probe(True)

    def usable_here(self) -> Probe:
        """`probe()`, after the platform check every plugin shares."""
        here = current_platform()
        if here.os not in self.platforms:
            return Probe(False, f"{self.name} works on {', '.join(self.platforms)}, not on {here}")
        return self.probe()

    def validate(self, options: Mapping[str, str]) -> None:
        """Raise DelegateError for a malformed option; called before anything is probed or loaded."""

    def bind(self, model: FlatModel, options: Mapping[str, str], threads: int | None) -> Binding:
        """Load the native delegate (or choose the accelerator) for `model`.

        Raises:
            DelegateUnavailableError: it cannot take this model here; the message is the reason.
            DelegateError: an option is malformed.
        """
        raise NotImplementedError

    def check_model(self, model: FlatModel) -> str | None:
        """A reason the whole model cannot go to this delegate, or None."""
        return None

    def check_operator(self, graph: SubgraphInfo, op: OperatorInfo) -> str | None:
        """A reason this operator would stay on the CPU, or None when the delegate takes it."""
        return None

    def check(self, model: FlatModel) -> tuple[OpVerdict, ...]:
        """Per-operator verdicts for the main subgraph (the model-level `check_model` note is separate)."""
        graph = model.subgraphs[0]
        verdicts = []
        for i, op in enumerate(graph.operators):
            reason = self.check_operator(graph, op)
            verdicts.append(OpVerdict(i, op.opcode, reason is None, reason or ""))
        return tuple(verdicts)

    def __repr__(self) -> str:
        return f"<delegate plugin {self.name}>"


# -- helpers for support tables ----------------------------------------------------------------------------------


def tensor_types(graph: SubgraphInfo, indices: tuple[int, ...]) -> list[str]:
    return [graph.tensors[i].dtype for i in indices if i >= 0]


def is_constant(graph: SubgraphInfo, index: int) -> bool:
    """A tensor backed by a buffer with data (weights), as opposed to one computed at run time."""
    return index >= 0 and graph.tensors[index].buffer > 0 and index not in graph.inputs


def runtime_inputs(graph: SubgraphInfo, op: OperatorInfo) -> list[int]:
    return [i for i in op.inputs if i >= 0 and not is_constant(graph, i)]


def dynamic_tensor(graph: SubgraphInfo, op: OperatorInfo) -> str | None:
    """The name of an input/output with an unknown dimension other than the batch, if any."""
    for i in (*op.inputs, *op.outputs):
        if i < 0:
            continue
        t = graph.tensors[i]
        if any(d < 0 for d in t.shape_signature[1:]):
            return t.name or f"tensor {i}"
    return None


def activation(op: OperatorInfo) -> str:
    return ACTIVATIONS.get(op.option("activation"), f"activation {op.option('activation')}")


def parse_bool(name: str, key: str, value: str) -> bool:
    from edgert.errors import DelegateError

    lowered = str(value).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise DelegateError(f"{name} option {key}={value!r} is not a boolean; use true or false")


def parse_choice(name: str, key: str, value: str, choices: tuple[str, ...]) -> str:
    from edgert.errors import DelegateError

    lowered = str(value).strip().lower().replace("-", "_")
    if lowered not in choices:
        raise DelegateError(f"{name} option {key}={value!r} is not one of {', '.join(choices)}")
    return lowered


@dataclass(frozen=True)
class OpTable:
    """A delegate's documented operator support: opcode -> allowed tensor types (None: any numeric type)."""

    ops: Mapping[str, frozenset[str] | None] = field(default_factory=dict)

    def reason(self, graph: SubgraphInfo, op: OperatorInfo, delegate: str, static_shapes: bool = False) -> str | None:
        """Why `op` stays on the CPU (not listed, a tensor type the delegate lacks, a dynamic shape), or None."""
        if static_shapes and op.opcode in self.ops:
            name = dynamic_tensor(graph, op)
            if name:
                return f"{op.opcode}: tensor '{name}' has a dynamic shape; {delegate} needs static shapes"
        if op.custom:
            return f"custom operator {op.opcode} is not a {delegate} operator"
        if op.opcode not in self.ops:
            return f"{op.opcode} is not supported by {delegate}"
        allowed = self.ops[op.opcode]
        if allowed is not None:
            bad = sorted({t for t in tensor_types(graph, (*op.inputs, *op.outputs)) if t not in allowed})
            if bad:
                return f"{op.opcode} with {', '.join(bad)} tensors is not supported by {delegate}"
        return None
