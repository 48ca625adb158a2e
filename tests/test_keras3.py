"""Keras 3 and tf_keras files of every format, and real architectures: conversion, the tf_keras rebuild for tfmot,
the numerical agreement check, stored code, custom layers and files from newer Kerases."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import zoo
from click.testing import CliRunner

import edgert
from edgert.cli import cli
from edgert.converters import ConvertRecipe, PruneConfig, Quantization, TrainConfig, convert
from edgert.converters.keras_files import read_keras_file
from edgert.errors import ConversionError, ModelFormatError, brief
from tests import needs
from tests.measures import pearson

# -- a small model in every format -------------------------------------------------------------------------------

SMALL = """
i = keras.Input((12, 12, 3), name="image")
x = keras.layers.Rescaling(1 / 255)(i)
x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(x)
x = keras.layers.BatchNormalization()(x)
x = keras.layers.Activation("hard_silu" if keras.__version__.startswith("3") else "relu")(x)
skip = x
x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
x = keras.layers.Add()([x, skip])
x = keras.layers.AveragePooling2D(3, strides=1, padding="same")(keras.layers.MaxPooling2D(4)(x))
x = keras.layers.GlobalAveragePooling2D()(x)
o = keras.layers.Dense(5)(x)
m = keras.Model(i, o)
rng = np.random.default_rng(0)
bn = [l for l in m.layers if "batch_normalization" in l.name][0]
bn.set_weights([rng.uniform(0.5, 1.5, 8), rng.normal(0, 0.1, 8), rng.normal(0, 0.1, 8), rng.uniform(0.5, 1.5, 8)])
"""
FORMAT_SCRIPTS = {
    "tf_keras.h5": ("tf_keras", "m.save(OUT)"),
    "tf_keras.keras": ("tf_keras", "m.save(OUT)"),
    "keras3.h5": ("keras", "m.save(OUT)"),
    "keras3.keras": ("keras", "m.save(OUT)"),
    "keras3_export": ("keras", "m.export(OUT)"),  # a SavedModel directory written by Keras 3
}


def save_as_user(code: str, out, keras_module: str = "keras", backend: str = "tensorflow", save: str = "m.save(OUT)",
                 x=None):
    """Run `code` (which defines `m`) in a fresh process as a user of that Keras would, save it, and return what the
    model computes on `x` (before saving) when given."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "KERAS_BACKEND")}
    env["KERAS_BACKEND"] = backend
    if keras_module == "tf_keras":
        env["TF_USE_LEGACY_KERAS"] = "1"
    expected = f"{out}.expected.npy"
    x_file = f"{out}.x.npy"
    if x is not None:
        np.save(x_file, x)
    script = (f"import numpy as np\nimport {keras_module} as keras\nOUT = {str(out)!r}\n{code}\n"
              + (f"np.save({expected!r}, np.asarray(m(np.load({x_file!r}))))\n" if x is not None else "")
              + f"{save}\n")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(expected) if x is not None else None


@pytest.fixture(scope="module")
def small_inputs():
    return np.random.default_rng(1).uniform(0, 255, (16, 12, 12, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def small_models(tmp_path_factory, small_inputs):
    """The small model saved in every format: {format: (path, expected outputs on small_inputs)}."""
    directory = tmp_path_factory.mktemp("formats")
    made = {}
    for fmt, (module, save) in FORMAT_SCRIPTS.items():
        out = directory / ("export" if fmt == "keras3_export" else f"small.{fmt}")
        made[fmt] = (out, save_as_user(SMALL, out, module, save=save, x=small_inputs))
    return made


def test_which_keras_wrote_a_file_is_read_from_the_file(small_models, tmp_path):
    expected = {"tf_keras.h5": ("h5", "tf_keras"), "tf_keras.keras": ("keras", "tf_keras"),
                "keras3.h5": ("h5", "keras3"), "keras3.keras": ("keras", "keras3"),
                "keras3_export": ("saved_model", "saved_model")}
    for fmt, (path, _) in small_models.items():
        found = read_keras_file(path)
        assert (found.format, found.writer) == expected[fmt], fmt
        if found.writer == "keras3":
            assert found.keras_version.startswith("3.")
        elif found.writer == "tf_keras":
            assert found.keras_version.startswith("2.")
    # The extension is not trusted: a Keras 3 archive named .h5 is still a Keras 3 archive, and converts.
    renamed = tmp_path / "actually_a_zip.h5"
    renamed.write_bytes(small_models["keras3.keras"][0].read_bytes())
    assert (read_keras_file(renamed).format, read_keras_file(renamed).writer) == ("keras", "keras3")
    result = convert(renamed, tmp_path / "renamed.tflite")
    assert result.agreement.max_rel_diff <= 1e-4 and result.source_format.startswith("Keras 3.")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMAT_SCRIPTS))
