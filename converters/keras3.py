"""Keras 3 models: traced for the TFLite converter as they are, and rebuilt in tf_keras for the stages that need
tfmot (pruning, clustering, QAT), with the rebuild checked numerically against the original.

The rebuild walks the Keras 3 graph node by node: each layer becomes the tf_keras layer of the same class (its config
translated: dtype policies, Keras-3-only arguments and activations), each operation (`x + 3`, `ops.mean`) a
`Keras3Op` layer that calls the Keras 3 operation itself, and nested `Sequential`/functional blocks are flattened
into the outer model (tfmot cannot prune nested models). Weights are copied layer by layer from each layer's
ordered variable list, every shape checked; nothing is matched by name.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from edgert.errors import ConversionError, brief

REBUILD_TOLERANCE = 1e-5  # max |tf_keras - keras3| / max |keras3| on seeded inputs
POST_TRAINING_STILL_WORK = "post-training modes (--int8, --dynamic, --float16, --int16x8) still work without it"
# Activations with the same name and the same formula in tf_keras; the rest run Keras 3's own function.
_SAME_ACTIVATIONS = {"relu", "linear", "softmax", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign",
                     "exponential", "swish", "mish"}
_ACTIVATION_ALIASES = {"silu": "swish"}
# Arguments every tf_keras layer takes through **kwargs.
_BASE_LAYER_ARGS = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size", "weights",
                    "activity_regularizer", "autocast", "input_dim", "dynamic"}


def is_keras3_model(model) -> bool:
    return type(model).__module__.split(".")[0] == "keras"


# -- the rebuild ------------------------------------------------------------------------------------------------


class RebuildError(ConversionError):
    """A Keras 3 model that cannot be rebuilt in tf_keras (the layer is named)."""


@dataclass(frozen=True)
class RebuildReport:
    """How the tf_keras rebuild compares with the Keras 3 model it came from."""

    layers: int
    operations: int  # Keras 3 operations carried as Keras3Op layers
    flattened: tuple[str, ...]  # nested Sequential/functional blocks inlined
    weights: int
    max_rel_diff: float
    samples: int

    def describe(self) -> str:
        extra = f", {self.operations} Keras 3 operation(s) as Keras3Op" if self.operations else ""
        nested = f", nested block(s) {', '.join(self.flattened)} flattened" if self.flattened else ""
        return (f"rebuilt in tf_keras: {self.layers} layers{extra}{nested}, {self.weights} weights copied; "
                f"outputs agree with the Keras 3 model to {self.max_rel_diff:.1e} (max relative difference, "
                f"{self.samples} seeded inputs)")


def _keras3_op_layer():
    """The tf_keras layer class that runs one Keras 3 operation (defined once, registered for cloning)."""
    global _KERAS3_OP
    if _KERAS3_OP is not None:
        return _KERAS3_OP
    from edgert.converters._tf import import_keras3, import_tf

    tf, tf_keras = import_tf()
    keras = import_keras3()

    @tf.autograph.experimental.do_not_convert  # plain Python: autograph must not rewrite its loops
    def fill(value, tensors):
        if isinstance(value, dict) and set(value) == {"__tensor__"}:
            return tensors[value["__tensor__"]]
        if isinstance(value, (list, tuple)):
            return type(value)([fill(v, tensors) for v in value])
        if isinstance(value, dict):
            return {k: fill(v, tensors) for k, v in value.items()}
        return value

    @tf_keras.saving.register_keras_serializable(package="edgert")
    class Keras3Op(tf_keras.layers.Layer):
        """Calls a Keras 3 operation (`ops.add`, `ops.mean`, ...) with the arguments it had in the original
        graph; `template` holds the constant arguments with `{"__tensor__": i}` where input tensor i goes."""

        def __init__(self, op, template, **kwargs):
            super().__init__(**kwargs)
            self.op = op if not isinstance(op, dict) else keras.saving.deserialize_keras_object(op)
            self.template = template

        def call(self, inputs):
            tensors = inputs if isinstance(inputs, (list, tuple)) else [inputs]
            args, kwargs = fill(self.template, tensors)
            return self.op(*args, **kwargs)

        def get_config(self):
            return {**super().get_config(), "op": keras.saving.serialize_keras_object(self.op),
                    "template": self.template}

    _KERAS3_OP = Keras3Op
    return Keras3Op


_KERAS3_OP = None
_ACTIVATIONS: dict[str, object] = {}


def _activation(value, layer_name: str):
    if not isinstance(value, str):
        raise RebuildError(f"layer {layer_name} has an activation given as {brief(value, 60)}, not by name; "
                           f"tf_keras cannot rebuild it; {POST_TRAINING_STILL_WORK}")
    if value in _SAME_ACTIVATIONS:
        return value
    if value in _ACTIVATION_ALIASES:
        return _ACTIVATION_ALIASES[value]
    if value not in _ACTIVATIONS:
        # hard_silu, hard_sigmoid (whose formula differs in tf_keras), gelu (approximate by default in Keras 3),
        # relu6, ...: Keras 3's own function, registered so that tfmot can clone the layer.
        from edgert.converters._tf import import_keras3, import_tf

        _, tf_keras = import_tf()
        keras = import_keras3()
        try:
            function = keras.activations.get(value)
        except ValueError:
            raise RebuildError(f"layer {layer_name} uses activation '{value}', unknown to Keras 3 here; "
                               f"{POST_TRAINING_STILL_WORK}") from None

        def activation(x):
            return function(x)

        activation.__name__ = f"keras3_{value}"
        _ACTIVATIONS[value] = tf_keras.saving.register_keras_serializable(
            package="edgert", name=f"keras3_{value}")(activation)
    return _ACTIVATIONS[value]


def _accepted_args(cls) -> set[str]:
    """The arguments a tf_keras layer class takes, following **kwargs up through its bases."""
    accepted = set(_BASE_LAYER_ARGS)
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        accepted |= set(params)
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()) or klass.__name__ == "Layer":
            break
    return accepted


def _plain_object(value):
    """A Keras 3 serialized object ({"module", "class_name", "config", "registered_name"}) as tf_keras reads it."""
    if isinstance(value, dict) and "class_name" in value:
        return {"class_name": value["class_name"], "config": value.get("config") or {}}
    return value


def _translate_config(layer, cls) -> dict:
    name = layer.name
    config = dict(layer.get_config())
    accepted = _accepted_args(cls)
    out = {}
    for key, value in config.items():
        if key == "dtype":
            value = value.get("config", {}).get("name") if isinstance(value, dict) else value
            if not isinstance(value, str) or value.startswith(("int8", "int4", "float8", "gptq")):
                raise RebuildError(f"layer {name} is quantized by Keras (dtype policy {value}); tf_keras cannot "
                                   f"rebuild it: convert the float model; {POST_TRAINING_STILL_WORK}")
        elif key.endswith("_initializer") and isinstance(value, dict):
            value = {"class_name": value.get("class_name"), "config": {}}  # the weights are copied afterwards
        elif key.endswith(("_regularizer", "_constraint")):
            value = _plain_object(value)
        elif key == "activation":
            value = _activation(value, name)
        if key not in accepted:
            if value in (None, False, 0, "", [], {}) or key in ("seed",):
                continue  # a Keras 3 argument left at what tf_keras does anyway
            raise RebuildError(f"layer {name} ({type(layer).__name__}) has argument {key}={brief(value, 60)}, which "
                               f"tf_keras's {cls.__name__} does not take; {POST_TRAINING_STILL_WORK}")
        out[key] = value
    return out


class _Rebuilder:
    def __init__(self, keras, tf_keras, custom_tf_keras: dict[str, type]):
        from edgert.converters.custom_objects import keras3_application_layers, tf_keras_application_layers

        self.keras, self.tf_keras = keras, tf_keras
        self.app3, self.app2 = keras3_application_layers(), tf_keras_application_layers()
        self.custom = {k: v for k, v in custom_tf_keras.items()
                       if isinstance(v, type) and issubclass(v, tf_keras.layers.Layer)}
        self.pairs: list[tuple[object, object]] = []
        self.cache: dict[int, object] = {}
        self.names: set[str] = set()
        self.operations = 0
        self.flattened: list[str] = []
        self.op_layer = _keras3_op_layer()
        from tf_keras.src.engine.keras_tensor import KerasTensor

        self.tensor_type = KerasTensor

    def unique(self, name: str) -> str:
        candidate, i = name, 1
        while candidate in self.names:
            candidate, i = f"{name}_{i}", i + 1
        self.names.add(candidate)
        return candidate

    def tf_keras_class(self, layer):
        cls_name = type(layer).__name__
        if cls_name in self.custom:
            return self.custom[cls_name]
        if self.app3.get(cls_name) is type(layer) and cls_name in self.app2:
            return self.app2[cls_name]
        if type(layer).__module__.startswith("keras.") and hasattr(self.tf_keras.layers, cls_name):
            return getattr(self.tf_keras.layers, cls_name)
        raise RebuildError(f"layer {layer.name} ({cls_name}) has no tf_keras equivalent (register one with "
                           f"--custom-objects to prune, cluster or train it); {POST_TRAINING_STILL_WORK}")

    def translate(self, op):
        key = id(op)
        if key in self.cache:
            return self.cache[key]
        keras = self.keras
        if isinstance(op, keras.Sequential):
            self.flattened.append(op.name)
            layers = [self.translate(layer) for layer in op.layers]

            def fn(x, *args, **kwargs):
                for layer in layers:
                    x = layer(x)
                return x
        elif isinstance(op, keras.Model):
            if not hasattr(op, "_run_through_graph") or not getattr(op, "_nodes_by_depth", None):
                raise RebuildError(f"block {op.name} ({type(op).__name__}) is a subclassed model, whose call() "
                                   f"tf_keras cannot rebuild; {POST_TRAINING_STILL_WORK}")
            self.flattened.append(op.name)

            def fn(*args, **kwargs):
                return op._run_through_graph(args, operation_fn=lambda o: o, call_fn=self.call)
        elif isinstance(op, keras.layers.Layer):
            cls = self.tf_keras_class(op)
            try:
                config = _translate_config(op, cls)
                config["name"] = self.unique(op.name)
                fn = cls.from_config(config)
            except RebuildError:
                raise
            except Exception as exc:
                raise RebuildError(f"layer {op.name} ({type(op).__name__}) could not be made in tf_keras "
                                   f"({brief(exc, 160)}); {POST_TRAINING_STILL_WORK}") from None
            self.pairs.append((op, fn))
        else:
            self.operations += 1
            fn = self.operation(op)
        self.cache[key] = fn
        return fn

    def operation(self, op):
        """A Keras 3 operation (no weights) as a Keras3Op layer, one per call site."""
        def fn(*args, **kwargs):
            tensors = []

            def template(value):
                if isinstance(value, self.tensor_type):
                    tensors.append(value)
                    return {"__tensor__": len(tensors) - 1}
                if isinstance(value, (list, tuple)):
                    return type(value)(template(v) for v in value)
                if isinstance(value, dict):
                    return {k: template(v) for k, v in value.items()}
                return value

            layout = template((list(args), kwargs))
            layer = self.op_layer(op, layout, name=self.unique(op.name))
            return layer(tensors if len(tensors) != 1 else tensors[0])

        return fn

    def call(self, op, *args, **kwargs):
        fn = self.translate(op)
        try:
            return fn(*args, **kwargs)
        except RebuildError:
            raise
        except Exception as exc:
            raise RebuildError(f"layer {op.name} ({type(op).__name__}) could not be called in tf_keras "
                               f"({brief(exc, 160)}); {POST_TRAINING_STILL_WORK}") from None

    def inputs(self, model):
        made = []
        for tensor in model.inputs:
            layer = tensor._keras_history.operation
            config = layer.get_config()
            if config.get("optional"):
                raise RebuildError(f"input {layer.name} is optional, which tf_keras does not support; "
                                   f"{POST_TRAINING_STILL_WORK}")
            dtype = config.get("dtype")
            dtype = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
            made.append(self.tf_keras.Input(batch_shape=tuple(config["batch_shape"]), dtype=dtype,
                                            name=self.unique(layer.name), sparse=bool(config.get("sparse")),
                                            ragged=bool(config.get("ragged"))))
        return made


def rebuild_in_tf_keras(model, custom_objects: dict | None = None, samples: list[np.ndarray] | None = None):
    """A tf_keras model computing what the Keras 3 `model` computes, checked on `samples` (or seeded inputs).

    Returns:
        (tf_keras model, RebuildReport)

    Raises:
        RebuildError: a layer tf_keras cannot rebuild (named), weights that do not fit, or outputs that differ
            by more than REBUILD_TOLERANCE (the first layer that differs is named when it can be found).
    """
    from edgert.converters._tf import import_keras3, import_tf

    _, tf_keras = import_tf()
    keras = import_keras3()
    rebuilder = _Rebuilder(keras, tf_keras, custom_objects or {})
    if not getattr(model, "inputs", None):
        raise RebuildError(f"model {model.name} has no known inputs (a Sequential model saved before it was built, "
                           f"or a subclassed model); {POST_TRAINING_STILL_WORK}")
    inputs = rebuilder.inputs(model)
    if isinstance(model, keras.Sequential):
        x = inputs[0]
        for layer in model.layers:
            x = rebuilder.call(layer, x)
        outputs = x
    elif hasattr(model, "_run_through_graph") and getattr(model, "_nodes_by_depth", None):
        outputs = model._run_through_graph(inputs, operation_fn=lambda o: o, call_fn=rebuilder.call)
    else:
        raise RebuildError(f"model {model.name} is a subclassed model ({type(model).__name__}), whose call() "
                           f"tf_keras cannot rebuild; {POST_TRAINING_STILL_WORK}")
    structure = getattr(model, "_inputs_struct", None)
    model_inputs = inputs[0] if len(inputs) == 1 else inputs
    if isinstance(structure, dict):
        model_inputs = dict(zip(structure, inputs))
    rebuilt = tf_keras.Model(model_inputs, outputs, name=model.name)

    copied = 0
    for layer3, layer2 in rebuilder.pairs:
        values = [np.asarray(v.numpy()) for v in layer3.weights]
        shapes3, shapes2 = [v.shape for v in values], [tuple(w.shape) for w in layer2.weights]
        if shapes3 != shapes2:
            raise RebuildError(f"layer {layer3.name} ({type(layer3).__name__}) holds weights of shapes {shapes3} in "
                               f"Keras 3 but {shapes2} in tf_keras; {POST_TRAINING_STILL_WORK}")
        layer2.set_weights(values)
        copied += len(values)
    if copied != len(model.weights):
        raise RebuildError(f"the rebuild copied {copied} of the model's {len(model.weights)} weights (some belong to "
                           f"no layer tf_keras knows); {POST_TRAINING_STILL_WORK}")

    probe = samples if samples is not None else seeded_inputs(model, 4)
    diff = _max_rel_diff(_outputs(model, probe), _outputs(rebuilt, probe))
    if not diff <= REBUILD_TOLERANCE:
        where = _first_divergence(model, rebuilt, rebuilder.pairs, probe)
        raise RebuildError(f"the tf_keras rebuild differs from the Keras 3 model by {diff:.1e} (max relative "
                           f"difference, limit {REBUILD_TOLERANCE:g}){where}; {POST_TRAINING_STILL_WORK}")
    report = RebuildReport(len(rebuilt.layers), rebuilder.operations, tuple(rebuilder.flattened), copied,
                           float(diff), len(probe[0]))
    return rebuilt, report


def seeded_inputs(model, count: int, seed: int = 0) -> list[np.ndarray]:
    """`count` seeded random samples per model input, uniform in [0, 1) (integers in [0, 10) for integer inputs)."""
    rng = np.random.default_rng(seed)
    out = []
    for tensor in model.inputs:
        shape = (count, *(d if d is not None else 1 for d in tuple(tensor.shape)[1:]))
        dtype = np.dtype(getattr(tensor.dtype, "name", tensor.dtype))
        out.append(rng.integers(0, 10, shape).astype(dtype) if dtype.kind in "iub"
                   else rng.random(shape, dtype=np.float32).astype(dtype))
    return out


def model_call(model, tensors: list):
    """Call a tf_keras or Keras 3 model on one array or tensor per input (in `model.inputs` order), arranged as the
    model takes them (a dict for a Keras 3 model built on a dict of inputs); its outputs, flattened. Works eagerly
    and inside a `tf.function`."""
    from keras import tree

    structure = getattr(model, "_inputs_struct", None)
    if is_keras3_model(model) and structure is not None:
        inputs = tree.pack_sequence_as(structure, list(tensors))
    else:
        inputs = tensors[0] if len(tensors) == 1 else list(tensors)
    return tree.flatten(model(inputs, training=False))


def call_model(model, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """`model_call` on arrays, with array outputs."""
    return [np.asarray(o) for o in model_call(model, arrays)]


def _outputs(model, samples: list[np.ndarray]) -> list[np.ndarray]:
    return [o.astype(np.float64) for o in call_model(model, samples)]


def _max_rel_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf")
    return max((float(np.max(np.abs(x - y))) / max(float(np.max(np.abs(x))), 1e-12) if x.size else 0.0)
               for x, y in zip(a, b))


def _first_divergence(model, rebuilt, pairs, samples) -> str:
    """`: first at layer NAME (Class)`, comparing each top-level layer's output in both models; '' if not found."""
    try:
        import keras

        tops = {id(layer) for layer in model.layers}
        for layer3, layer2 in pairs:
            if id(layer3) not in tops:
                continue
            probe3 = keras.Model(model.inputs, layer3.output)
            probe2 = type(rebuilt)(rebuilt.inputs, layer2.output)
            if not _max_rel_diff(_outputs(probe3, samples), _outputs(probe2, samples)) <= REBUILD_TOLERANCE:
                return f": first at layer {layer3.name} ({type(layer3).__name__})"
    except Exception:  # a layer with several call sites has no single output; then the model's outputs must do
        return ""
    return ""


