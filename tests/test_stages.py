"""Recipes and optimization stages on digits: the acceptance figures, the report, and bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import edgert
from edgert.tflite import flatbuffer
from edgert.converters import (
    PRESETS,
    ConvertRecipe,
    PruneConfig,
    Quantization,
    RecipeError,
    convert,
    preset,
    recipe_from_options,
)
from edgert.errors import InputDataError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def data_npz(digits, models_dir):
    train, test = models_dir / "train.npz", models_dir / "test.npz"
    np.savez(train, x=digits.x_train, y=digits.y_train)
    np.savez(test, x=digits.x_test, y=digits.y_test)
    return train, test


@pytest.fixture(scope="session")
def float_accuracy(float_tflite, digits):
    return float((edgert.load(float_tflite).run(digits.x_test)[0].argmax(1) == digits.y_test).mean())


def _run(h5_path, tmp_path, data_npz, name, recipe, **kw):
    train, test = data_npz
    return convert(h5_path, tmp_path / f"{name}.tflite", recipe=recipe, train_data=train, eval_data=test, **kw)


def _weights(path) -> dict[str, np.ndarray]:
    """Constant weight tensors of the exported model, by tensor name, as stored (int8 for quantized models)."""
    data = open(path, "rb").read()
    fm = flatbuffer.parse(data)
    out = {}
    for t in fm.subgraphs[0].tensors:
        if fm.buffer_sizes[t.buffer] and t.dtype in ("int8", "float32") and len(t.shape) >= 2:
            out[t.name] = np.frombuffer(fm.buffer(data, t.buffer), dtype=t.dtype).reshape(t.shape)
    return out


def test_ptq_int8_within_1_5_points(h5_path, tmp_path, data_npz, float_accuracy):
    result = _run(h5_path, tmp_path, data_npz, "ptq", preset("int8"))
    assert result.mode is Quantization.INT8 and result.inputs[0].dtype == "int8"
    assert (float_accuracy - result.accuracy_tflite) * 100 <= 1.5
    assert result.accuracy_drop is not None and result.accuracy_drop <= 1.5
    report = json.loads(open(result.report_path).read())
    assert report["accuracy_tflite"] == pytest.approx(result.accuracy_tflite)
    assert ConvertRecipe.load(result.recipe_path) == result.recipe


def test_prune75_int8_sparsity_and_accuracy(h5_path, tmp_path, data_npz, float_accuracy):
    result = _run(h5_path, tmp_path, data_npz, "prune75", preset("prune75_int8"))
    prune_stage = next(s for s in result.stages if s.stage == "prune")
    assert prune_stage.sparsity and min(prune_stage.sparsity.values()) >= 0.74
    assert [s.name for s in result.inputs] == ["image"] and [s.name for s in result.outputs] == ["dense"]
    exported = [w for w in _weights(result.output_path).values() if w.size >= 64]
    assert exported and all((w == 0).mean() >= 0.74 for w in exported)
    assert (float_accuracy - result.accuracy_tflite) * 100 <= 2.0
    # the original is measured before fine-tuning changes its layers in place
    assert result.accuracy_source == pytest.approx(float_accuracy, abs=0.005)
    assert prune_stage.gzip_bytes < result.stages[0].gzip_bytes  # zeros compress


def test_qat_int8_within_1_point(h5_path, tmp_path, data_npz, float_accuracy):
    result = _run(h5_path, tmp_path, data_npz, "qat", preset("qat_int8"))
    qat_stage = next(s for s in result.stages if s.stage == "qat")
    assert "conv2d" in qat_stage.quantized_layers and not qat_stage.float_layers
    assert result.inputs[0].dtype == "int8"
    # QAT wraps every layer (quant_dense): the .tflite keeps the source's names all the same.
    assert [s.name for s in result.inputs] == ["image"] and [s.name for s in result.outputs] == ["dense"]
    assert (float_accuracy - result.accuracy_tflite) * 100 <= 1.0


def test_2_of_4_pruning_in_exported_model(tmp_path, data_npz, digits):
    from edgert.converters._tf import import_tf

    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                            keras.layers.Dense(10, activation="softmax")])
    mlp.compile("adam", "sparse_categorical_crossentropy")
    mlp.fit(digits.x_train, digits.y_train, epochs=10, verbose=0)
    mlp.save(tmp_path / "mlp.h5")
    recipe = ConvertRecipe(Quantization.INT8, prune=PruneConfig(0.5, structure="2:4"))
    result = _run(tmp_path / "mlp.h5", tmp_path, data_npz, "sparse24", recipe)
    weights = _weights(result.output_path)
    assert len(weights) == 2
    for w in weights.values():  # TFLite FULLY_CONNECTED weights are (out, in): groups run along `in`
        groups = w.reshape(w.shape[0], -1, 4)
        assert ((groups == 0).sum(axis=-1) >= 2).all()
    assert result.accuracy_tflite >= 0.9


def test_one_shot_pruning_without_training_data(h5_path, tmp_path):
    result = convert(h5_path, tmp_path / "oneshot.tflite", recipe=ConvertRecipe(prune=PruneConfig(0.5)))
    prune_stage = next(s for s in result.stages if s.stage == "prune")
    assert min(prune_stage.sparsity.values()) >= 0.49  # the mask was really applied
    assert any("one-shot" in n for n in result.notes)
    assert all((w == 0).mean() >= 0.49 for w in _weights(result.output_path).values() if w.size >= 64)


def test_clustering_keeps_few_distinct_weights(h5_path, tmp_path, data_npz):
    result = _run(h5_path, tmp_path, data_npz, "cluster", preset("cluster16_int8"))
    cluster_stage = next(s for s in result.stages if s.stage == "cluster")
    assert cluster_stage.clusters and max(cluster_stage.clusters.values()) <= 16
    assert result.accuracy_tflite >= 0.9


def test_distillation_student_within_3_points(h5_path, tmp_path, data_npz, digits, keras_digits):
    from edgert.converters._tf import import_tf

    _, keras = import_tf()
    keras.utils.set_random_seed(1)
    student = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10)])
    student.save(tmp_path / "student.h5")
    assert student.count_params() * 2 <= keras_digits.count_params()
    recipe = recipe_from_options(distill_from=h5_path)
    result = _run(tmp_path / "student.h5", tmp_path, data_npz, "student", recipe)
    teacher_accuracy = float((keras_digits.predict(digits.x_test, verbose=0).argmax(1) == digits.y_test).mean())
    assert (teacher_accuracy - result.accuracy_tflite) * 100 <= 3.0


def test_qat_leaves_rescaling_in_float_and_reports_it(tmp_path, data_npz, digits):
    from edgert.converters._tf import import_tf

    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(2.0, offset=-1.0, name="scale"),
                              keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits.x_train, digits.y_train, epochs=5, verbose=0)
    model.save(tmp_path / "rescale.h5")
    result = _run(tmp_path / "rescale.h5", tmp_path, data_npz, "rescale_qat", preset("qat_int8"))
    qat_stage = next(s for s in result.stages if s.stage == "qat")
    assert qat_stage.float_layers == ("scale (Rescaling)",)
    assert any("scale (Rescaling)" in n for n in result.notes)
    assert result.accuracy_tflite >= 0.9


@pytest.mark.parametrize("mode, dtype, label", [
    ("float16", "float32", "float16 weights"),
    ("int16x8", "int16", "int16x8"),
    ("edgetpu", "int8", "full integer (int8)"),
])
def test_other_post_training_modes(h5_path, tmp_path, data_npz, mode, dtype, label, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no edgetpu_compiler here, whatever the machine has
    result = _run(h5_path, tmp_path, data_npz, mode, preset(mode))
    assert result.inputs[0].dtype == dtype
    assert edgert.inspect_model(result.output_path).quantization == label
    assert result.accuracy_tflite >= 0.95
    if mode == "edgetpu":
        assert result.inputs[0].shape == (1, 8, 8, 1) and result.inputs[0].shape_signature == (1, 8, 8, 1)
        assert result.edgetpu_output is None
        assert any("edgetpu_compiler is not on PATH" in n for n in result.notes)


# -- recipes ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name, tmp_path):
    recipe = preset(name)
    recipe.save(tmp_path / "r.json")
    assert ConvertRecipe.load(tmp_path / "r.json") == recipe
    assert recipe.name == name


@pytest.mark.parametrize("options, message", [
    (dict(int16x8=True, float16=True), "--float16 and --int16x8 conflict"),
    (dict(prune=0.0), "between 0 and 1"),
    (dict(prune=1.0), "between 0 and 1"),
    (dict(prune=0.5, prune_structure="2-4"), "M:N"),
    (dict(prune=0.5, prune_structure="4:2"), "M:N"),
    (dict(prune_structure="2:4"), "need --prune"),
    (dict(cluster=1), "at least 2 clusters"),
    (dict(qat=True, float16=True), "--qat trains for int8"),
    (dict(float_io=True, dynamic=True), "--float-io applies"),
    (dict(epochs=0), "--epochs must be a positive"),
])
def test_conflicting_options_are_named(options, message):
    with pytest.raises(RecipeError, match=message):
        recipe_from_options(**options)


@pytest.mark.parametrize("document, message", [
    ({"quantization": "int8", "colour": "red"}, "unknown key.*colour"),
    ({"quantization": "int9"}, "quantization must be one of"),
    ({"prune": {"sparsity": 0.5, "shape": "x"}}, "prune: unknown key.*shape"),
    ({"prune": 0.5}, "'prune' must be an object"),
    ({"qat": "yes"}, "'qat' must be bool"),
    ({"calibration_samples": "many"}, "'calibration_samples' must be int"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_recipe_files(tmp_path, document, message):
    (tmp_path / "r.json").write_text(json.dumps(document))
    with pytest.raises(RecipeError, match=message):
        ConvertRecipe.load(tmp_path / "r.json")


def test_older_recipe_keys_are_read():
    assert ConvertRecipe.from_dict({"mode": "float16"}).quantization is Quantization.FLOAT16


# -- bad input ---------------------------------------------------------------------------------------------------


def test_stages_that_need_training_data(h5_path, tmp_path):
    for recipe, option in ((preset("qat_int8"), "--qat"), (recipe_from_options(distill_from=h5_path),
                                                           "--distill-from")):
        with pytest.raises(InputDataError, match=f"{option} need.* training data"):
            convert(h5_path, tmp_path / "o.tflite", recipe=recipe)
    assert sorted(os.listdir(tmp_path)) == []


def test_training_data_that_does_not_fit(h5_path, tmp_path, digits):
    cases = {
        "shape.npz": (dict(x=digits.x_train[:, :, :, 0], y=digits.y_train), r"x has shape \(1348, 8, 8\)"),
        "labels.npz": (dict(x=digits.x_train, y=digits.y_train + 5), "labels run from 5 to 14"),
        "count.npz": (dict(x=digits.x_train, y=digits.y_train[:10]), "one integer label per sample"),
        "names.npz": (dict(images=digits.x_train), "needs arrays named x and y"),
    }
    for name, (arrays, message) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(InputDataError, match=message):
            convert(h5_path, tmp_path / "o.tflite", recipe=preset("qat_int8"), train_data=tmp_path / name)
    assert not (tmp_path / "o.tflite").exists()


def test_teacher_that_does_not_match(h5_path, tmp_path, data_npz):
    from edgert.converters._tf import import_tf

    _, keras = import_tf()
    teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    teacher.save(tmp_path / "teacher.h5")
    with pytest.raises(InputDataError, match=r"teacher outputs shape \(3,\), the student \(10,\)"):
        convert(h5_path, tmp_path / "o.tflite", recipe=recipe_from_options(distill_from=tmp_path / "teacher.h5"),
                train_data=data_npz[0])
    assert not (tmp_path / "o.tflite").exists()


def test_xnnpack_policy_falls_back_to_pointwise_convolutions(tmp_path, data_npz, h5_path):
    from edgert.converters._tf import import_tf
    from edgert.errors import ConversionError

    _, keras = import_tf()
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="spatial"),
                              keras.layers.Conv2D(16, 1, activation="relu", name="pointwise"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "pw.h5")
    recipe = ConvertRecipe(prune=PruneConfig(0.5, policy="xnnpack"))
    result = convert(tmp_path / "pw.h5", tmp_path / "pw.tflite", recipe=recipe)
    prune_stage = next(s for s in result.stages if s.stage == "prune")
    assert prune_stage.sparsity["pointwise"] >= 0.49 and prune_stage.sparsity["spatial"] == 0.0
    assert any("1x1 convolution(s) layer by layer" in n for n in result.notes)
    # the digits CNN has no 1x1 convolution: a clear error, nothing written
    with pytest.raises(ConversionError, match="no 1x1 convolutions to prune instead"):
        convert(h5_path, tmp_path / "x.tflite", recipe=recipe)
    assert not (tmp_path / "x.tflite").exists()
