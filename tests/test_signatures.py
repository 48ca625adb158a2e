"""Names end to end: every conversion writes a `serving_default` signature with the source's own input and output
names (as Keras's exporter and the SavedModel signature name them), the runtime addresses inputs and outputs by them
(tensor names as aliases), agreement pairs outputs by name, and a `--custom-objects` file in `tf.keras` style loads
the Keras 3 model it was written for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import edgert
from edgert.cli import cli
from edgert.converters import ConvertRecipe, Quantization, convert
from edgert.converters.recipe import ChannelPruneConfig
from edgert.errors import InputDataError, ModelFormatError
from tests import needs
from tests.measures import pearson, same_class
from tests.test_keras3 import save_as_user

pytestmark = pytest.mark.slow


def signature_of(path) -> dict:
    """The `.tflite`'s signatures as LiteRT's own interpreter lists them (independent of edgert's reader)."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_list()


# A Keras 3 functional model with dict inputs and dict outputs, two of them of the same shape; listed out of order.
DICT_MODEL = """
image = keras.Input((8, 8, 1), name="image")
meta = keras.Input((3,), name="meta")
x = keras.layers.Concatenate()([keras.layers.Flatten()(image), meta])
h = keras.layers.Dense(16, activation="relu")(x)
m = keras.Model({"image": image, "meta": meta},
                {"class_probs": keras.layers.Dense(5, activation="softmax", name="cls")(h),
                 "score": keras.layers.Dense(4, activation="sigmoid", name="s")(h),
                 "box": keras.layers.Dense(4, name="b")(h)})
"""


@pytest.fixture(scope="module")
def dict_model(tmp_path_factory):
    """The dict model saved by a Keras 3 user, with Keras's own LiteRT export beside it and the Keras model's
    outputs by name on seeded inputs."""
    folder = tmp_path_factory.mktemp("dict")
    rng = np.random.default_rng(0)
    inputs = {"image": rng.random((6, 8, 8, 1), dtype=np.float32), "meta": rng.random((6, 3), dtype=np.float32)}
    np.savez(folder / "inputs.npz", **inputs)
    code = DICT_MODEL + textwrap.dedent(f"""
        x = dict(np.load({str(folder / 'inputs.npz')!r}))
        np.savez({str(folder / 'expected.npz')!r}, **{{k: np.asarray(v) for k, v in m(x).items()}})
        m.export({str(folder / 'keras_export.tflite')!r}, format="litert")
        """)
    save_as_user(code, folder / "dict.keras")
    return folder, inputs, dict(np.load(folder / "expected.npz"))


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_dict_inputs_and_outputs_keep_their_names_as_keras_exports_them(dict_model, tmp_path, mode):
    folder, inputs, expected = dict_model
    calibration = tmp_path / "calibration.npz"
    rng = np.random.default_rng(1)
    np.savez(calibration, image=rng.random((32, 8, 8, 1), dtype=np.float32), meta=rng.random((32, 3), dtype=np.float32))
    result = convert(folder / "dict.keras", tmp_path / "dict.tflite", recipe=ConvertRecipe(Quantization(mode)),
                     calibration_data=calibration if mode == "int8" else None)
    # The same signature as Keras's own exporter writes: key, input and output names, and their order.
    assert signature_of(result.output_path) == signature_of(folder / "keras_export.tflite") == {
        "serving_default": {"inputs": ["image", "meta"], "outputs": ["box", "class_probs", "score"]}}
    assert not result.warnings, result.warnings
    assert {o.name for o in result.agreement.outputs} == {"box", "class_probs", "score"}
    # Outputs by name equal the Keras model's and the exporter's (box and score share a shape: a swap would show).
    ours, theirs = edgert.load(result.output_path), edgert.load(folder / "keras_export.tflite")
    got = {name: [] for name in ("box", "class_probs", "score")}
    for i in range(len(inputs["image"])):
        row = {k: v[i:i + 1] for k, v in inputs.items()}
        one, exported = ours.run_by_name(row), theirs.run_by_name(row)
        for name in got:
            got[name].append(one[name])
            if mode == "float32":
                np.testing.assert_allclose(one[name], expected[name][i:i + 1], atol=1e-5)
                np.testing.assert_array_equal(one[name], exported[name])
    if mode == "int8":  # by what each output carries, against the Keras model: a swap or a collapse shows
        got = {k: np.concatenate(v) for k, v in got.items()}
        for name in got:
            assert pearson(got[name], expected[name]) > 0.95, name
        # Probabilities within 3 points (about 8 steps of the int8 softmax's 1/256); the top class wherever the Keras
        # model decides it by more than twice that (a random model's near-ties may flip and say nothing).
        for name in ("class_probs", "score"):
            assert np.max(np.abs(got[name] - expected[name])) < 0.03, name
        top2 = np.sort(expected["class_probs"], axis=-1)[:, -2:]
        decided = top2[:, 1] - top2[:, 0] > 0.06
        assert not decided.any() or same_class(got["class_probs"][decided], expected["class_probs"][decided]) == 1.0


def test_equal_shape_outputs_in_another_order_agree_by_name(named_tflite, tmp_path):
    """The dict lists score before box; the .tflite stores them in yet another order. Each output by name is the
    Keras model's output of that name (both are (1, 4): pairing by shape could not tell)."""
    from edgert.converters._tf import import_keras3

    keras = import_keras3()
    model = keras.saving.load_model(str(named_tflite).replace(".tflite", ".keras"))
    x = np.random.default_rng(2).random((4, 8, 8, 1), dtype=np.float32)
    expected = {k: np.asarray(v) for k, v in model(x).items()}
    tflite = edgert.load(named_tflite)
    assert [s.name for s in tflite.outputs] == ["box", "score"]
    for i in range(4):
        got = tflite.run_by_name(x[i:i + 1])
        for name in ("box", "score"):
            np.testing.assert_allclose(got[name], expected[name][i:i + 1], atol=1e-5)
    with open(str(named_tflite) + ".report.json") as f:
        report = json.load(f)
    assert [o["name"] for o in report["agreement"]["outputs"]] == ["box", "score"]
    assert report["agreement"]["warning"] is None


def test_a_keras3_dict_model_keeps_its_names_through_the_tf_keras_rebuild(named_tflite, tmp_path):
    """Channel pruning rebuilds the Keras 3 model in tf_keras (list outputs, layer names): the .tflite still carries
    the dict's keys, and each is the pruned model's output of that name."""
    source = str(named_tflite).replace(".tflite", ".keras")
    np.save(tmp_path / "calibration.npy", np.random.default_rng(6).random((32, 8, 8, 1), dtype=np.float32))
    result = convert(source, tmp_path / "pruned.tflite", recipe=ConvertRecipe(Quantization.INT8,
                                                                                 prune_channels=ChannelPruneConfig(0.5)),
                     calibration_data=tmp_path / "calibration.npy")
    assert [s.stage for s in result.stages][:2] == ["original", "rebuild"]
    assert signature_of(result.output_path) == {"serving_default": {"inputs": ["image"], "outputs": ["box", "score"]}}
    assert [o.name for o in result.agreement.outputs] == ["box", "score"] and not result.warnings


@pytest.fixture(scope="module")
def two_signatures(tmp_path_factory):
    """A SavedModel with two signatures and no serving_default, as `tf.saved_model.save` writes a tf.Module's."""
    from edgert.converters._tf import import_tf

    tf, _ = import_tf()
    module = tf.Module()
    module.w = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3) / 10)

    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="features")])
    def classify(features):
        logits = tf.matmul(features, module.w)
        return {"probs": tf.nn.softmax(logits), "logits": logits}

    @tf.function(input_signature=[tf.TensorSpec((None, 4), tf.float32, name="features")])
    def embed(features):
        return {"embedding": tf.nn.relu(tf.matmul(features, module.w) - 0.5)}

    path = tmp_path_factory.mktemp("signatures") / "two"
    tf.saved_model.save(module, str(path), signatures={"classify": classify, "embed": embed})
    return path