# -- Keras 3 .h5 files that Keras 3 cannot read back ---------------------------------------------------------------

H5_REPAIR_NOTE = ("Keras {version} cannot read this .h5 back by itself: its H5 format drops which entries are "
                  "operations (`x + 3`, `ops.add`) rather than layers of the same name (`Add`); edgert restored "
                  "{count} of them from their configs and loaded the weights")


def _operation_modules() -> dict[str, str]:
    import importlib

    from keras.src.ops.operation import Operation

    found: dict[str, str] = {}
    for name in ("numpy", "nn", "math", "core", "image", "linalg"):
        module = importlib.import_module(f"keras.src.ops.{name}")
        for attr, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, Operation) and obj.__module__ == module.__name__:
                found.setdefault(attr, module.__name__)
    return found


def _mark_operations(config: dict, operations: dict[str, str]) -> int:
    """An operation's config holds its name only (a layer's also has `trainable` and `dtype`): give such entries
    back the module that says they are operations. Returns how many were marked, nested blocks included."""
    count = 0
    for layer in config.get("config", {}).get("layers", []):
        inner = layer.get("config")
        if isinstance(inner, dict) and set(inner) == {"name"} and layer.get("class_name") in operations \
                and "module" not in layer:
            layer["module"] = operations[layer["class_name"]]
            layer["registered_name"] = layer["class_name"]
            count += 1
        elif layer.get("class_name") in ("Functional", "Sequential", "Model"):
            count += _mark_operations(layer, operations)
    return count


def load_repaired_h5(path, custom_objects: dict, safe_mode: bool):
    """Load a Keras 3 `.h5` whose config Keras 3's own H5 loader misreads (ConvNeXt, MobileNetV3): the operations
    are marked again and the model is built from the config with Keras 3's current deserializer; the weights come
    from the file as Keras would read them. Returns (model, note)."""
    import json

    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from edgert.converters._tf import import_keras3

    keras = import_keras3()
    with h5py.File(path, "r") as f:
        raw = f.attrs["model_config"]
        config = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
        count = _mark_operations(config, _operation_modules())
        if not count:
            raise ValueError("nothing to repair")
        with keras.saving.custom_object_scope(custom_objects), keras.src.saving.serialization_lib.SafeModeScope(
                safe_mode):
            model = keras.Model.from_config(config["config"])
        legacy_h5_format.load_weights_from_hdf5_group(f["model_weights"], model)
    return model, H5_REPAIR_NOTE.format(version=keras.__version__, count=count)