@pytest.mark.parametrize("mode", ["float32", "float16", "dynamic", "int8", "int16x8"])
def test_every_format_converts_in_every_mode(small_models, small_inputs, tmp_path, fmt, mode):
    path, expected = small_models[fmt]
    np.save(tmp_path / "calibration.npy", small_inputs)
    calibrated = mode in ("int8", "int16x8")
    result = convert(path, tmp_path / "m.tflite", recipe=ConvertRecipe(Quantization(mode)),
                     calibration_data=tmp_path / "calibration.npy" if calibrated else None)
    assert result.mode.value == mode and not result.warnings, result.warnings
    a = result.agreement
    assert a.samples == 8 and a.inputs == ("calibration samples" if calibrated else "seeded random inputs")
    got = edgert.load(result.output_path).run(small_inputs)[0]
    if mode == "float32":
        assert a.max_rel_diff <= 1e-4
        assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected))  # independent of edgert's check
    else:  # centred, measured here; and the report's cosine is the one this measurement gives on its samples
        assert pearson(got, expected) >= 0.98, pearson(got, expected)
        cos = np.sum(got * expected, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
        assert a.outputs[0].cosine == pytest.approx(cos[:a.samples].mean(), abs=1e-3), (a.describe(), cos)
    report = json.loads(open(result.report_path).read())
    assert report["agreement"]["mode"] == mode and report["source_format"] == result.source_format


def test_a_keras3_model_trained_under_jax_converts(tmp_path, small_inputs):
    needs.module("jax", "the JAX backend is not installed (pip install jax)")
    train = """
rng = np.random.default_rng(0)
m.compile(optimizer="adam", loss=keras.losses.MeanSquaredError())
m.fit(rng.uniform(0, 255, (32, 12, 12, 3)), rng.normal(size=(32, 5)), epochs=2, batch_size=8, verbose=0)
assert keras.backend.backend() == "jax"
"""
    out = tmp_path / "jax.keras"
    expected = save_as_user(SMALL + train, out, backend="jax", x=small_inputs)
    np.save(tmp_path / "calibration.npy", small_inputs)
    for mode in ("float32", "int8"):
        result = convert(out, tmp_path / f"{mode}.tflite", recipe=ConvertRecipe(Quantization(mode)),
                         calibration_data=tmp_path / "calibration.npy" if mode == "int8" else None)
        got = edgert.load(result.output_path).run(small_inputs)[0]
        if mode == "float32":
            np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max())
        else:
            assert pearson(got, expected) >= 0.98 and not result.warnings, pearson(got, expected)


# -- real architectures ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")


# Every architecture from every format in float32; int8 from Keras 3's .keras (a Keras 3 .h5 takes the same path once
# loaded) and, for two, from tf_keras (its own converter path). `make zoo` runs the whole matrix and more models.
ZOO = [(arch, fmt, "float32") for arch in zoo.CI_ARCHITECTURES for fmt in zoo.FORMATS] + \
      [(arch, "keras3.keras", "int8") for arch in zoo.CI_ARCHITECTURES] + \
      [(arch, "tf_keras.h5", "int8") for arch in ("MobileNetV2", "ConvNeXtTiny")]


# In `make test`: MobileNetV2 and MobileNetV3Small in every form and mode, the larger ones from Keras 3's .keras in
# float32; the rest of the matrix is `make heavy-test`'s (a minute each).
LIGHT = ("MobileNetV2", "MobileNetV3Small")


def _zoo_case(arch, fmt, mode):
    light = (arch in LIGHT or (fmt, mode) == ("keras3.keras", "float32")) and \
        (arch, fmt, mode) != ("MobileNetV3Small", "tf_keras.h5", "float32")  # MobileNetV2 covers that form
    return pytest.param(arch, fmt, mode, id=f"{arch}-{fmt}-{mode}", marks=() if light else pytest.mark.heavy)