def test_a_savedmodel_with_two_signatures_converts_the_one_chosen(two_signatures, tmp_path):
    with pytest.raises(InputDataError, match=r"has no signature 'serving_default'; it has classify, embed: choose one "
                                             r"with --signature NAME"):
        convert(two_signatures, tmp_path / "x.tflite")
    assert not (tmp_path / "x.tflite").exists()
    for key, outputs in (("classify", ["logits", "probs"]), ("embed", ["embedding"])):
        result = convert(two_signatures, tmp_path / f"{key}.tflite", signature=key)
        assert signature_of(result.output_path) == {"serving_default": {"inputs": ["features"], "outputs": outputs}}
        assert not result.warnings and [o.name for o in result.agreement.outputs] == outputs
    x = np.ones((1, 4), np.float32)
    got = edgert.load(tmp_path / "classify.tflite").run_by_name({"features": x})
    np.testing.assert_allclose(got["logits"], x @ (np.arange(12, dtype=np.float32).reshape(4, 3) / 10), rtol=1e-6)
    out = CliRunner().invoke(cli, ["convert", str(two_signatures), "--signature", "nope", "-o",
                                   str(tmp_path / "n.tflite")])
    assert out.exit_code == 1 and out.output.strip().endswith("choose one with --signature NAME")


