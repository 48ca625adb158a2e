"""The names a model's author gave its inputs and outputs, read from the source model, and written into the
`.tflite` as its `serving_default` signature, whichever converter path produced the flatbuffer.

Keras's own exporter (`model.export(path, format="litert")`) and TensorFlow's SavedModel signatures are the anchors:
input names are the `Input` names (SavedModel: the signature's keys), output names the keys of a dict of outputs,
else the output layers' names (SavedModel: the signature's keys). Entries are written sorted by name, as those
exporters write them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_KEY = "serving_default"


@dataclass(frozen=True)
class IONames:
    """A model's input names in its input order and output names in the order its call returns them flattened."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def _unique(names: list[str], prefix: str) -> tuple[str, ...]:
    """`names`, or `prefix_0, prefix_1, ...` where some are empty or repeated (no name can then be trusted)."""
    if all(names) and len(set(names)) == len(names):
        return tuple(names)
    return tuple(f"{prefix}_{i}" for i in range(len(names)))


def keras_names(model) -> IONames:
    """The names of a tf_keras or Keras 3 model object's inputs and outputs.

    Inputs: the `Input` layers' names. Outputs: the keys of a dict the model returns (nested keys joined with `/`),
    else the names of the layers that produce them, in the order the model's outputs flatten to."""
    from edgert.converters.keras3 import is_keras3_model

    if is_keras3_model(model):
        inputs = [str(t.name).split(":")[0] for t in model.inputs]
        structure = getattr(model, "_outputs_struct", None)
        if isinstance(structure, dict):
            from keras import tree

            outputs = ["/".join(str(p) for p in path) for path, _ in tree.flatten_with_path(structure)]
        else:
            outputs = list(getattr(model, "output_names", None) or [])
    else:
        inputs = list(getattr(model, "input_names", None) or [str(t.name).split(":")[0] for t in model.inputs])
        outputs = list(getattr(model, "output_names", None) or [])
    if len(outputs) != len(model.outputs):
        outputs = []
    return IONames(_unique(inputs, "input"), _unique(outputs or [""] * len(model.outputs), "output"))


def saved_model_names(signature) -> IONames:
    """The names of a SavedModel signature's inputs and outputs, sorted as TensorFlow lists them."""
    _, inputs = signature.structured_input_signature
    return IONames(tuple(sorted(inputs)), tuple(sorted(signature.structured_outputs)))


def named_call(model, names: IONames):
    """A `tf.function` body for `model` that returns its outputs in a dict keyed by `names.outputs`."""
    from edgert.converters.keras3 import model_call

    def call(*args):
        return dict(zip(names.outputs, model_call(model, list(args))))

    return call


def write_signature(flatbuffer: bytes, model_names: IONames, source_names: IONames) -> tuple[bytes, str]:
    """The flatbuffer with a `serving_default` signature that carries `source_names`, and a note ("" when there is
    nothing to say).

    `model_names` are the names of the model object that was converted (after stages that rebuild it, they can
    differ from the source's): position `i` of `model_names` is position `i` of `source_names`. A signature the
    converter wrote is renamed by those positions; a flatbuffer without one (a concrete function converted without a
    trackable object) gets one, its inputs matched by tensor name or position and its outputs by position in the
    traced function's dict, whose keys TensorFlow flattens sorted.
    """
    from edgert.tflite.flatbuffer import parse

    flat = parse(flatbuffer, "the converted model")
    main = flat.subgraphs[0]
    in_rename = dict(zip(model_names.inputs, source_names.inputs))
    out_rename = dict(zip(model_names.outputs, source_names.outputs))
    existing = flat.main_signature()
    if existing is not None:
        inputs = [(in_rename.get(name, name), index) for name, index in existing.inputs]
        outputs = []
        for name, index in existing.outputs:
            position = re.fullmatch(r"output_(\d+)", name)
            if name in out_rename:
                name = out_rename[name]
            elif position and int(position.group(1)) < len(source_names.outputs) and \
                    name not in source_names.outputs:
                name = source_names.outputs[int(position.group(1))]
            outputs.append((name, index))
    else:
        if len(main.inputs) != len(model_names.inputs) or len(main.outputs) != len(model_names.outputs):
            return flatbuffer, (f"the .tflite has {len(main.inputs)} input(s) and {len(main.outputs)} output(s) "
                                f"where the model has {len(model_names.inputs)} and {len(model_names.outputs)}: "
                                "no signature was written")
        by_tensor = {main.tensors[i].name.split(":")[0]: i for i in main.inputs}
        if set(by_tensor) >= set(model_names.inputs):
            inputs = [(in_rename[n], by_tensor[n]) for n in model_names.inputs]
        else:
            inputs = [(in_rename[n], i) for n, i in zip(model_names.inputs, main.inputs)]
        traced = sorted(range(len(model_names.outputs)), key=lambda k: model_names.outputs[k])
        outputs = [(source_names.outputs[k], index) for k, index in zip(traced, main.outputs)]
    inputs, outputs = sorted(inputs), sorted(outputs)
    if existing is not None and existing.key == DEFAULT_KEY and (tuple(inputs), tuple(outputs)) == (
            tuple(sorted(existing.inputs)), tuple(sorted(existing.outputs))) and len(flat.signatures) == 1:
        return flatbuffer, ""
    if len({n for n, _ in inputs}) != len(inputs) or len({n for n, _ in outputs}) != len(outputs):
        return flatbuffer, "the model's input or output names repeat: the signature keeps the converter's names"
    return _with_signature(flatbuffer, inputs, outputs), ""


def _with_signature(flatbuffer: bytes, inputs, outputs) -> bytes:
    """Rewrite the flatbuffer's signature list as one `serving_default` signature of subgraph 0 (TensorFlow's own
    flatbuffer object API: every other field is carried over as it is)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))

    def tensor_maps(entries):
        maps = []
        for name, index in entries:
            tm = schema.TensorMapT()
            tm.name, tm.tensorIndex = name, index
            maps.append(tm)
        return maps

    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = DEFAULT_KEY, 0
    sig.inputs, sig.outputs = tensor_maps(inputs), tensor_maps(outputs)
    model.signatureDefs = [sig]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
