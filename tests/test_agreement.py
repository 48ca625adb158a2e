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


def test_float32_beyond_1e4_and_poor_int8_cosine_warn():
    r = np.random.default_rng(1).normal(size=(8, 10))
    assert "differs from the Keras model by" in compare("float32", REF, "x", {"o": r}, {"o": r * 1.001}).warning
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