def test_signature_is_refused_for_a_keras_file(h5_path, tmp_path):
    with pytest.raises(InputDataError, match="--signature chooses a SavedModel's signature"):
        convert(h5_path, tmp_path / "x.tflite", signature="serving_default")


def test_tf_keras_names_survive_the_edgetpu_path(h5_path, calibration_npy, float_tflite, tmp_path):
    result = convert(h5_path, tmp_path / "tpu.tflite", recipe=ConvertRecipe(Quantization.EDGETPU),
                     calibration_data=calibration_npy)
    plain = signature_of(float_tflite)
    assert signature_of(result.output_path) == plain == {"serving_default": {"inputs": ["image"],
                                                                             "outputs": ["dense"]}}


@pytest.fixture(scope="module")
def unsigned_tflite(tmp_path_factory):
    """A hand-made file without a signature (a concrete function converted without a trackable object), as older
    converters wrote them: tensor names only."""
    from edgert.converters._tf import import_tf

    tf, _ = import_tf()

    @tf.function(autograph=False, input_signature=[tf.TensorSpec((1, 3), tf.float32, name="x"),
                                                   tf.TensorSpec((1, 3), tf.float32, name="y")])
    def add(x, y):
        return x + 2 * y, x - y

    path = tmp_path_factory.mktemp("unsigned") / "unsigned.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([add.get_concrete_function()]).convert())
    return path


def test_a_file_without_a_signature_keeps_working_with_tensor_names(unsigned_tflite, tmp_path):
    assert signature_of(unsigned_tflite) == {}
    model = edgert.load(unsigned_tflite)
    assert [s.name for s in model.inputs] == ["x", "y"] and all(s.name == s.tensor_name for s in model.inputs)
    assert edgert.inspect_model(unsigned_tflite).signature == ""
    x, y = np.ones((1, 3), np.float32), np.full((1, 3), 2, np.float32)
    got = model.run_by_name({"y": y, "x": x})
    assert sorted(got) == sorted(s.name for s in model.outputs)
    np.testing.assert_allclose(sorted(v[0, 0] for v in got.values()), [-1, 5])
    out = CliRunner().invoke(cli, ["inspect", str(unsigned_tflite)])
    assert "signature     none (tensor names only)" in out.output


def test_inputs_by_signature_name_or_tensor_name_and_outputs_by_name(named_tflite, float_tflite, tmp_path):
    digits = edgert.load(float_tflite)  # tf_keras's converter path: input tensor serving_default_image:0
    spec = digits.inputs[0]
    assert spec.name == "image" and spec.tensor_name == "serving_default_image:0"
    x = np.random.default_rng(3).random((1, 8, 8, 1), dtype=np.float32)
    by_name, by_alias = digits.run_by_name({"image": x}), digits.run_by_name({spec.tensor_name: x})
    assert list(by_name) == ["dense"] and np.array_equal(by_name["dense"], by_alias["dense"])
    with pytest.raises(InputDataError, match=r"given twice \(by name and by tensor name\): \['image'\]"):
        digits.run({"image": x, spec.tensor_name: x})
    with pytest.raises(InputDataError, match=r"inputs by name must be exactly \['image'\]; unknown: \['img'\]"):
        digits.run({"img": x})
    np.savez(tmp_path / "digits_in.npz", **{spec.tensor_name: x})  # an .npz keyed by tensor names still runs
    out = CliRunner().invoke(cli, ["run", str(float_tflite), "-i", str(tmp_path / "digits_in.npz"), "--json"])
    assert out.exit_code == 0 and list(json.loads(out.output)["outputs"]) == ["dense"], out.output

    model = edgert.load(named_tflite)
    assert [s.name for s in model.outputs] == ["box", "score"]
    assert all(s.tensor_name.startswith("Identity") for s in model.outputs)
    assert model.output_index("score") == 1 and model.output_index(model.outputs[0].tensor_name) == 0
    with pytest.raises(InputDataError, match=r"no output 'boxes'; its outputs are box, score"):
        model.output_index("boxes")
    # The CLI: signature names printed and used as the .npz keys.
    np.savez(tmp_path / "in.npz", image=x)
    out = CliRunner().invoke(cli, ["run", str(named_tflite), "-i", str(tmp_path / "in.npz"),
                                   "-o", str(tmp_path / "out.npz")])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("box: shape (1, 4) float32") and "\nscore: shape (1, 4)" in out.output
    saved = np.load(tmp_path / "out.npz")
    assert sorted(saved.files) == ["box", "score"]
    np.testing.assert_array_equal(saved["score"], model.run_by_name(x)["score"])
    listed = CliRunner().invoke(cli, ["inspect", str(named_tflite), "--json"])
    info = json.loads(listed.output)
    assert info["signature"] == "serving_default"
    assert [(t["name"], t["tensor_name"]) for t in info["outputs"]] == [("box", "Identity"), ("score", "Identity_1")]
    shown = CliRunner().invoke(cli, ["inspect", str(named_tflite)]).output
    assert "signature     serving_default" in shown and "  (tensor Identity_1)" in shown


