"""Rebuilding a Keras 3 `.keras` file in tf_keras (Keras 2) from its config and weights, for tfmot and the converter.

Keras 3 and tf_keras share layer names and most layer arguments; they differ in how a functional graph's
connections, dtype policies and input shapes are written. Those are translated here; weights are then copied
layer by layer by name from `model.weights.h5`. Layers tf_keras does not have are named in the error.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from edgert.errors import ModelFormatError


def _tensor_refs(value) -> list:
    """The (layer, node, tensor) references inside a Keras 3 call's arguments, in order."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            layer, node, tensor = value["config"]["keras_history"]
            return [[layer, node, tensor, {}]]
        return [r for v in value.values() for r in _tensor_refs(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _tensor_refs(v)]
    return []


# Arguments every tf_keras layer takes through **kwargs.
_BASE_LAYER_ARGS = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size", "weights",
                    "activity_regularizer", "autocast", "input_dim", "dynamic"}


def _accepted_args(keras, class_name: str) -> set[str] | None:
    import inspect

    cls = getattr(keras.layers, class_name, None)
    if cls is None:
        return None
    return set(inspect.signature(cls.__init__).parameters) | _BASE_LAYER_ARGS


def _translate(obj, keras):
    if isinstance(obj, list):
        return [_translate(v, keras) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and "config" in obj:
        return obj["config"]["name"]
    out = {k: _translate(v, keras) for k, v in obj.items() if k not in ("registered_name", "build_config",
                                                                        "compile_config")}
    config = out.get("config")
    if isinstance(config, dict):
        if "batch_shape" in config:
            config["batch_input_shape"] = config.pop("batch_shape")
        for key, value in list(config.items()):
            # The weights are copied afterwards, so initializers only need to exist (Keras 3 adds arguments).
            if key.endswith("_initializer") and isinstance(value, dict):
                config[key] = {"class_name": value.get("class_name"), "config": {}}
        accepted = _accepted_args(keras, str(out.get("class_name"))) if "inbound_nodes" in obj or \
            out.get("module", "").startswith("keras.layers") else None
        if accepted is not None and out.get("class_name") not in ("Functional", "Sequential"):
            for key in set(config) - accepted:
                del config[key]
    if "inbound_nodes" in obj:
        out["inbound_nodes"] = [_tensor_refs(node.get("args", [])) for node in obj["inbound_nodes"]]
    for key in ("input_layers", "output_layers"):
        if isinstance(config, dict) and key in config:
            refs = config[key]
            if refs and not isinstance(refs[0], list):
                config[key] = [refs]
    return out


def rebuild_in_tf_keras(path: Path):
    """Return a tf_keras model equal to the Keras 3 model saved at `path`.

    Raises:
        ModelFormatError: the archive is unreadable, or has layers or structures tf_keras cannot rebuild (named).
    """
    from edgert.converters._tf import import_tf

    _, keras = import_tf()
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
            weights_file = z.read("model.weights.h5")
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelFormatError(f"{path}: cannot read the Keras 3 archive ({exc})") from None

    layer_configs = config.get("config", {}).get("layers", [])
    unknown = sorted({f"{lc.get('name') or lc.get('config', {}).get('name')} ({lc.get('class_name')})"
                      for lc in layer_configs
                      if lc.get("class_name") not in ("InputLayer",)
                      and not hasattr(keras.layers, str(lc.get("class_name")))})
    if unknown:
        raise ModelFormatError(f"{path} (Keras 3) has layers tf_keras cannot rebuild: {', '.join(unknown)}; "
                               "export a SavedModel with model.export('dir') and convert that instead")
    try:
        model = keras.models.model_from_json(json.dumps(_translate(config, keras)))
    except Exception as exc:  # any mismatch in layer arguments between Keras 3 and tf_keras
        raise ModelFormatError(f"{path} (Keras 3) could not be rebuilt in tf_keras: "
                               f"{' '.join(str(exc).split())[:200]}; export a SavedModel with "
                               "model.export('dir') and convert that instead") from None

    import h5py

    with h5py.File(io.BytesIO(weights_file), "r") as f:
        stored = f.get("layers")
        for layer in model.layers:
            if not layer.weights:
                continue
            group = stored.get(f"{layer.name}/vars") if stored is not None else None
            if group is None or len(group) != len(layer.weights):
                raise ModelFormatError(f"{path} (Keras 3): no matching weights for layer {layer.name} "
                                       f"({layer.__class__.__name__}); export a SavedModel and convert that")
            try:
                layer.set_weights([group[str(i)][()] for i in range(len(group))])
            except ValueError as exc:
                raise ModelFormatError(f"{path} (Keras 3): weights of layer {layer.name} do not fit "
                                       f"tf_keras ({' '.join(str(exc).split())[:160]})") from None
    return model
