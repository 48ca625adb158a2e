"""The agreement arithmetic (converters/agreement.py) on arrays with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgert.converters.agreement import compare

REF = "the Keras model"


def test_identical_outputs_agree_perfectly():
    r = np.random.default_rng(0).normal(size=(8, 10))
    a = compare("float32", REF, "seeded random inputs", {"out": r}, {"out": r.copy()})
    o = a.outputs[0]
    assert (o.max_abs_diff, o.max_rel_diff, o.cosine, o.min_cosine, o.top1) == (0.0, 0.0, 1.0, 1.0, 1.0)
    assert math.isinf(o.sqnr_db) and a.warning == "" and a.to_dict()["outputs"][0]["sqnr_db"] is None


def test_relative_difference_cosine_and_sqnr_have_their_textbook_values():
    r = np.array([[3.0, 4.0]])
    c = np.array([[3.0, 4.5]])
    o = compare("float32", REF, "x", {"out": r}, {"out": c}).outputs[0]
    assert o.max_abs_diff == pytest.approx(0.5) and o.max_rel_diff == pytest.approx(0.5 / 4.0)
    assert o.cosine == pytest.approx((9 + 18) / (5 * math.hypot(3, 4.5)))
    assert o.sqnr_db == pytest.approx(10 * math.log10(25 / 0.25))


def test_float32_beyond_1e3_and_poor_int8_cosine_warn():
    r = np.random.default_rng(1).normal(size=(8, 10))
    assert "differs from the Keras model by" in compare("float32", REF, "x", {"o": r}, {"o": r * 1.002}).warning
    assert not compare("float32", REF, "x", {"o": r}, {"o": r * 1.0005}).warning  # rounding, not a bug
    noisy = r + np.random.default_rng(2).normal(scale=0.5, size=r.shape)
    a = compare("int8", REF, "calibration samples", {"o": r}, {"o": noisy})
    assert a.warning.startswith("poor int8 agreement") and "calibration data" in a.warning
    assert compare("int8", REF, "x", {"o": r}, {"o": r + 1e-3}).warning == ""


def test_equal_shape_outputs_in_another_order_are_paired_by_name():
    rng = np.random.default_rng(3)
    note, onset = rng.normal(size=(4, 88)), rng.normal(size=(4, 88))
    # The .tflite stores them the other way round: pairing by order or shape would compare note with onset.
    result = compare("float32", REF, "x", {"note": note, "onset": onset}, {"onset": onset.copy(), "note": note.copy()})
    assert [o.name for o in result.outputs] == ["note", "onset"] and result.max_rel_diff == 0.0
    assert result.warning == ""
    # A real mismatch between two equal-shape outputs is caught, not hidden by a lucky pairing.
    swapped = compare("float32", REF, "x", {"note": note, "onset": onset}, {"note": onset, "onset": note})
    assert "differs from the Keras model" in swapped.warning


def test_outputs_whose_names_do_not_match_are_reported_not_guessed():
    a = np.ones((2, 4))
    result = compare("float32", REF, "x", {"box": a, "score": a}, {"box": a.copy(), "output_1": a.copy()})
    assert [o.name for o in result.outputs] == ["box"]
    assert "score have no namesake in the .tflite" in result.warning and "output_1" in result.warning
    none = compare("int8", REF, "x", {"score": a}, {"Identity": a})
    assert none.outputs == () and none.describe().startswith("no output could be paired by name")


def test_non_finite_outputs_are_named_not_averaged():
    r = np.ones((2, 3))
    bad = r.copy()
    bad[0, 0] = np.nan
    assert "itself outputs NaN or infinity" in compare("float32", REF, "x", {"o": bad}, {"o": r}).warning
    assert "the .tflite outputs NaN or infinity" in compare("int8", REF, "x", {"o": r}, {"o": bad}).warning


def _detector_outputs(samples: int = 6, classes: int = 3, cells: int = 525) -> np.ndarray:
    """A YOLOv8-shaped output (samples, 4 + C, cells) for 160 px with a few confident boxes per sample: boxes in
    pixels beside scores in 0..1, as such heads end."""
    rng = np.random.default_rng(5)
    out = np.zeros((samples, 4 + classes, cells), np.float32)
    out[:, 0:2] = rng.uniform(10, 150, (samples, 2, cells))
    out[:, 2:4] = rng.uniform(10, 60, (samples, 2, cells))
    out[:, 4:] = rng.uniform(0, 0.05, (samples, classes, cells))
    for s in range(samples):
        for k, cell in enumerate(rng.choice(cells, 3, replace=False)):
            out[s, 4 + k % classes, cell] = 0.9
            out[s, 0:2, cell] = (30 + 40 * k, 40 + 30 * k)
    return out


def test_a_collapsed_score_channel_is_named_though_the_tensor_cosine_stays_high():
    """One int8 scale over box pixels and scores: every score lost, the boxes intact. One cosine over the tensor
    still says 0.99; the decoded detections and the channels say what happened."""
    r = _detector_outputs()
    c = r.copy()
    c[:, 4:] = 0.0
    a = compare("int8", REF, "calibration samples", {"output0": r}, {"output0": c}, (160, 160))
    assert a.outputs[0].cosine > 0.99
    assert a.detections is not None and a.detections.reference == 18 and a.detections.matched == 0
    assert a.warning.startswith("the .tflite's detections differ from the Keras model's: it keeps 0 of 18")
    assert "score" in a.warning and "output output0 channel" in a.warning
    # without the input size the layout is not known: the channel rule still names a lost score channel
    plain = compare("int8", REF, "x", {"output0": r}, {"output0": c})
    assert plain.detections is None and "output output0 channel" in plain.warning
    assert "100% of that range" in plain.warning and "one channel lost what it carries" in plain.warning


def test_a_correct_detector_conversion_is_not_flagged_and_a_quiet_channel_is_not_judged_alone():
    r = _detector_outputs()
    noise = np.random.default_rng(6).normal(0, 0.2, r.shape).astype(np.float32)
    c = r + noise * np.where(np.arange(r.shape[1])[None, :, None] < 4, 1.0, 0.005)
    a = compare("int8", REF, "x", {"output0": r}, {"output0": c}, (160, 160))
    assert a.warning == "" and a.detections.recall == 1.0 and a.detections.precision == 1.0
    # a channel that stays near zero on these samples (a score with nothing to find) is off by its whole range,
    # which decides nothing: no warning from it alone
    quiet = r.copy()
    quiet[:, 6] = 1e-4
    noisy = quiet.copy()
    noisy[:, 6] = 2e-4
    assert compare("int8", REF, "x", {"output0": quiet}, {"output0": noisy}).warning == ""


# -- one definition: the converters' and the gates' thresholds per mode -----------------------------------------

def test_a_files_quantization_and_a_recipes_mode_name_the_same_thresholds(float_tflite, int8_tflite, tmp_path):
    """`edgert inspect`'s description of a converted file maps to the recipe's mode, so a conversion's warning floor
    and the gates' figures for the same model are one number; the gates' reference file carries it."""
    from edgert.measure.health import make_reference
    from edgert.measure.agreement import MIN_COSINE, board_max_error, min_cosine, mode_of
    from edgert.tflite.info import inspect_model

    assert mode_of(inspect_model(float_tflite).quantization) == "float32"
    assert mode_of(inspect_model(int8_tflite).quantization) == "int8"
    for text, mode in (("float16 weights", "float16"), ("dynamic range (int8 weights)", "dynamic"),
                       ("full integer (int8), float I/O", "int8"), ("int16x8", "int16x8"), ("edgetpu", "edgetpu")):
        assert mode_of(text) == mode and min_cosine(text) == MIN_COSINE[mode]
    meta = make_reference(int8_tflite, tmp_path / "ref.npz", samples=2)
    assert meta["min_cosine"] == min_cosine("int8") and meta["max_error"] == board_max_error("int8") == 0.02
    # the converters warn below that same floor, and not above it
    r = np.random.default_rng(3).normal(size=(8, 64))
    for scale, warns in ((0.05, False), (0.4, True)):
        c = r + np.random.default_rng(4).normal(scale=scale, size=r.shape)
        a = compare("int8", REF, "x", {"o": r}, {"o": c})
        assert (a.outputs[0].cosine < min_cosine("int8")) == warns and bool(a.warning) == warns


def test_a_boards_tolerance_is_a_share_of_the_range_or_two_steps():
    from edgert.measure.agreement import board_tolerance, cosines

    assert board_tolerance(0.02, 10.0, 0.0) == pytest.approx(0.2)  # float output: 2% of its range
    assert board_tolerance(0.02, 0.1, 0.01) == pytest.approx(0.02, rel=1e-3)  # two steps where the range is narrow
    assert board_tolerance(1e-3, 0.0, 0.0) == 1e-6  # a constant output: float rounding only
    r = np.array([[1.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(cosines(r, r * 0.95), [1.0, 1.0])  # 5% small keeps cosine 1: why boards are judged
    np.testing.assert_allclose(cosines(r, np.array([[2.0, -1.0], [1.0, 0.0]])), [0.0, 0.0], atol=1e-12)  # by range