@pytest.mark.slow
@pytest.mark.parametrize("arch, fmt, mode", [_zoo_case(*case) for case in ZOO])
def test_real_architectures_convert(zoo_dir, tmp_path, arch, fmt, mode):
    path = zoo.build(arch, fmt, zoo_dir)
    x = zoo.images(arch, zoo.SAMPLES)
    expected = zoo.expected_outputs(path).astype(np.float64)
    if mode == "float32":
        result = convert(path, tmp_path / "m.tflite")
        got = edgert.load(result.output_path).run(x)[0]
        assert np.max(np.abs(got - expected)) <= 1e-4 * np.max(np.abs(expected)), arch
        assert result.agreement.max_rel_diff <= 1e-4 and not result.warnings
        return
    np.save(tmp_path / "calibration.npy", zoo.images(arch, 16, seed=1))
    result = convert(path, tmp_path / "m_int8.tflite", int8=True, calibration_data=tmp_path / "calibration.npy")
    got = edgert.load(result.output_path).run(x)[0]
    worst = min(pearson(g, e) for g, e in zip(got, expected))  # centred, sample by sample, on the logits
    assert worst >= 0.98 and not result.warnings, (arch, worst, result.warnings)
    assert result.mode.value == "int8" and edgert.inspect_model(result.output_path).inputs[0].dtype == "int8"


def synthetic_training_data(arch: str, path, count: int = 32):
    x = zoo.images(arch, count, seed=2)
    y = np.random.default_rng(3).integers(0, 1000, count)
    np.savez(path, x=x, y=y)
    return path


@pytest.mark.slow
@pytest.mark.heavy  # four minutes: tfmot's graphs (test_channels and test_stages prune and QAT small models in make test)
@pytest.mark.parametrize("arch", ["MobileNetV2"])  # EfficientNetB0 too in `make zoo` (minutes each: tfmot's graphs)
def test_pruning_and_qat_on_keras3_models_go_through_the_checked_rebuild(zoo_dir, tmp_path, arch):
    path = zoo.build(arch, "keras3.keras", zoo_dir)
    train = synthetic_training_data(arch, tmp_path / "train.npz")
    one_epoch = TrainConfig(epochs=1, batch_size=16)
    for recipe in (ConvertRecipe(Quantization.INT8, prune=PruneConfig(0.5), train=one_epoch),
                   ConvertRecipe(Quantization.INT8, qat=True, train=one_epoch)):
        result = convert(path, tmp_path / f"{recipe.name}.tflite", recipe=recipe, train_data=train)
        rebuild = next(s for s in result.stages if s.stage == "rebuild")
        assert rebuild.notes and "rebuilt in tf_keras" in rebuild.notes[0] and "agree with the Keras 3 model" in \
            rebuild.notes[0]
        assert any(s.stage == ("prune" if recipe.prune else "qat") for s in result.stages)
        if recipe.prune:
            assert max(next(s for s in result.stages if s.stage == "prune").sparsity.values()) >= 0.49
        assert result.agreement is not None and result.agreement.reference == "the Keras model after " + (
            "prune" if recipe.prune else "qat")
        assert result.agreement.min_cosine > 0.9, result.agreement.describe()


# -- the rebuild ---------------------------------------------------------------------------------------------------


def test_rebuild_of_keras3_only_constructs_is_checked_numerically():
    from edgert.converters._tf import import_keras3
    from edgert.converters.keras3 import rebuild_in_tf_keras

    keras = import_keras3()
    keras.utils.set_random_seed(0)
    a = keras.Input((10, 10, 3), name="a")
    b = keras.Input((4,), name="b")
    block = keras.Sequential([keras.layers.Conv2D(6, 3, padding="same"), keras.layers.LayerNormalization()],
                             name="block")
    shared = keras.layers.Dense(6, activation="gelu", name="shared")
    x = block(a)
    x = keras.layers.Activation("hard_silu")(x)
    x = keras.layers.Activation("hard_sigmoid")(x) + 3.0  # an operation with a constant
    x = keras.ops.mean(x, axis=(1, 2))
    y = shared(keras.layers.Dense(6, dtype="float32")(b))
    z = shared(x) * keras.layers.Activation("relu6")(y)  # the shared layer is called twice
    z = keras.layers.Dropout(0.3)(z)
    model = keras.Model({"a": a, "b": b}, [z, keras.layers.Dense(2, name="second")(z)])
    rebuilt, report = rebuild_in_tf_keras(model)
    assert report.max_rel_diff <= 1e-5 and "block" in report.flattened and report.operations >= 2
    assert report.weights == len(model.weights)
    assert type(rebuilt).__module__.startswith("tf_keras")
    assert not any(type(layer).__name__ in ("Sequential", "Functional") for layer in rebuilt.layers)
    # tfmot clones models: the rebuild survives clone_model (the Keras 3 operations included).
    from edgert.converters._tf import import_tf

    _, tf_keras = import_tf()
    clone = tf_keras.models.clone_model(rebuilt)
    clone.set_weights(rebuilt.get_weights())
    probe = [np.random.default_rng(0).random((3, 10, 10, 3), dtype=np.float32),
             np.random.default_rng(1).random((3, 4), dtype=np.float32)]
    np.testing.assert_allclose(np.asarray(clone(probe)[1]), np.asarray(rebuilt(probe)[1]), rtol=1e-5, atol=1e-6)


