"""The runtime: float and int8 models, (de)quantization, inputs by name and position, batch resizing, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import edgert
from edgert.errors import InputDataError, ModelFormatError, UnsupportedOperatorError


def test_float_model_matches_keras(float_tflite, keras_digits, digits):
    model = edgert.load(float_tflite)
    x = digits.x_test[:1]
    np.testing.assert_allclose(model.run(x)[0], keras_digits.predict(x, verbose=0), atol=1e-5)


def test_int8_model_keeps_accuracy(int8_tflite, keras_digits, digits):
    """Full-int8 top-1 agrees with the float Keras model on >= 97% of held-out digits."""
    model = edgert.load(int8_tflite)
    int8_top1 = model.run(digits.x_test)[0].argmax(axis=1)
    keras_top1 = keras_digits.predict(digits.x_test, verbose=0).argmax(axis=1)
    assert (int8_top1 == keras_top1).mean() >= 0.97
    assert (keras_top1 == digits.y_test).mean() >= 0.95  # the model learned something real


def test_int8_specs_and_quantization(int8_tflite, digits):
    model = edgert.load(int8_tflite)
    (spec,) = model.inputs
    assert spec.dtype == "int8" and spec.quantized and spec.shape == (1, 8, 8, 1)
    x = digits.x_test[:1]
    # Float in: quantized with the input's own parameters, exactly as a by-hand quantization would.
    q = np.clip(np.round(x / spec.scale[0]) + spec.zero_point[0], -128, 127).astype(np.int8)
    raw_from_float = model.run(x, raw=True)[0]
    raw_from_int8 = model.run(q, raw=True)[0]
    assert raw_from_float.dtype == np.int8
    np.testing.assert_array_equal(raw_from_float, raw_from_int8)
    out = model.outputs[0]
    np.testing.assert_allclose(model.run(x)[0], (raw_from_int8.astype(np.float32) - out.zero_point[0]) * out.scale[0])


def test_batch_resize(int8_tflite, digits):
    model = edgert.load(int8_tflite)
    batch = model.run(digits.x_test[:5])[0]
    singles = np.concatenate([model.run(digits.x_test[i:i + 1])[0] for i in range(5)])
    assert batch.shape == (5, 10)
    np.testing.assert_array_equal(batch, singles)
    assert model.inputs[0].shape == (1, 8, 8, 1)


def test_inputs_by_name_and_position(two_input_tflite):
    model = edgert.load(two_input_tflite)
    names = {s.name: s for s in model.inputs}
    a_name = next(n for n in names if "a" in n.split(":")[0].split("_")[-1])
    b_name = next(n for n in names if n != a_name)
    a = np.array([[1.0, 2.0, 3.0]], np.float32)
    b = np.array([[10.0, 5.0]], np.float32)
    expected = np.array([[2 * 6 + 15]], np.float32)
    np.testing.assert_allclose(model.run({a_name: a, b_name: b})[0], expected)
    ordered = [a if s.name == a_name else b for s in model.inputs]
    np.testing.assert_allclose(model.run(ordered)[0], expected)
    # integer and float64 data is cast to the float input type
    np.testing.assert_allclose(model.run({a_name: a.astype(np.float64), b_name: b.astype(np.int32)})[0], expected)


@pytest.mark.parametrize("bad, message", [
    (lambda x: x[0], r"expects shape \(1, 8, 8, 1\); got \(8, 8, 1\)"),
    (lambda x: x[:1, :4], r"only the batch dimension can change"),
    (lambda x: x[:1].astype(np.int64), "expects int8 .*quantized.*got int64"),
    (lambda x: [x[:1], x[:1]], "has 1 input"),
    (lambda x: {"nope": x[:1]}, "unknown: \\['nope'\\]"),
    (lambda x: np.full((1, 8, 8, 1), "a"), "expects int8"),
])
def test_bad_inputs(int8_tflite, digits, bad, message):
    model = edgert.load(int8_tflite)
    with pytest.raises(InputDataError, match=message):
        model.run(bad(digits.x_test))
    assert model.run(digits.x_test[:1])[0].shape == (1, 10)  # still usable afterwards


def test_several_inputs_need_a_list_or_dict(two_input_tflite):
    with pytest.raises(InputDataError, match="has 2 inputs"):
        edgert.load(two_input_tflite).run(np.zeros((1, 3), np.float32))


def test_missing_and_non_model_files(tmp_path):
    with pytest.raises(ModelFormatError, match="no such file"):
        edgert.load(tmp_path / "missing.tflite")
    text = tmp_path / "notes.tflite"
    text.write_text("not a model\n")
    with pytest.raises(ModelFormatError, match="not a TFLite model"):
        edgert.load(text)
    with pytest.raises(ModelFormatError, match="is a directory"):
        edgert.load(tmp_path)


def test_custom_op_is_named(custom_op_tflite):
    with pytest.raises(UnsupportedOperatorError, match="Igamma") as err:
        edgert.load(custom_op_tflite)
    assert err.value.operators == ("Igamma",)


def test_threads_option(int8_tflite, digits):
    with pytest.raises(InputDataError, match="at least 1"):
        edgert.load(int8_tflite, threads=0)
    one = edgert.load(int8_tflite, threads=1).run(digits.x_test[:3])[0]
    two = edgert.load(int8_tflite, threads=2).run(digits.x_test[:3])[0]
    np.testing.assert_array_equal(one, two)


def test_concurrent_runs_give_single_threaded_answers(int8_tflite, digits):
    model = edgert.load(int8_tflite)
    xs = digits.x_test[:64]
    expected = [model.run(xs[i:i + 1])[0] for i in range(len(xs))]
    results: dict[int, np.ndarray] = {}

    def worker(start):
        for i in range(start, len(xs), 8):
            results[i] = model.run(xs[i:i + 1])[0]

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, e in enumerate(expected):
        np.testing.assert_array_equal(results[i], e)


def test_backend_can_be_forced(monkeypatch):
    from edgert.runtime import backend

    backend.get_backend.cache_clear()
    monkeypatch.setenv("EDGERT_BACKEND", "nonsense")
    try:
        with pytest.raises(edgert.BackendUnavailableError, match="not a backend"):
            backend.get_backend()
        monkeypatch.setenv("EDGERT_BACKEND", "tensorflow")
        backend.get_backend.cache_clear()
        assert backend.get_backend().name == "tensorflow"
    finally:
        backend.get_backend.cache_clear()


def test_prepare_converts_once_and_matches_run(int8_tflite, digits):
    model = edgert.load(int8_tflite)
    x = digits.x_test[:1]
    run = model.prepare(x)  # float in: quantized here, once
    first, second = run(), run()
    np.testing.assert_array_equal(first[0], model.run(x, raw=True)[0])
    np.testing.assert_array_equal(first[0], second[0])
    assert first[0].dtype == np.int8
    with pytest.raises(edgert.InputDataError, match="expects shape"):
        model.prepare(np.zeros((1, 3, 3), np.float32))


def test_quantize_inputs_is_what_run_does_and_run_passes_it_through(int8_tflite, float_tflite, digits):
    """A server quantizes outside the run lock: the result must be bit for bit run's own, in its own buffer."""
    model = edgert.load(int8_tflite)
    x = digits.x_test[:3].astype(np.float32)
    (q,) = model.quantize_inputs(x)
    (again,) = model.quantize_inputs(x * 1)
    assert q.dtype == np.int8 and q.shape == x.shape and q is not again and not np.shares_memory(q, again)
    spec = model.inputs[0]
    np.testing.assert_array_equal(q, np.clip(np.rint(x / spec.scale[0]) + spec.zero_point[0], -128, 127))
    np.testing.assert_array_equal(model.run(q)[0], model.run(x)[0])
    assert model.quantize_inputs(q)[0] is q  # already stored: untouched
    (f,) = edgert.load(float_tflite).quantize_inputs(x)
    assert f is x  # a float model takes float32 as it is
    with pytest.raises(edgert.InputDataError, match="expects int8"):
        model.quantize_inputs(x.astype(np.float16).view(np.int16))


def test_activations_over_the_limit_are_refused_at_load_and_on_resize(float_tflite, monkeypatch):
    """Each declared tensor may be small while a huge batch makes every activation huge (a fuzz finding)."""
    model = edgert.load(float_tflite)
    x = np.zeros((64, *model.inputs[0].shape[1:]), np.float32)
    monkeypatch.setenv("EDGERT_MAX_TENSOR_BYTES", str(64 * 1024))
    with pytest.raises(edgert.InputDataError, match=r"cannot be resized from \(1, 8, 8, 1\) to \(64, 8, 8, 1\): "
                                                    r"tensor .* needs .* over the limit"):
        model.run(x)
    assert model.run(x[:1])[0].shape == (1, 10)  # the model is back at its declared shape and still works
