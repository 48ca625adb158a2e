"""Calibration data in the wrong range ruins an int8 model silently; edgert refuses it or warns, never silently.

The digits model trained on 0..1: images calibrated as 0..255 took held-out accuracy from 98.66% to 11.58%, and a
uint8 .npy calibration gave 42.5% (input scale 0.996 instead of 0.0039)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import edgert
from edgert.cli import cli
from edgert.converters import convert
from edgert.converters.ranges import declared_range
from edgert.errors import InputDataError


def image_folder(path, images: np.ndarray):
    import tensorflow as tf

    (path / "class_a").mkdir(parents=True)
    for i, image in enumerate(images):
        (path / "class_a" / f"{i}.png").write_bytes(tf.io.encode_png((image * 255).astype(np.uint8)).numpy())
    return path


def test_an_image_folder_needs_a_range_the_model_does_not_state(h5_path, digits, tmp_path):
    folder = image_folder(tmp_path / "images", digits.x_train[:8])
    out = CliRunner().invoke(cli, ["convert", str(h5_path), "--int8", "--calibration-data", str(folder), "-o",
                                   str(tmp_path / "m.tflite")])
    assert out.exit_code == 1 and out.output.count("\n") == 1
    assert "does not state the range it takes" in out.output and "--image-range" in out.output
    assert "0,1" in out.output and "-1,1" in out.output and "0,255" in out.output
    assert not list(tmp_path.glob("m.tflite*"))
    result = convert(h5_path, tmp_path / "m.tflite", int8=True, calibration_data=folder, image_range=(0.0, 1.0))
    assert result.calibration_samples == 8


@pytest.fixture(scope="module")
def rescaling_model(tmp_path_factory, digits):
    """The digits CNN with its scaling inside: a leading Rescaling(1/255) takes raw pixels."""
    from edgert.converters._tf import import_tf

    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255),
                              keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(digits.x_train * 255, digits.y_train, epochs=5, verbose=0)
    path = tmp_path_factory.mktemp("rescaling") / "pixels.h5"
    model.save(path)
    return path


def test_a_leading_rescaling_layer_states_raw_pixels(rescaling_model, digits, tmp_path):
    from edgert.converters.sources import open_model

    declared = declared_range(open_model(rescaling_model).keras_model)
    assert declared.value_range == (0.0, 255.0) and "rescales by 0.003922" in declared.why
    folder = image_folder(tmp_path / "images", digits.x_train[:16])
    result = convert(rescaling_model, tmp_path / "m.tflite", int8=True, calibration_data=folder)  # no range given
    assert result.calibration_samples == 16 and not result.warnings
    got = edgert.load(result.output_path).run(digits.x_test * 255)[0].argmax(1)
    assert (got == digits.y_test).mean() > 0.8
    # Scaling the images to 0..1 for a model that takes pixels is refused, naming both ranges.
    with pytest.raises(InputDataError, match=r"spans 0\.\.1 .* but the model \(its first layer, rescaling.* expects "
                                             r"0\.\.255"):
        convert(rescaling_model, tmp_path / "n.tflite", int8=True, calibration_data=folder, image_range=(0.0, 1.0))


def test_calibration_arrays_that_disagree_with_the_training_data_are_refused(h5_path, digits, tmp_path):
    np.save(tmp_path / "pixels.npy", (digits.x_train * 255).astype(np.uint8))
    np.savez(tmp_path / "test.npz", x=digits.x_test, y=digits.y_test)
    out = CliRunner().invoke(cli, ["convert", str(h5_path), "--int8", "--calibration-data",
                                   str(tmp_path / "pixels.npy"), "--eval-data", str(tmp_path / "test.npz"),
                                   "-o", str(tmp_path / "m.tflite")])
    assert out.exit_code == 1 and out.output.count("\n") == 1, out.output
    assert "spans 0..255 (uint8) but the evaluation data spans 0..1 (float32)" in out.output
    assert "--force-range" in out.output and not list(tmp_path.glob("m.tflite*"))


def test_force_range_converts_and_the_accuracy_drop_is_a_warning(h5_path, digits, tmp_path):
    np.save(tmp_path / "pixels.npy", (digits.x_train * 255).astype(np.float32))
    np.savez(tmp_path / "test.npz", x=digits.x_test, y=digits.y_test)
    out = CliRunner().invoke(cli, [
        "convert", str(h5_path), "--int8", "--calibration-data", str(tmp_path / "pixels.npy"), "--eval-data",
        str(tmp_path / "test.npz"), "--force-range", "-o", str(tmp_path / "m.tflite")])
    assert out.exit_code == 0, out.output
    assert "points less accurate than the original" in out.stderr and "calibration data's range" in out.stderr
    report = __import__("json").loads((tmp_path / "m.tflite.report.json").read_text())
    assert report["accuracy_drop_points"] > 5 and any("calibration data's range" in w for w in report["warnings"])


def test_matching_ranges_pass_without_a_word(h5_path, digits, tmp_path):
    np.save(tmp_path / "calibration.npy", digits.x_train[:100])
    np.savez(tmp_path / "test.npz", x=digits.x_test, y=digits.y_test)
    result = convert(h5_path, tmp_path / "m.tflite", int8=True, calibration_data=tmp_path / "calibration.npy",
                     eval_data=tmp_path / "test.npz")
    assert not result.warnings and result.accuracy_drop < 2
