"""Structured (channel) pruning: dependency groups, exact weight slicing, real architectures, the convert stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgert.converters.recipe import ChannelPruneConfig, ConvertRecipe, RecipeError, TrainConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def keras():
    from edgert.converters._tf import import_tf

    return import_tf()[1]


def _dead_channel_model(keras):
    """Residual add, depthwise, concatenation and Flatten -> Dense, with channels 8..15 of every group dead
    (their filters and biases zero, so ReLU gives 0): pruning half of the channels must remove exactly those and
    leave the outputs unchanged."""
    L = keras.layers
    inp = keras.Input((8, 8, 3))
    c1 = L.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inp)
    d = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(c1)
    b = L.BatchNormalization(name="bn")(d)
    r = L.ReLU(name="r")(b)
    c2 = L.Conv2D(16, 1, activation="relu", name="c2")(r)
    a = L.Add(name="add")([c1, c2])
    c3 = L.Conv2D(16, 1, activation="relu", name="c3")(a)
    cat = L.Concatenate(name="cat")([a, c3])
    flat = L.Flatten(name="flat")(L.MaxPooling2D(2, name="pool")(cat))
    out = L.Dense(10, name="out")(flat)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        weights = [rng.normal(0, 0.3, w.shape).astype(np.float32) for w in layer.get_weights()]
        if layer.name == "bn":  # gamma, beta, mean, variance: a dead channel stays 0 through it
            weights = [np.abs(weights[0]) + 0.5, weights[1], weights[2], np.abs(weights[3]) + 0.5]
            weights[1][8:] = 0
            weights[2][8:] = 0
        if layer.name in ("c1", "c2", "c3"):
            weights[0][..., 8:] = 0
            weights[1][8:] = 0
        layer.set_weights(weights) if weights else None
    return model


def test_dead_channels_are_removed_and_the_outputs_do_not_change(keras):
    from edgert.converters.channels import prune_channels

    model = _dead_channel_model(keras)
    x = np.random.default_rng(1).uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
    pruned, report = prune_channels(model, ChannelPruneConfig(0.5))
    widths = {layer.name: layer.output_shape[-1] for layer in pruned.layers}
    assert widths["c1"] == widths["c2"] == widths["dw"] == widths["bn"] == widths["add"] == 8  # one group
    assert widths["c3"] == 8 and widths["cat"] == 16 and widths["out"] == 10  # the output keeps its width
    assert pruned.get_layer("out").get_weights()[0].shape == (16 * 16, 10)  # 4x4 positions x 16 channels
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    assert report.pruned_groups == 2 and report.macs_ratio < 0.5 and report.params_ratio < 0.6
    assert {row.name for row in report.layers} >= {"c1", "c2", "c3", "dw", "bn", "out"}


def test_bn_criterion_and_global_policy_with_a_floor(keras):
    from edgert.converters.channels import prune_channels

    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10, alpha=0.35)
    _, uniform = prune_channels(model, ChannelPruneConfig(0.5, criterion="bn"))
    pruned, report = prune_channels(model, ChannelPruneConfig(0.5, policy="global", min_channels=8))
    for row in report.layers:
        assert row.channels_after >= min(8, row.channels_before)
        if row.channels_before >= 32 and row.channels_after != row.channels_before:
            assert row.channels_after % 8 == 0, row
    assert 0.1 < report.macs_ratio < 0.9 and 0.1 < uniform.macs_ratio < 0.9


@pytest.mark.parametrize("arch", ["MobileNetV2", "ResNet50", "EfficientNetB0", "MobileNetV3Small", "DenseNet121"])
def test_real_architectures_become_smaller_dense_models(keras, arch):
    """Residuals, squeeze-excite gates (with their Reshape), hard-swish written as TensorFlow ops, dense blocks'
    concatenations: every group prunes, the model runs, and MACs fall roughly with the square of the width."""
    from edgert.converters.channels import prune_channels

    model = getattr(keras.applications, arch)(weights=None, input_shape=(64, 64, 3), classes=10)
    pruned, report = prune_channels(model, ChannelPruneConfig(0.5))
    assert report.pruned_groups >= report.groups - 3 and not report.kept, report.kept
    assert 0.15 < report.macs_ratio < 0.45 and report.params_after < report.params_before
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    assert pruned.predict(x, verbose=0).shape == (2, 10)


def test_an_unknown_layer_stops_its_group_and_is_named(keras):
    from edgert.converters.channels import prune_channels

    L = keras.layers
    inp = keras.Input((8, 8, 3))
    a = L.Conv2D(16, 3, name="a")(inp)
    p = L.Permute((3, 1, 2), name="permute")(a)  # moves the channel axis: edgert cannot follow it
    b = L.Conv2D(16, 3, name="b")(L.Permute((2, 3, 1), name="back")(p))
    out = L.Dense(4, name="out")(L.GlobalAveragePooling2D()(L.Conv2D(32, 1, name="c")(b)))
    pruned, report = prune_channels(keras.Model(inp, out), ChannelPruneConfig(0.5))
    assert pruned.get_layer("a").output_shape[-1] == 16 and "permute" in report.kept
    assert pruned.get_layer("c").output_shape[-1] == 16  # the group after the stop prunes as usual


def test_the_recipe_stage_and_presets():
    recipe = ConvertRecipe.from_dict({"quantization": "int8", "prune_channels": {"fraction": 0.5, "policy": "global"}})
    assert recipe.name == "channels50_int8" and recipe.prune_channels.min_channels == 8
    assert ConvertRecipe.from_dict(recipe.to_dict()) == recipe
    for bad, message in (({"fraction": 1.5}, "between 0 and 1"), ({"fraction": 0.5, "criterion": "x"}, "l2 or bn"),
                         ({"fraction": 0.5, "multiple": 0}, "--multiple must be a positive")):
        with pytest.raises(RecipeError, match=message):
            ConvertRecipe.from_dict({"prune_channels": bad})


def test_convert_prune_channels_fine_tunes_from_the_original_and_reports(h5_path, digits, tmp_path):
    np.savez(tmp_path / "train.npz", x=digits.x_train, y=digits.y_train)
    np.savez(tmp_path / "test.npz", x=digits.x_test, y=digits.y_test)
    out = tmp_path / "ch.tflite"
    done = subprocess.run([Path(sys.executable).parent / "edgert", "convert", str(h5_path), "--prune-channels", "0.5",
                           "--int8", "--train-data", str(tmp_path / "train.npz"), "--eval-data",
                           str(tmp_path / "test.npz"), "--epochs", "8", "-o", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "channels    MACs" in done.stdout and "channel groups pruned" in done.stdout
    report = json.loads((tmp_path / "ch.tflite.report.json").read_text())
    assert report["recipe"]["name"] == "channels50_int8" and report["channels"]["macs_ratio"] < 0.6
    assert [s["stage"] for s in report["stages"]][:2] == ["original", "channels"]
    assert report["accuracy_drop_points"] < 5, report["accuracy_drop_points"]
    assert any(n.startswith("distilled from the original model") for n in report["notes"])
    assert report["channels"]["latency_before_ms"] > 0 and report["channels"]["latency_after_ms"] > 0


def test_a_pruned_float_model_keeps_the_sparse_encoding_only_where_it_is_faster(h5_path, digits, tmp_path):
    from edgert.converters import convert
    from edgert.converters.recipe import PruneConfig

    np.savez(tmp_path / "train.npz", x=digits.x_train, y=digits.y_train)
    result = convert(h5_path, tmp_path / "p.tflite", recipe=ConvertRecipe(prune=PruneConfig(0.75),
                                                                          train=TrainConfig(epochs=2)),
                     train_data=tmp_path / "train.npz")
    (note,) = [n for n in result.notes if n.startswith("sparse encoding (XNNPACK sparse inference):")]
    sparse_kept = "kept the sparse model" in note
    assert sparse_kept or "kept the dense model (not faster here)" in note
    import edgert

    densify = dict(edgert.inspect_model(result.output_path).operators).get("DENSIFY", 0)
    assert (densify > 0) == sparse_kept  # the file is the one the note names


@pytest.mark.heavy  # a minute; the tf_keras files prune in make test
def test_a_keras3_file_prunes_through_its_tf_keras_rebuild(tmp_path):
    """A Keras 3 .keras MobileNetV3 (hard-swish as Keras 3 ops) is rebuilt in tf_keras and prunes in every group."""
    done = subprocess.run([sys.executable, "-c", (
        "import keras; keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=10)"
        f".save({str(tmp_path / 'm.keras')!r})")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    from edgert.converters import convert

    result = convert(tmp_path / "m.keras", tmp_path / "m.tflite",
                     recipe=ConvertRecipe(prune_channels=ChannelPruneConfig(0.5)))
    report = result.channels
    assert result.source_format.startswith("Keras 3") and not report.kept
    assert report.pruned_groups >= report.groups - 3 and report.macs_ratio < 0.45
    assert result.agreement is not None and not result.agreement.warning and result.agreement.max_rel_diff < 1e-4
