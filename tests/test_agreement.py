"""The agreement arithmetic (converters/agreement.py) on arrays with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgert.converters.agreement import compare

REF = "the Keras model"


def test_identical_outputs_agree_perfectly():
    r = np.random.default_rng(0).normal(size=(8, 10))
    a = compare("float32", REF, "seeded random inputs", [r], [r.copy()], ["out"])
    o = a.outputs[0]
    assert (o.max_abs_diff, o.max_rel_diff, o.cosine, o.min_cosine, o.top1) == (0.0, 0.0, 1.0, 1.0, 1.0)
    assert math.isinf(o.sqnr_db) and a.warning == "" and a.to_dict()["outputs"][0]["sqnr_db"] is None


def test_relative_difference_cosine_and_sqnr_have_their_textbook_values():
    r = np.array([[3.0, 4.0]])
    c = np.array([[3.0, 4.5]])
    o = compare("float32", REF, "x", [r], [c], ["out"]).outputs[0]
    assert o.max_abs_diff == pytest.approx(0.5) and o.max_rel_diff == pytest.approx(0.5 / 4.0)
    assert o.cosine == pytest.approx((9 + 18) / (5 * math.hypot(3, 4.5)))
    assert o.sqnr_db == pytest.approx(10 * math.log10(25 / 0.25))


def test_float32_beyond_1e4_and_poor_int8_cosine_warn():
    r = np.random.default_rng(1).normal(size=(8, 10))
    assert "differs from the Keras model by" in compare("float32", REF, "x", [r], [r * 1.001], ["o"]).warning
    noisy = r + np.random.default_rng(2).normal(scale=0.5, size=r.shape)
    a = compare("int8", REF, "calibration samples", [r], [noisy], ["o"])
    assert a.warning.startswith("poor int8 agreement") and "calibration data" in a.warning
    assert compare("int8", REF, "x", [r], [r + 1e-3], ["o"]).warning == ""


def test_outputs_stored_in_another_order_are_paired_by_shape():
    a, b = np.ones((4, 10)), np.arange(12, dtype=float).reshape(4, 3)
    result = compare("float32", REF, "x", [a, b], [b.copy(), a.copy()], ["first", "second"])
    assert [o.name for o in result.outputs] == ["second", "first"] and result.max_rel_diff == 0.0


def test_non_finite_outputs_are_named_not_averaged():
    r = np.ones((2, 3))
    bad = r.copy()
    bad[0, 0] = np.nan
    assert "itself outputs NaN or infinity" in compare("float32", REF, "x", [bad], [r], ["o"]).warning
    assert "the .tflite outputs NaN or infinity" in compare("int8", REF, "x", [r], [bad], ["o"]).warning