# -- user code written against tf.keras ----------------------------------------------------------------------------

# A package as many published ones still write it: `tf.keras` everywhere, in a module of its own.
NETLIB = '''
import tensorflow as tf

L = tf.keras.layers


class Gate(L.Layer):
    """x * sigmoid(w), one weight per channel."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

    def call(self, x):
        return x * tf.keras.activations.sigmoid(self.w)


def head(units, name):
    return L.Dense(units, name=name)
'''


@pytest.fixture(scope="module")
def tf_keras_style_model(tmp_path_factory):
    """A Keras 3 `.keras` whose `Gate` layer comes from the user's package (`tf.keras` style), saved by a plain Keras
    3 process, with the outputs it computes."""
    folder = tmp_path_factory.mktemp("tfkeras_style")
    (folder / "netlib").mkdir()
    (folder / "netlib" / "__init__.py").write_text(NETLIB)
    x = np.random.default_rng(4).random((5, 6), dtype=np.float32)
    np.save(folder / "x.npy", x)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(folder)!r})
        import numpy as np
        import tensorflow as tf
        from netlib import Gate, head
        assert tf.keras.layers.Dense.__module__.startswith("keras.src")  # plain TensorFlow: tf.keras is Keras 3
        i = tf.keras.Input((6,), name="features")
        g = Gate(name="gate")(i)
        m = tf.keras.Model(i, {{"logit": head(1, "logit_head")(g), "embedding": head(3, "emb_head")(g)}})
        m.layers[1].w.assign(np.linspace(-1, 1, 6).astype("float32"))
        outputs = m(np.load({str(folder / 'x.npy')!r}))
        np.savez({str(folder / 'expected.npz')!r}, **{{k: np.asarray(v) for k, v in outputs.items()}})
        m.save({str(folder / 'gated.keras')!r})
        """)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_USE_LEGACY_KERAS", "KERAS_BACKEND")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    # The user's --custom-objects file imports the class rather than defining it.
    (folder / "objects.py").write_text("from netlib import Gate  # noqa: F401\n")
    return folder, x, dict(np.load(folder / "expected.npz"))


def test_a_custom_objects_file_in_tf_keras_style_loads_its_keras3_model(tf_keras_style_model, tmp_path):
    folder, x, expected = tf_keras_style_model
    np.save(tmp_path / "calibration.npy", np.random.default_rng(5).random((32, 6), dtype=np.float32))
    for mode in ("float32", "int8"):
        result = convert(folder / "gated.keras", tmp_path / f"gated_{mode}.tflite",
                         recipe=ConvertRecipe(Quantization(mode)), custom_objects=folder / "objects.py",
                         calibration_data=tmp_path / "calibration.npy" if mode == "int8" else None)
        assert not result.warnings, result.warnings
        assert signature_of(result.output_path)["serving_default"] == {"inputs": ["features"],
                                                                        "outputs": ["embedding", "logit"]}
        model = edgert.load(result.output_path)
        rows = [model.run_by_name(x[i:i + 1]) for i in range(len(x))]
        for name in ("embedding", "logit"):
            got = np.concatenate([r[name] for r in rows])
            if mode == "float32":
                np.testing.assert_allclose(got, expected[name], atol=1e-5)
            else:  # over all samples, centred: the int8 outputs move as the Keras model's do
                assert pearson(got, expected[name]) > 0.98, name
    # What a file gives: its own and imported classes and functions, but never an imported helper named like a Keras
    # built-in (scipy's softmax would replace Keras's softmax activation in the model).
    from edgert.converters.custom_objects import resolve_custom_objects

    (folder / "helpers.py").write_text("from scipy.special import softmax  # noqa: F401\n"
                                       "from netlib import Gate, head  # noqa: F401\n\n\n"
                                       "def swish(x):\n    return x\n")
    assert sorted(resolve_custom_objects(folder / "helpers.py", keras3=True)) == ["Gate", "head", "swish"]
    # Without the file: one line that says what to do, naming the module-level dict as the other way.
    out = CliRunner().invoke(cli, ["convert", str(folder / "gated.keras"), "-o", str(tmp_path / "no.tflite")])
    assert out.exit_code == 1 and "\n" not in out.output.strip()
    assert "'Gate'" in out.output and "custom_objects" in out.output and "--custom-objects" in out.output


# -- which Keras wrote the file ------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer, version, label", [
    ("tf_keras", "2.0.5", "Keras 2.0.5 .h5"),
    ("tf_keras", "2.2.4-tf", "tf.keras 2.2.4-tf .h5"),
    ("tf_keras", "2.13.1", "Keras 2.13.1 .h5"),
    ("tf_keras", "2.21.0", "tf_keras 2.21.0 .h5"),
    ("tf_keras", None, "Keras 2 (version not recorded) .h5"),
    ("keras3", "3.15.1", "Keras 3.15.1 .h5"),
])
def test_the_from_line_names_the_keras_that_wrote_the_file(writer, version, label):
    from pathlib import Path

    from edgert.converters.keras_files import KerasFile

    assert KerasFile(Path("m.h5"), "h5", writer, version, None).label == label


def test_a_keras3_model_trained_under_pytorch_keeps_its_names(tmp_path):
    """`make test` (and `make keras-torch-test` alone) runs this with torch's CPU build, which [torch] installs."""
    needs.module("torch", "torch is not installed: `make keras-torch-test` runs this case")
    code = DICT_MODEL + textwrap.dedent("""
        assert keras.backend.backend() == "torch"
        rng = np.random.default_rng(0)
        x = {"image": rng.random((16, 8, 8, 1), dtype=np.float32), "meta": rng.random((16, 3), dtype=np.float32)}
        y = {"class_probs": np.eye(5, dtype=np.float32)[rng.integers(0, 5, 16)],
             "score": rng.random((16, 4), dtype=np.float32), "box": rng.random((16, 4), dtype=np.float32)}
        m.compile(optimizer="adam", loss={"class_probs": "categorical_crossentropy", "score": "mse", "box": "mse"})
        m.fit(x, y, epochs=2, batch_size=8, verbose=0)
        np.savez(OUT + ".x.npz", **{k: v[:4] for k, v in x.items()})
        y4 = m({k: v[:4] for k, v in x.items()})
        np.savez(OUT + ".y.npz", **{k: np.asarray(v.detach().cpu()) for k, v in y4.items()})
        """)
    out = tmp_path / "torch.keras"
    save_as_user(code, out, backend="torch")
    result = convert(out, tmp_path / "torch.tflite")
    assert not result.warnings and signature_of(result.output_path)["serving_default"] == {
        "inputs": ["image", "meta"], "outputs": ["box", "class_probs", "score"]}
    x, y = dict(np.load(f"{out}.x.npz")), dict(np.load(f"{out}.y.npz"))
    model = edgert.load(result.output_path)
    for i in range(4):
        got = model.run_by_name({k: v[i:i + 1] for k, v in x.items()})
        for name in y:
            np.testing.assert_allclose(got[name], y[name][i:i + 1], atol=1e-5)


NET = """
class Net(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.d = keras.layers.Dense(2)

    def call(self, x):
        return self.d(x)
"""


def test_a_subclassed_model_without_a_build_shape_is_one_line(tmp_path):
    out = tmp_path / "net.keras"
    save_as_user(NET + "m = Net()\n", out)
    (tmp_path / "objects.py").write_text("import tensorflow as tf\nkeras = tf.keras\n" + NET)
    with pytest.raises(ModelFormatError, match=r"Net was saved without being built, so its input shape is unknown; "
                                               r"call model.build"):
        convert(out, tmp_path / "net.tflite", custom_objects=tmp_path / "objects.py")
    assert not (tmp_path / "net.tflite").exists()
