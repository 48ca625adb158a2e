"""PyTorch modules and ONNX files in: MobileNetV3-Small, ResNet-18 and a two-input, two-output model through both
routes (litert-torch, onnx2tf), float32 and int8, checked by name against torch and onnxruntime; an opset-17 `.onnx`
converted offline from the command line; runs, serving, layouts, and the bad inputs, one line each."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests import needs  # noqa: E402
from tests.measures import pearson, same_class  # noqa: E402

torch = needs.module("torch")
needs.module("litert_torch")
needs.module("onnxruntime")
needs.module("onnx2tf")

import edgert  # noqa: E402
from edgert.converters import Quantization, convert  # noqa: E402
from edgert.converters.foreign import ForeignOptions  # noqa: E402
from edgert.errors import EdgertError  # noqa: E402

pytestmark = pytest.mark.slow
NETS = Path(__file__).parent / "torch_models" / "nets.py"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(NETS.parent))
import nets  # noqa: E402


def against_torch(factory: str, tflite_path, arrays: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Per output: (Pearson correlation, top-1 agreement) of the .tflite run through edgert against the module run
    by torch here, on `arrays` (by input name, NCHW as torch takes them), sample by sample."""
    module = getattr(nets, factory)()
    module = module[0] if isinstance(module, tuple) else module
    names = getattr(module, "output_names", None)
    model = edgert.load(tflite_path)
    count = len(next(iter(arrays.values())))
    want, got = {}, {}
    for i in range(count):
        sample = {k: v[i:i + 1] for k, v in arrays.items()}
        with torch.no_grad():
            out = module(*(torch.from_numpy(sample[k]) for k in arrays))
        out = out if isinstance(out, tuple) else (out,)
        keys = names or [s.name for s in model.outputs]
        for k, t in zip(keys, out):
            want.setdefault(k, []).append(t.numpy())
        fed = {k: np.moveaxis(v, 1, -1) if v.ndim == 4 and k in model.channel_first_inputs else v
               for k, v in sample.items()}
        for k, v in model.run_by_name(fed if len(fed) > 1 else {model.inputs[0].name: next(iter(fed.values()))}
                                      ).items():
            got.setdefault(k, []).append(v)
    result = {}
    for k in want:
        w, g = np.concatenate(want[k]), np.concatenate(got[k])
        result[k] = (pearson(g, w), same_class(g, w))
    return result


