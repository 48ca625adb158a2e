"""Shared fixtures: a small CNN trained on scikit-learn's digits, saved and converted once per session."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest


class _HideModule:
    """A meta-path finder that makes a package unimportable, as on a machine where it is not installed."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname == self.name or fullname.startswith(self.name + "."):
            raise ModuleNotFoundError(f"No module named '{fullname}'", name=fullname)
        return None


# `EDGERT_TEST_HIDE=ai_edge_litert` runs the suite as on a machine without that package: the runtime tests then run on
# the next backend (TensorFlow's interpreter). CI does this for the runtime tests (Makefile, test-backends).
for _name in filter(None, os.environ.get("EDGERT_TEST_HIDE", "").split(",")):
    sys.meta_path.insert(0, _HideModule(_name.strip()))


@pytest.fixture(autouse=True)
def _probe_cache(tmp_path, monkeypatch):
    """Delegate probe results are cached on disk: each test gets its own cache, out of the user's ~/.cache."""
    from edgert.delegates import library

    monkeypatch.setenv("EDGERT_CACHE_DIR", str(tmp_path / "edgert-cache"))
    library._memory_cache.clear()
    # Device profiles: the built-ins only, whatever the developer keeps in ~/.config/edgert/devices.
    monkeypatch.setenv("EDGERT_DEVICES_PATH", str(tmp_path / "no-user-profiles"))
    monkeypatch.delenv("EDGERT_DEVICE", raising=False)


@pytest.fixture(scope="session")
def digits():
    from edgert.converters.digits import digits_split

    return digits_split()


@pytest.fixture(scope="session")
def keras_digits(digits):
    from edgert.converters.digits import train_digits_cnn

    return train_digits_cnn(digits)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def h5_path(keras_digits, models_dir):
    path = models_dir / "digits.h5"
    keras_digits.save(path)
    return path


@pytest.fixture(scope="session")
def calibration_npy(digits, models_dir):
    path = models_dir / "calibration.npy"
    np.save(path, digits.x_train[:300])
    return path


@pytest.fixture(scope="session")
def converted(h5_path, calibration_npy, models_dir):
    """float32, dynamic-range and full-int8 conversions of the digits model: mode -> ConversionResult."""
    from edgert.converters import convert

    return {
        "float32": convert(h5_path, models_dir / "digits.tflite"),
        "dynamic": convert(h5_path, models_dir / "digits_dynamic.tflite", int8=True),
        "int8": convert(h5_path, models_dir / "digits_int8.tflite", int8=True, calibration_data=calibration_npy),
    }


@pytest.fixture(scope="session")
def float_tflite(converted):
    return converted["float32"].output_path


@pytest.fixture(scope="session")
def int8_tflite(converted):
    return converted["int8"].output_path


@pytest.fixture(scope="session")
def two_input_tflite(models_dir):
    """A float model with two named inputs: out = 2 * sum(a) + sum(b)."""
    from edgert.converters._tf import import_tf

    _, keras = import_tf()
    a = keras.Input(shape=(3,), name="a")
    b = keras.Input(shape=(2,), name="b")
    dense = keras.layers.Dense(1, use_bias=False)
    out = dense(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], out)
    dense.set_weights([np.array([[2.0], [2.0], [2.0], [1.0], [1.0]], np.float32)])
    path = models_dir / "two_inputs.h5"
    model.save(path)
    from edgert.converters import convert

    return convert(path, models_dir / "two_inputs.tflite").output_path


def keras3_named_model(path):
    """A Keras 3 `.keras` with an input `image` (8x8x1) and a dict of two outputs of equal shape, `score` and
    `box` (the dict lists score first; the signature sorts them): the case where order and shape cannot say which
    output is which."""
    from edgert.converters._tf import import_keras3

    keras = import_keras3()
    image = keras.Input((8, 8, 1), name="image")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(keras.layers.Flatten()(image))
    score = keras.layers.Dense(4, activation="sigmoid", name="score_head")(hidden)
    box = keras.layers.Dense(4, name="box_head")(hidden)
    keras.Model(image, {"score": score, "box": box}).save(path)
    return path


@pytest.fixture(scope="session")
def named_tflite(models_dir):
    """`keras3_named_model` converted to float32: signature names (`image`, `box`, `score`) that differ from the
    tensor names."""
    from edgert.converters import convert

    source = keras3_named_model(models_dir / "named.keras")
    return convert(source, models_dir / "named.tflite").output_path


@pytest.fixture(scope="session")
def custom_op_tflite(models_dir):
    """A model whose only operator is the custom op `Igamma` (no TFLite kernel)."""
    from edgert.converters._tf import import_tf
    from edgert.runtime.native import native_log_captured

    tf, _ = import_tf()

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def f(x):
        return tf.math.igamma(x, x + 1.0)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    converter.allow_custom_ops = True
    with native_log_captured():
        data = converter.convert()
    path = models_dir / "custom.tflite"
    path.write_bytes(data)
    return path



@pytest.fixture(scope="session")
def mixed_tflite(models_dir):
    """A float model with operators XNNPACK and the GPU refuse (CUMSUM, ARG_MAX, CAST) next to ones they take."""
    from edgert.converters._tf import import_tf
    from edgert.runtime.native import native_log_captured

    tf, keras = import_tf()
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.Lambda(lambda t: tf.math.cumsum(t, axis=1))(x)
    x = keras.layers.Flatten()(x)
    scores = keras.layers.Dense(10, activation="tanh")(x)
    top = keras.layers.Lambda(lambda t: tf.cast(tf.argmax(t, axis=-1), tf.float32))(scores)
    with native_log_captured():
        data = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, [scores, top])).convert()
    path = models_dir / "mixed.tflite"
    path.write_bytes(data)
    return path