def test_rebuild_names_the_layer_that_computes_differently(monkeypatch):
    from edgert.converters import keras3
    from edgert.converters._tf import import_keras3

    keras = import_keras3()
    i = keras.Input((6,))
    x = keras.layers.Dense(6, name="d1")(i)
    x = keras.layers.Activation("hard_sigmoid", name="gate")(x)
    model = keras.Model(i, keras.layers.Dense(3, name="d2")(x))
    # tf_keras's hard_sigmoid is another formula (a slope of 0.2, not 1/6): taken by name, the rebuild drifts.
    monkeypatch.setattr(keras3, "_SAME_ACTIVATIONS", keras3._SAME_ACTIVATIONS | {"hard_sigmoid"})
    with pytest.raises(keras3.RebuildError, match=r"differs from the Keras 3 model by .* first at layer gate "
                                                  r"\(Activation\); post-training modes .* still work") as caught:
        keras3.rebuild_in_tf_keras(model, samples=[np.linspace(-4, 4, 60, dtype=np.float32).reshape(10, 6)])
    assert "\n" not in str(caught.value)


CUSTOM_LAYER = """
import keras

@keras.saving.register_keras_serializable(package="demo")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
"""
CUSTOM_MODEL = "m = keras.Sequential([keras.Input((4,)), Scale(3.0, name='scaler'), keras.layers.Dense(2)])"


def test_custom_layers_need_custom_objects_and_are_named(tmp_path):
    out = tmp_path / "custom.keras"
    save_as_user(CUSTOM_LAYER.replace("import keras\n", "") + CUSTOM_MODEL, out)
    with pytest.raises(ModelFormatError, match=r"does not know the class 'Scale' .*--custom-objects FILE\.py"):
        convert(out, tmp_path / "m.tflite")
    assert not list(tmp_path.glob("m.tflite*"))
    module = tmp_path / "layers.py"
    module.write_text(CUSTOM_LAYER)
    result = convert(out, tmp_path / "m.tflite", custom_objects=module)
    assert result.agreement.max_rel_diff <= 1e-5
    # Pruning needs the tf_keras rebuild, which has no Scale: the layer is named and post-training still works.
    np.savez(tmp_path / "train.npz", x=np.random.default_rng(0).random((16, 4), dtype=np.float32),
             y=np.zeros(16, np.int64))
    with pytest.raises(ConversionError, match=r"layer scaler \(Scale\) has no tf_keras equivalent .*post-training "
                                              r"modes \(--int8"):
        convert(out, tmp_path / "p.tflite", recipe=ConvertRecipe(Quantization.INT8, prune=PruneConfig(0.5)),
                train_data=tmp_path / "train.npz", custom_objects=module)
    assert not list(tmp_path.glob("p.tflite*"))


@pytest.mark.parametrize("content, message", [
    ("raise RuntimeError('no GPU here')\n", r"failed to import \(line 1\): RuntimeError: no GPU here"),
    ("import not_a_module_anywhere\n", r"failed to import \(line 1\): ModuleNotFoundError: No module named"),
    ("def broken(:\n", r"failed to import: SyntaxError"),
])
def test_custom_objects_file_that_fails_to_import(small_models, tmp_path, content, message):
    module = tmp_path / "layers.py"
    module.write_text(content)
    out = CliRunner().invoke(cli, ["convert", str(small_models["keras3.keras"][0]), "-o", str(tmp_path / "m.tflite"),
                                   "--custom-objects", str(module)])
    assert out.exit_code == 1 and out.output.count("\n") == 1, out.output
    assert re.search(message, out.output) and "Traceback" not in out.output
    assert not list(tmp_path.glob("m.tflite*"))


# -- stored code and newer Kerases -------------------------------------------------------------------------------

LAMBDA_MODEL = """
i = keras.Input((4,))
x = keras.layers.Lambda(lambda t: t * 2.0, name="doubler")(i)
m = keras.Model(i, keras.layers.Dense(2)(x))
"""


