"""The ONNX route: an `.onnx` file (or a PyTorch module exported to one) through `onnx2tf` to a SavedModel, which
edgert's own TFLite conversion then takes in every mode; `onnxruntime` runs the file as the reference.

onnx2tf runs in a child process (its logging and TensorFlow settings stay out of this one) with the network out of
reach: it fetches a sample image array from GitHub for 4-D inputs unless a file of that name is in its working
directory, so edgert writes one there (seeded random values: onnx2tf only checks its own output against ONNX with
it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgert.converters.signature import IONames
from edgert.errors import ConversionError, InputDataError, ModelFormatError, brief

ONNX_EXTRA = "ONNX models need the [onnx] extra: pip install 'edgert[onnx]'"
OPSET = 17  # what PyTorch modules are exported with on this route
_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"


@dataclass(frozen=True)
class OnnxTensor:
    name: str
    shape: tuple[int | None, ...]  # batch included; None where the file leaves a dimension open
    dtype: str


@dataclass(frozen=True)
class OnnxInfo:
    """An `.onnx` file, read once: its graph's inputs, outputs and opset, and the file's bytes and parsed model
    (without external data), which the preparation for onnx2tf and onnxruntime take instead of reading it again."""

    path: Path
    inputs: tuple[OnnxTensor, ...]
    outputs: tuple[OnnxTensor, ...]
    opset: int
    data: bytes = field(default=b"", repr=False, compare=False)
    model: Any = field(default=None, repr=False, compare=False)

    @property
    def external_data(self) -> bool:
        """Whether tensors live in files beside the model (onnxruntime must then open it by path)."""
        return self.model is not None and any(
            t.data_location == 1 for t in self.model.graph.initializer)  # onnx.TensorProto.EXTERNAL

    @property
    def names(self) -> IONames:
        return IONames(tuple(t.name for t in self.inputs), tuple(t.name for t in self.outputs))

    @property
    def label(self) -> str:
        return f"ONNX opset {self.opset} .onnx"


def _import(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConversionError(f"{ONNX_EXTRA} ({exc.name or name} is not installed)") from None


def read_onnx(path: Path) -> OnnxInfo:
    """The file's graph inputs and outputs, opset and operators, checked against what onnx2tf converts.

    Raises:
        ModelFormatError: not an ONNX model, or an operator onnx2tf has no conversion for (named).
    """
    onnx = _import("onnx")
    if not path.is_file():
        raise ModelFormatError(f"{path}: no such file")
    try:
        data = path.read_bytes()
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # DecodeError and friends: a damaged or foreign file
        raise ModelFormatError(f"{path} is not a readable ONNX model ({brief(exc, 160)})") from None
    graph = model.graph
    if not graph.output or not graph.node:
        raise ModelFormatError(f"{path} is not a readable ONNX model (its graph is empty)")
    initializers = {i.name for i in graph.initializer}
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)

    def tensor(value) -> OnnxTensor:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in t.shape.dim)
        return OnnxTensor(value.name, dims, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
                          if t.elem_type else "float32")

    _check_operators(path, graph)
    return OnnxInfo(path, tuple(tensor(v) for v in graph.input if v.name not in initializers),
                    tuple(tensor(v) for v in graph.output), opset, data, model)


def _check_operators(path: Path, graph) -> None:
    import importlib.util

    spec = importlib.util.find_spec("onnx2tf")
    if spec is None:
        raise ConversionError(f"{ONNX_EXTRA} (onnx2tf is not installed)")
    ops_dir = Path(spec.submodule_search_locations[0]) / "ops"
    known = {p.stem for p in ops_dir.glob("*.py")}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in known:
            domain = f" of domain '{node.domain}'" if node.domain not in ("", "ai.onnx") else ""
            raise ModelFormatError(f"{path}: operator {node.op_type}{domain} (node '{node.name or node.output[0]}') "
                                   "has no onnx2tf conversion; export the model without it, or convert the PyTorch "
                                   "module with --route litert-torch")


def fixed_shapes(info: OnnxInfo, given: Sequence[tuple[str | None, tuple[int, ...]]], notes: list[str]
                 ) -> dict[str, tuple[int, ...]]:
    """Every input's shape with its open dimensions fixed: by `--input-shape` (by name, or in input order), an open
    batch dimension at 1.

    Raises:
        InputDataError: an open dimension besides the batch without `--input-shape`, or a shape that does not fit.
    """
    by_name = {name: shape for name, shape in given if name}
    positional = [shape for name, shape in given if not name]
    unknown = sorted(set(by_name) - {t.name for t in info.inputs})
    if unknown:
        raise InputDataError(f"--input-shape names {unknown[0]}, not an input of {info.path.name} (its inputs: "
                             f"{', '.join(t.name for t in info.inputs)})")
    if positional and len(positional) != len(info.inputs):
        raise InputDataError(f"--input-shape was given {len(positional)} time(s) for {len(info.inputs)} input(s); "
                             "give one per input, or name them (--input-shape NAME:1,3,224,224)")
    shapes = {}
    for i, t in enumerate(info.inputs):
        shape = by_name.get(t.name) or (positional[i] if positional else None)
        if shape is not None:
            if len(shape) != len(t.shape) or any(d is not None and d != s for d, s in zip(t.shape, shape)):
                raise InputDataError(f"--input-shape {shape} does not fit input '{t.name}' of shape "
                                     f"{_shown(t.shape)}")
            shapes[t.name] = tuple(shape)
            continue
        open_dims = [k for k, d in enumerate(t.shape) if d is None]
        if any(k != 0 for k in open_dims):
            raise InputDataError(f"input '{t.name}' of {info.path.name} has shape {_shown(t.shape)} with open "
                                 f"dimensions; give them with --input-shape {t.name}:"
                                 + ",".join(str(d or 1) if k == 0 else str(d or "N") for k, d in enumerate(t.shape)))
        if open_dims:
            notes.append(f"input '{t.name}': its open batch dimension is fixed at 1")
        shapes[t.name] = tuple(d or 1 for d in t.shape)
    return shapes


def _shown(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def export_torch(module, example: Sequence[np.ndarray], names: IONames, target: Path) -> None:
    """The module as an ONNX file (opset 17, TorchScript exporter: the one that needs nothing beyond torch)."""
    import warnings

    import torch

    _import("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, tuple(torch.from_numpy(a) for a in example), str(target),
                              input_names=list(names.inputs), output_names=list(names.outputs),
                              opset_version=OPSET, dynamo=False)
        except Exception as exc:
            raise ConversionError(f"exporting the module to ONNX failed ({brief(exc, 240)}); try --route "
                                  "litert-torch") from None


# onnx2tf writes the SavedModel, then converts it to float32 and float16 .tflite files itself, which edgert does
# its own way: the child stops it there (ResNet-18: 3 s instead of 135 s). The SavedModel is written through
# tf_keras's ExportArchive (`output_signaturedefs`), which names the outputs output_0, ... in the graph's order.
_CHILD = """
import json, sys
import tensorflow as tf