def signature_of(path) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_list()["serving_default"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("foreign")
    rng = np.random.default_rng(1)
    np.save(folder / "images.npy", rng.random((16, 3, nets.SIZE, nets.SIZE), dtype=np.float32))  # NCHW, as torch
    np.savez(folder / "two.npz", frame=rng.random((16, 3, 32, 32), dtype=np.float32),
             hint=rng.random((16, 8), dtype=np.float32))
    module, (x,) = nets.mobilenet_v3_small()
    torch.onnx.export(module, (x,), str(folder / "mobilenet.onnx"), input_names=["image"], output_names=["logits"],
                      opset_version=17, dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return folder


CASES = [  # factory, route, calibration file, input names, output names
    ("mobilenet_v3_small", "litert-torch", "images.npy", ["image"], ["output_0"]),
    ("mobilenet_v3_small", "onnx", "images.npy", ["image"], ["output_0"]),
    ("resnet18", "litert-torch", "images.npy", ["pixels"], ["logits"]),
    ("two_by_two", "litert-torch", "two.npz", ["frame", "hint"], ["left", "right"]),
    ("two_by_two", "onnx", "two.npz", ["frame", "hint"], ["left", "right"]),
]


def _module_cases():
    """Every module by its route in both modes; mobilenet_v3_small's float32 (half a minute a route) is
    make heavy-test's, its int8 stays here."""
    for mode in ("float32", "int8"):
        for case in CASES:
            heavy = case[0] == "mobilenet_v3_small" and mode == "float32"
            yield pytest.param(*case, mode, id=f"{case[0]}-{case[1]}-{mode}", marks=pytest.mark.heavy if heavy else ())


@pytest.mark.parametrize("factory, route, calibration, inputs, outputs, mode", list(_module_cases()))
def test_modules_convert_by_both_routes_and_agree_with_torch_by_name(data, tmp_path, factory, route, calibration,
                                                                     inputs, outputs, mode):
    int8 = mode == "int8"
    result = convert(f"{NETS}:{factory}", tmp_path / "m.tflite", int8=int8,
                     calibration_data=data / calibration if int8 else None,
                     foreign=ForeignOptions(route=route))
    assert result.route == route and result.source_format.startswith("PyTorch 2.")
    assert result.mode is (Quantization.INT8 if int8 else Quantization.FLOAT32)
    assert not result.warnings, result.warnings
    assert result.agreement.reference == "PyTorch" and {o.name for o in result.agreement.outputs} == set(outputs)
    if int8:
        assert any("channel-first, as the source takes it: transposed" in n for n in result.notes)
    else:
        assert result.agreement.max_rel_diff <= 1e-4, result.agreement.describe()
    # judged here against torch itself, on samples the conversion did not calibrate with
    loaded = np.load(data / calibration)
    arrays = {k: loaded[k][-6:] for k in loaded.files} if calibration.endswith(".npz") else {inputs[0]: loaded[-6:]}
    checked = against_torch(factory, result.output_path, arrays)
    for name, (r, top1) in checked.items():
        assert r >= (0.98 if int8 else 0.99999), (name, r)
        if factory != "two_by_two":  # a classifier: the decision itself
            assert top1 >= (0.8 if int8 else 1.0), (name, top1)
        reported = next(o for o in result.agreement.outputs if o.name == name)
        assert abs(reported.cosine - r) < 0.02 or reported.cosine > r, (name, reported.cosine, r)
    signature = signature_of(result.output_path)
    assert sorted(signature["inputs"]) == sorted(inputs) and sorted(signature["outputs"]) == sorted(outputs)
    model = edgert.load(result.output_path)
    image = next(s for s in model.inputs if len(s.shape) == 4)
    assert image.shape[-1] == 3, "nhwc by default: 4-D inputs channel-last"
    assert model.channel_first_inputs == (image.name,)


@pytest.mark.parametrize("route", ["litert-torch", "onnx"])
def test_equal_shape_outputs_keep_their_names_against_an_independent_torch_run(tmp_path, route):
    """`left` and `right` share a shape: the .tflite's outputs by name equal torch's, measured here, not by the
    agreement the conversion reports; in the source's own NCHW layout too."""
    module = nets.two_by_two()
    rng = np.random.default_rng(5)
    frame, hint = rng.random((1, 3, 32, 32), dtype=np.float32), rng.normal(size=(1, 8)).astype(np.float32)
    with torch.no_grad():
        left, right = (t.numpy() for t in module(torch.from_numpy(frame), torch.from_numpy(hint)))
    for layout in ("nhwc", "nchw"):
        path = tmp_path / f"{layout}.tflite"
        convert(f"{NETS}:two_by_two", path, foreign=ForeignOptions(route=route, layout=layout))
        model = edgert.load(path)
        given = np.moveaxis(frame, 1, -1) if layout == "nhwc" else frame
        got = model.run_by_name({"frame": given, "hint": hint})
        np.testing.assert_allclose(got["left"], left, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["right"], right, rtol=1e-4, atol=1e-5)
        assert model.channel_first_inputs == (("frame",) if layout == "nhwc" else ())
    needs.module("tritonclient.http")
    from edgert.serve import ServeConfig
    from tests.test_serve import Running, _infer

    with Running(ServeConfig(models={"two": path}, poll=0)) as running:  # the nchw one: served by name
        client = running.client()
        names = [o["name"] for o in client.get_model_metadata("two")["outputs"]]
        served = dict(zip(names, _infer(client, "two", {"frame": frame, "hint": hint})))
    assert sorted(served) == ["left", "right"]
    np.testing.assert_allclose(served["left"], left, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(served["right"], right, rtol=1e-4, atol=1e-5)


@pytest.mark.heavy  # a real architecture by the onnx route; small modules by both routes are in make test
def test_resnet18_float32_by_the_onnx_route(tmp_path):
    result = convert(f"{NETS}:resnet18", tmp_path / "r.tflite", foreign=ForeignOptions(route="onnx"))
    assert result.agreement.max_rel_diff <= 1e-4 and not result.warnings
    assert signature_of(result.output_path)["outputs"] == ["logits"]


def _cli(*args, cwd=None, offline=False):
    command = [str(BIN / "edgert"), *map(str, args)]
    if offline:
        command = ["unshare", "-n", *command]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


def test_onnx_file_converts_offline_from_the_command_line_then_runs_and_serves(data, tmp_path):
    """`edgert convert model.onnx --int8 --calibration-data x.npy` with the network unreachable (a network namespace
    of its own), agreement against onnxruntime by name; `edgert run` takes the source's NCHW array and says it
    transposed it; `edgert serve` answers as `run` does."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode != 0:
        needs.missing("needs unshare -n (root) to take the network away")
    onnx_path = tmp_path / "mobilenet.onnx"
    shutil.copy(data / "mobilenet.onnx", onnx_path)
    done = _cli("convert", onnx_path, "--int8", "--calibration-data", data / "images.npy", "--json", offline=True)
    assert done.returncode == 0, done.stderr
    import json

    report = json.loads(done.stdout)
    assert report["source_format"] == "ONNX opset 17 .onnx" and report["route"] == "onnx"
    assert report["agreement"]["reference"] == "onnxruntime" and report["agreement"]["min_cosine"] >= 0.98
    assert report["layout"][0].startswith("image (1, 96, 96, 3) channel-last, the source's (1, 3, 96, 96)")
    assert any("open batch dimension is fixed at 1" in n for n in report["notes"])
    out = Path(report["output_path"])
    assert out == tmp_path / "mobilenet_int8.tflite" and not list(tmp_path.glob("*.part"))
    assert signature_of(out) == {"inputs": ["image"], "outputs": ["logits"]}

    x = np.load(data / "images.npy")[:1]
    np.save(tmp_path / "x.npy", x)
    ran = _cli("run", out, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy")
    assert ran.returncode == 0, ran.stderr
    assert "input 'image': (1, 3, 96, 96) is in the source's channel-first layout; transposed" in ran.stderr
    shown = _cli("inspect", out)
    assert "layout        image: channel-last here, channel-first in the source" in shown.stdout, shown.stdout
    got = np.load(tmp_path / "y.npy")
    import onnxruntime

    expected = onnxruntime.InferenceSession(str(onnx_path)).run(["logits"], {"image": x})[0]
    cos = float(np.sum(got * expected) / np.linalg.norm(got) / np.linalg.norm(expected))
    assert cos >= 0.98

    # a module, offline too, by the command a user types
    module_out = tmp_path / "two_int8.tflite"
    done = _cli("convert", f"{NETS}:two_by_two", "--int8", "--calibration-data", data / "two.npz", "-o", module_out,
                offline=True)
    assert done.returncode == 0, done.stderr
    assert "(route litert-torch)" in done.stdout and "vs PyTorch on 8 calibration samples" in done.stdout
    assert signature_of(module_out) == {"inputs": ["frame", "hint"], "outputs": ["left", "right"]}

    th = needs.module("tritonclient.http")
    from edgert.serve import ServeConfig
    from tests.test_serve import Running

    with Running(ServeConfig(models={"mobilenet": out}, poll=0)) as running:
        client = running.client()
        meta = client.get_model_metadata("mobilenet")
        assert [i["name"] for i in meta["inputs"]] == ["image"] and [o["name"] for o in meta["outputs"]] == ["logits"]
        request = th.InferInput("image", [1, 96, 96, 3], "FP32")
        request.set_data_from_numpy(np.ascontiguousarray(np.moveaxis(x, 1, -1)))
        served = client.infer("mobilenet", [request]).as_numpy("logits")
    np.testing.assert_array_equal(served, got)


def _onnx_graph(path: Path, op: str, domain: str = "", shape=(1, 3, 8, 8)):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node(op, ["x"], ["y"], domain=domain, name="the_node")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    imports = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=imports), str(path))
    return path


def _module_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "user_net.py"
    path.write_text("import torch\nfrom torch import nn\n" + body)
    return path


def _refused(done, *parts):
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def test_bad_sources_get_one_line_each_and_nothing_is_written(tmp_path):
    torch.save(nets.two_by_two().state_dict(), tmp_path / "good.pt")
    wrong = nets.two_by_two().state_dict()
    wrong["a.weight"] = torch.zeros(3, 16)
    torch.save(wrong, tmp_path / "wrong.pt")
    torch.save(nets.two_by_two(), tmp_path / "pickled.pt")  # the whole module: unpickling runs code
    nets_arg = f"{NETS}:two_by_two"
    cases = [
        (["convert", _onnx_graph(tmp_path / "custom.onnx", "Frobnicate", "com.example")],
         ["operator Frobnicate of domain 'com.example' (node 'the_node') has no onnx2tf conversion"]),
        (["convert", _onnx_graph(tmp_path / "open.onnx", "Relu", shape=("N", 3, "H", "W"))],
         ["input 'x' of open.onnx has shape (?, 3, ?, ?) with open dimensions", "--input-shape x:1,3,N,N"]),
        (["convert", f"{_module_file(tmp_path, 'import not_installed_anywhere')}:make"],
         ["failed to import (line 3): ModuleNotFoundError", "not_installed_anywhere"]),
        (["convert", nets_arg, "--weights", tmp_path / "wrong.pt"],
         ["does not fit", "first mismatch 'a.weight' (shape (3, 16) in the file, (6, 16) in the module)"]),
        (["convert", nets_arg, "--weights", tmp_path / "pickled.pt"],
         ["is not a plain state dict", "--trust-model"]),
        (["convert", nets_arg, "--float16"], ["litert-torch route cannot do --float16", "--route onnx"]),
        (["convert", f"{NETS}:no_such_factory"], ["has no function 'no_such_factory'"]),
        (["convert", _onnx_graph(tmp_path / "plain.onnx", "Relu"), "--route", "litert-torch"],
         ["an .onnx file takes --route onnx"]),
    ]
    before = set(tmp_path.iterdir()) | set(NETS.parent.iterdir())
    for args, parts in cases:
        _refused(_cli(*args, cwd=tmp_path), *parts)
    assert set(tmp_path.iterdir()) | set(NETS.parent.iterdir()) == before
    # the same weights, plain and pickled (trusted), load and convert
    for weights, extra in (("good.pt", []), ("pickled.pt", ["--trust-model"])):
        done = _cli("convert", nets_arg, "--weights", tmp_path / weights, "-o", tmp_path / f"{weights}.tflite",
                    *extra)
        assert done.returncode == 0, done.stderr


def test_factory_names_and_shapes_come_from_the_module(tmp_path):
    """forward's parameter names, a dict of outputs, and --input-shape where the file gives no example inputs."""
    path = _module_file(tmp_path, (
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 4, 3)\n"
        "    def forward(self, spectrogram):\n"
        "        y = self.conv(spectrogram)\n"
        "        return {'activity': y.mean((1, 2, 3)), 'peak': y.amax((1, 2, 3))}\n"
        "def make():\n"
        "    return Net()\n"))
    with pytest.raises(EdgertError, match="--input-shape 1,3,224,224"):
        convert(f"{path}:make", tmp_path / "a.tflite")
    result = convert(f"{path}:make", tmp_path / "a.tflite", foreign=ForeignOptions(
        input_shapes=((None, (1, 1, 20, 12)),), layout="nchw"))
    assert signature_of(result.output_path) == {"inputs": ["spectrogram"], "outputs": ["activity", "peak"]}
    assert edgert.load(result.output_path).inputs[0].shape == (1, 1, 20, 12)
    assert result.agreement.max_rel_diff <= 1e-4


@pytest.mark.heavy
def test_resnet18_int8_by_the_onnx_route_agrees_with_torch(data, tmp_path):
    """TensorFlow 2.21's int8 converter wrote ResNet-18 from onnx2tf's SavedModel with a FULLY_CONNECTED after a 4-D
    mean that the interpreter refused; the onnx route's integer modes now quantize the float .tflite with
    ai-edge-quantizer instead, and the model agrees with torch, measured here on samples it did not calibrate with."""
    result = convert(f"{NETS}:resnet18", tmp_path / "r.tflite", int8=True, calibration_data=data / "images.npy",
                     foreign=ForeignOptions(route="onnx"))
    assert result.mode is Quantization.INT8 and not result.warnings, result.warnings
    ((r, top1),) = against_torch("resnet18", result.output_path, {"pixels": np.load(data / "images.npy")[-6:]}
                                 ).values()
    assert r >= 0.98 and top1 >= 0.8, (r, top1)


MODES = [("float16", "onnx"), ("dynamic", "onnx"), ("dynamic", "litert-torch"), ("int16x8", "onnx"),
         ("int16x8", "litert-torch"), ("edgetpu", "onnx")]


@pytest.mark.parametrize("mode, route", MODES, ids=[f"{m}-{r}" for m, r in MODES])
def test_every_post_training_mode_by_the_route_that_has_it(data, tmp_path, mode, route):
    from edgert.converters import ConvertRecipe

    calibrated = mode in ("int16x8", "edgetpu")
    result = convert(f"{NETS}:two_by_two", tmp_path / "m.tflite", recipe=ConvertRecipe(Quantization(mode)),
                     calibration_data=data / "two.npz" if calibrated else None, foreign=ForeignOptions(route=route))
    assert result.mode is Quantization(mode) and not result.warnings, result.warnings
    assert {o.name for o in result.agreement.outputs} == {"left", "right"}
    with np.load(data / "two.npz") as loaded:  # torch itself, on samples the conversion did not calibrate with
        checked = against_torch("two_by_two", result.output_path, {k: loaded[k][-6:] for k in ("frame", "hint")})
    floor = 0.999 if mode == "float16" else 0.98
    assert all(r >= floor for r, _ in checked.values()), checked
    model = edgert.load(result.output_path)
    if mode in ("int16x8", "edgetpu"):
        assert model.inputs[0].dtype == ("int16" if mode == "int16x8" else "int8")


def test_four_dimensional_outputs_follow_the_layout_on_both_routes(tmp_path):
    """A feature map out: channel-last under nhwc, as torch gives it under nchw (onnx2tf makes it channel-last
    itself: a wrapper moves it back), equal to torch by name either way."""
    path = _module_file(tmp_path, (
        "class Net(nn.Module):\n"
        "    output_names = ['features', 'pooled']\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 5, 3, padding=1)\n"
        "    def forward(self, x):\n"
        "        f = torch.relu(self.conv(x))\n"
        "        return f, f.mean((2, 3))\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return Net().eval(), (torch.rand(1, 3, 12, 16),)\n"))
    x = np.random.default_rng(2).random((1, 3, 12, 16), dtype=np.float32)
    spec = importlib.util.spec_from_file_location("user_net_check", path)
    user = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(user)
    module, _ = user.make()
    with torch.no_grad():
        features, pooled = (t.numpy() for t in module(torch.from_numpy(x)))
    for route in ("litert-torch", "onnx"):
        for layout in ("nhwc", "nchw"):
            out = tmp_path / f"{route}-{layout}.tflite"
            result = convert(f"{path}:make", out, foreign=ForeignOptions(route=route, layout=layout))
            assert result.agreement.max_rel_diff <= 1e-4, (route, layout, result.agreement.describe())
            got = edgert.load(out).run_by_name(np.moveaxis(x, 1, -1) if layout == "nhwc" else x)
            want = np.moveaxis(features, 1, -1) if layout == "nhwc" else features
            assert got["features"].shape == want.shape, (route, layout)
            np.testing.assert_allclose(got["features"], want, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(got["pooled"], pooled, rtol=1e-4, atol=1e-5)
            assert any(line.startswith("features (1, 12, 16, 5) channel-last") for line in result.layout) == (
                layout == "nhwc")