@pytest.mark.parametrize("fmt", ["tf_keras.h5", "keras3.h5", "keras3.keras"])
def test_lambda_layers_need_trust_model(tmp_path, fmt):
    out = tmp_path / f"lambda.{fmt.split('.')[-1]}"
    x = np.random.default_rng(0).random((8, 4), dtype=np.float32)
    module = "tf_keras" if fmt.startswith("tf_keras") else "keras"
    expected = save_as_user(LAMBDA_MODEL, out, module, x=x)
    result = CliRunner().invoke(cli, ["convert", str(out), "-o", str(tmp_path / "m.tflite")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "layer doubler (Lambda) holds Python code" in result.output and "--trust-model" in result.output
    assert not list(tmp_path.glob("m.tflite*"))
    result = CliRunner().invoke(cli, ["convert", str(out), "-o", str(tmp_path / "m.tflite"), "--trust-model"])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(edgert.load(tmp_path / "m.tflite").run(x)[0], expected, rtol=1e-5)


def _rewrite_metadata(source, target, version: str, break_config: bool = False) -> None:
    with zipfile.ZipFile(source) as z, zipfile.ZipFile(target, "w") as out:
        for name in z.namelist():
            data = z.read(name)
            if name == "metadata.json":
                data = json.dumps({**json.loads(data), "keras_version": version}).encode()
            elif name == "config.json" and break_config:
                config = json.loads(data)
                config["config"]["layers"][1]["config"]["a_newer_argument"] = 1.5  # what a later Keras might add
                data = json.dumps(config).encode()
            out.writestr(name, data)


def test_files_from_a_newer_keras_name_both_versions(small_models, tmp_path):
    import keras

    source = small_models["keras3.keras"][0]
    _rewrite_metadata(source, tmp_path / "future.keras", "3.99.0", break_config=True)
    with pytest.raises(ModelFormatError, match=rf"saved by Keras 3\.99\.0, newer than the Keras {keras.__version__}"
                                               r" installed here"):
        convert(tmp_path / "future.keras", tmp_path / "m.tflite")
    _rewrite_metadata(source, tmp_path / "major.keras", "4.1.0")
    with pytest.raises(ModelFormatError, match=rf"saved by Keras 4\.1\.0; this is Keras {keras.__version__}"):
        convert(tmp_path / "major.keras", tmp_path / "m.tflite")
    _rewrite_metadata(source, tmp_path / "newer_but_fine.keras", "3.99.0")  # it loads: no reason to refuse
    assert convert(tmp_path / "newer_but_fine.keras", tmp_path / "ok.tflite").agreement.max_rel_diff <= 1e-4
    assert not list(tmp_path.glob("m.tflite*"))


# -- messages ------------------------------------------------------------------------------------------------------


def test_messages_are_shortened_between_words_and_drop_quoted_configs():
    config = "{'name': 'input_layer', 'batch_shape': [None, 96, 96, 3], " + "'x': 1, " * 200 + "}"
    text = f"Error when deserializing class 'InputLayer' using config={config}. Unrecognized keyword arguments"
    short = brief(text, 120)
    assert short.startswith("Error when deserializing class 'InputLayer' using config={...}.")
    assert "Unrecognized keyword arguments" in short
    long = brief("word " * 100, 50)
    assert len(long) <= 50 and long.endswith(" ...") and long[:-4].split(" ")[-1] == "word"
    assert brief("ok\n  fine") == "ok fine"


def test_a_same_padded_pool_wider_than_its_input_is_accepted(tmp_path):
    """InceptionV3 at 96 px ends in a 3x3 SAME average pool over a 1x1 map: valid, and the runtime must load it."""
    code = """
i = keras.Input((4, 4, 2))
x = keras.layers.MaxPooling2D(4)(i)
x = keras.layers.AveragePooling2D(3, strides=1, padding="same")(x)
m = keras.Model(i, keras.layers.Flatten()(x))
"""
    out = tmp_path / "pool.keras"
    x = np.random.default_rng(0).random((2, 4, 4, 2), dtype=np.float32)
    expected = save_as_user(code, out, x=x)
    result = convert(out, tmp_path / "pool.tflite")
    assert "AVERAGE_POOL_2D" in dict(edgert.inspect_model(result.output_path).operators)
    np.testing.assert_allclose(edgert.load(result.output_path).run(x)[0], expected, rtol=1e-6)