class Saved(BaseException):  # not an Exception: onnx2tf's own handlers let it through
    pass

def stop(*args, **kwargs):
    raise Saved()

tf.lite.TFLiteConverter.from_keras_model = staticmethod(stop)
tf.lite.TFLiteConverter.from_concrete_functions = staticmethod(stop)
import onnx2tf
try:
    onnx2tf.convert(**json.loads(sys.argv[1]))
except Saved:
    pass
"""


def run_onnx2tf(onnx_path: Path, workdir: Path, shapes: dict[str, tuple[int, ...]], keep: Sequence[str],
                source: Path | None = None, notes: list[str] | None = None, info: OnnxInfo | None = None) -> Path:
    """onnx2tf on `onnx_path` in a child process, offline; returns the SavedModel directory it wrote.

    `info`: the file as `read_onnx` read it, so it is not parsed again here (the child reads its own copy).

    `keep`: the inputs to leave channel-first (onnx2tf makes 3- to 5-D inputs channel-last otherwise).
    `source`: the file the user gave, which errors name (default `onnx_path`; a module is exported to a file of
    edgert's own first).

    Raises:
        ConversionError: onnx2tf failed (its last error line).
    """
    import importlib.util

    if importlib.util.find_spec("onnx2tf") is None:  # imported in the child only: it loads TensorFlow its own way
        raise ConversionError(f"{ONNX_EXTRA} (onnx2tf is not installed)")
    workdir.mkdir(parents=True, exist_ok=True)
    given = source or onnx_path
    onnx_path = _prepared(onnx_path, workdir, info)
    np.save(workdir / _SAMPLE, np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    out = workdir / "saved_model"
    options = {"input_onnx_file_path": str(onnx_path.resolve()), "output_folder_path": str(out),
               "non_verbose": True, "output_signaturedefs": True,
               "overwrite_input_shape": [f"{n}:{','.join(map(str, s))}" for n, s in shapes.items()],
               "keep_ncw_or_nchw_or_ncdhw_input_names": list(keep) or None}
    # onnx2tf runs the `onnxsim` command beside this Python (it fixes the input shapes and folds the graph)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "CUDA_VISIBLE_DEVICES": "-1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "TF_USE_LEGACY_KERAS": "1",
           # onnx2tf would fetch its sample over the network if the file were missing: never let it reach out
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
    failure = ""
    # onnx2tf's strict mode checks each ambiguous broadcast against onnxruntime, and itself fails on some graphs
    # (a scalar constant beside a 5-D tensor, as YOLOv5's head has); without it, edgert's own check against
    # onnxruntime after the conversion judges the result.
    for strict in (True, False):
        shutil.rmtree(out, ignore_errors=True)
        run = subprocess.run([sys.executable, "-c", _CHILD, json.dumps({**options, "disable_strict_mode": not strict})],
                             cwd=workdir, env=env, capture_output=True, text=True)
        if run.returncode == 0 and (out / "saved_model.pb").is_file():
            if not strict and notes is not None:
                notes.append(f"onnx2tf ran with its strict mode off (with it, it stopped{failure})")
            return out
        log = run.stdout + run.stderr
        node = re.search(r"onnx_op_name:\s*(\S+)", re.sub(r"\x1b\[[0-9;]*m", "", log))
        where = f" at node '{node.group(1)}'" if node else ""
        failure = f"{where}: {_last_error(log)}"
    raise ConversionError(f"onnx2tf could not convert {given}{failure}; simplify or re-export the file (a PyTorch "
                          "source can take --route litert-torch)")


def _prepared(path: Path, workdir: Path, info: OnnxInfo | None = None) -> Path:
    """The file, or a copy in `workdir` that onnx2tf and TensorFlow's converter take as meant (see `_safe_node_names`
    and `_around_transpose_bug`); computes the same as the file. The parsed model in `info` is copied, not re-read."""
    onnx = _import("onnx")
    model = onnx.ModelProto()
    if info is not None and info.model is not None:
        model.CopyFrom(info.model)
    else:
        model.ParseFromString(path.read_bytes())
    renamed, rewritten = _unsafe_names(model.graph), _constant_lhs(model)
    if not renamed and not rewritten:
        return path
    from onnx.external_data_helper import load_external_data_for_model

    load_external_data_for_model(model, str(path.parent))
    _safe_node_names(model.graph, renamed)
    _around_transpose_bug(model, rewritten)
    target = workdir / "prepared.onnx"
    onnx.save(model, str(target), save_as_external_data=model.ByteSize() > 1_800_000_000)
    return target


_VALID_NAME = re.compile(r"^[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*$")


def _unsafe_names(graph) -> list[str]:
    return [n.name for n in graph.node if n.name and not _VALID_NAME.match(n.name)]


def _safe_node_names(graph, unsafe: list[str]) -> None:
    """Node names TensorFlow accepts as scope names (onnx2tf names its layers after the nodes, and exporters such as
    Paddle2ONNX write `Softmax@0`). Node names carry no meaning."""
    if not unsafe:
        return
    taken = {n.name for n in graph.node}
    for node in graph.node:
        if node.name and not _VALID_NAME.match(node.name):
            name = re.sub(r"[^A-Za-z0-9_.\\/>-]", "_", node.name).lstrip("_/>-") or "node"
            while name in taken:
                name += "_"
            taken.add(name)
            node.name = name


def _constant_lhs(model) -> list[int]:
    """Indices of the float Sub and Div nodes whose first operand is computed from constants and shapes alone (with
    the input shapes fixed, as onnx2tf fixes them) and whose second is not."""
    import onnx

    graph = model.graph
    static = {i.name for i in graph.initializer}
    floats = set()
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
        values = list(inferred.value_info) + list(inferred.input) + list(inferred.output)
    except Exception:  # noqa: BLE001 - no type information: rewrite nothing rather than guess
        return []
    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    floats = {v.name for v in values if v.type.tensor_type.elem_type in float_types}
    floats |= {i.name for i in graph.initializer if i.data_type in float_types}
    chosen = []
    for index, node in enumerate(graph.node):
        inputs = [i for i in node.input if i]
        if node.op_type in ("Constant", "Shape", "Size") or (inputs and all(i in static for i in inputs)):
            static.update(node.output)
            continue
        if node.op_type in ("Sub", "Div") and len(node.input) == 2 and node.input[0] in static \
                and node.input[1] not in static and node.output[0] in floats:
            chosen.append(index)
    return chosen


def _around_transpose_bug(model, indices: list[int]) -> None:
    """TensorFlow 2.21's TFLite converter (its push-transpose-through-ewise pass) swaps the operands of `C - x` and
    `C / x` when C is a constant and x comes out of a transpose, as onnx2tf's layout changes make it: YOLOv8's
    `anchors - lt` came out as `lt - anchors`, and its boxes with it. The same values written as -(x - C) and
    C * x^-1 reach the converter in a form it keeps (the first exactly; the second within a rounding)."""
    if not indices:
        return
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes = list(graph.node)
    minus_one = "edgert_minus_one"
    if any(nodes[i].op_type == "Div" for i in indices):
        graph.initializer.append(numpy_helper.from_array(np.array(-1.0, np.float32), minus_one))
    replacement = []
    for index, node in enumerate(nodes):
        if index not in indices:
            replacement.append(node)
            continue
        constant, x = node.input
        middle = f"{node.output[0]}__edgert_{node.op_type.lower()}"
        prefix = node.name or node.output[0]
        if node.op_type == "Sub":
            replacement += [helper.make_node("Sub", [x, constant], [middle], name=f"{prefix}_swapped"),
                            helper.make_node("Neg", [middle], [node.output[0]], name=f"{prefix}_negated")]
        else:
            exponent = minus_one
            replacement += [helper.make_node("Pow", [x, exponent], [middle], name=f"{prefix}_reciprocal"),
                            helper.make_node("Mul", [constant, middle], [node.output[0]], name=f"{prefix}_times")]
    del graph.node[:]
    graph.node.extend(replacement)
    onnx.checker.check_model(model) if model.ByteSize() < 1_800_000_000 else None


def _last_error(log: str) -> str:
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in log.splitlines()]
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if re.match(r"^(\w+\.)*\w*(Error|Exception)\b", line) or "ERROR:" in line:
            return brief(line, 240)
    return brief(lines[-1], 240) if lines else "it printed nothing"


class OnnxRuntime:
    """onnxruntime running the file on the CPU: the reference the `.tflite` is checked against."""

    def __init__(self, path: Path, info: OnnxInfo | None = None):
        ort = _import("onnxruntime")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # the bytes already read, unless tensors live beside the file (then onnxruntime opens it by path)
        model = info.data if info is not None and info.data and not info.external_data else str(path)
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        results = self.session.run(self.outputs, dict(zip(self.inputs, arrays)))
        return dict(zip(self.outputs, results))
