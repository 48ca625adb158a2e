"""edgert serve: the Open Inference Protocol as tritonclient speaks it, the repository, scheduling and faults."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import edgert
from tests import needs

needs.module("uvicorn")
th = needs.module("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from edgert.serve import ServeConfig, Server, create_app  # noqa: E402
from edgert.serve.repository import Repository, Version  # noqa: E402
from edgert.serve.scheduler import DeadlineExceeded, Job, Overloaded, Scheduler  # noqa: E402

from tests.sshd import _free_port  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

BIN = Path(sys.executable).parent


class Running:
    """A server in a thread of this process, on a free port."""

    def __init__(self, config: ServeConfig):
        import uvicorn

        config.port = _free_port()
        self.config = config
        self.server = Server(config)
        self.app = create_app(config, self.server)
        self.uv = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=config.port, log_level="error",
                                                access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.uv.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uv.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.uv.should_exit = True
        self.thread.join(30)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.config.port}"

    def client(self, **kwargs):
        return th.InferenceServerClient(self.url, **kwargs)

    def http(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.config.port, timeout=30)
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, dict(response.getheaders()), data


def _infer(client, name: str, arrays: dict[str, np.ndarray], binary: bool = True, **kwargs):
    inputs = []
    for n, a in arrays.items():
        i = th.InferInput(n, list(a.shape), {np.dtype(np.float32): "FP32", np.dtype(np.int8): "INT8",
                                              np.dtype(np.uint8): "UINT8"}[a.dtype])
        i.set_data_from_numpy(a, binary_data=binary)
        inputs.append(i)
    meta = client.get_model_metadata(name)
    outputs = [th.InferRequestedOutput(o["name"], binary_data=binary) for o in meta["outputs"]]
    result = client.infer(name, inputs, outputs=outputs, **kwargs)
    return [result.as_numpy(o["name"]) for o in meta["outputs"]]


@pytest.fixture(scope="module")
def digits_x(digits):
    return digits.x_test[:5].astype(np.float32)


@pytest.fixture
def served(float_tflite, int8_tflite, two_input_tflite):
    config = ServeConfig(models={"digits": Path(float_tflite), "digits_int8": Path(int8_tflite),
                                 "two": Path(two_input_tflite)}, poll=0)
    with Running(config) as running:
        yield running


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_gets_what_edgert_run_gives(served, float_tflite, int8_tflite, two_input_tflite, digits_x,
                                                  binary, tmp_path):
    """An independent client, unchanged: results equal `edgert run` on the same inputs, for float and int8 models
    and a model with two inputs, with binary tensors and with JSON ones."""
    client = served.client()
    assert client.is_server_live() and client.is_server_ready()
    np.save(tmp_path / "x.npy", digits_x)
    for name, path in (("digits", float_tflite), ("digits_int8", int8_tflite)):
        (got,) = _infer(client, name, {edgert.load(path).inputs[0].name: digits_x}, binary)
        done = subprocess.run([BIN / "edgert", "run", str(path), "--input", str(tmp_path / "x.npy"), "-o",
                               str(tmp_path / f"{name}.npy")], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        np.testing.assert_array_equal(got, np.load(tmp_path / f"{name}.npy"))
    model = edgert.load(two_input_tflite)
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 2), np.float32)
    by_name = {s.name: a if s.shape[-1] == 3 else b for s in model.inputs}
    (got,) = _infer(client, "two", by_name, binary)
    np.testing.assert_array_equal(got, model.run(by_name)[0])
    np.testing.assert_allclose(got[:, 0], 2 * a.sum(1) + b.sum(1))


def test_a_quantized_input_also_takes_its_stored_type(served, int8_tflite, digits_x):
    model = edgert.load(int8_tflite)
    spec = model.inputs[0]
    q = np.clip(np.rint(digits_x / spec.scale[0] + spec.zero_point[0]), -128, 127).astype(np.int8)
    (got,) = _infer(served.client(), "digits_int8", {spec.name: q})
    np.testing.assert_array_equal(got, model.run(q)[0])


def test_metadata_config_and_repository_index(served, int8_tflite):
    client = served.client()
    meta = client.get_model_metadata("digits_int8")
    model = edgert.load(int8_tflite)
    assert meta["inputs"] == [{"name": model.inputs[0].name, "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert meta["outputs"][0]["shape"] == [-1, 10] and meta["versions"] == [meta["versions"][0]]
    config = client.get_model_config("digits_int8")
    assert config["parameters"]["delegate"] == model.delegation.used
    # Triton's own schema: the batch dimension is dynamic, so the model batches and dims leave it out.
    assert config["max_batch_size"] >= 1 and "dynamic_batching" not in config
    assert config["input"] == [{"name": model.inputs[0].name, "data_type": "TYPE_FP32", "dims": [8, 8, 1]}]
    assert config["output"][0]["dims"] == [10] and config["output"][0]["data_type"] == "TYPE_FP32"
    assert client.is_model_ready("digits") and not client.is_model_ready("nope")
    index = client.get_model_repository_index()
    assert {row["name"]: row["state"] for row in index} == {"digits": "READY", "digits_int8": "READY",
                                                             "two": "READY"}
    assert served.http("GET", "/v2")[0] == 200


def test_signature_names_are_the_interface_and_tensor_names_aliases(named_tflite, digits_x):
    """A model whose signature names differ from its tensor names: metadata, config and answers use the
    signature's names; a client that still sends the tensor names is answered too."""
    model = edgert.load(named_tflite)
    assert [s.name for s in model.inputs] == ["image"] and {s.name for s in model.outputs} == {"box", "score"}
    assert all(s.tensor_name != s.name for s in model.outputs)
    with Running(ServeConfig(models={"named": Path(named_tflite)}, poll=0)) as served:
        client = served.client()
        meta = client.get_model_metadata("named")
        assert [t["name"] for t in meta["outputs"]] == [s.name for s in model.outputs]
        config = client.get_model_config("named")
        assert [t["name"] for t in config["output"]] == [s.name for s in model.outputs]
        x = digits_x[:2]
        expected = model.run_by_name(x)
        for key in ("image", model.inputs[0].tensor_name):
            inputs = [th.InferInput(key, list(x.shape), "FP32")]
            inputs[0].set_data_from_numpy(x)
            alias = next(s.tensor_name for s in model.outputs if s.name == "score")
            asked = [th.InferRequestedOutput("box"), th.InferRequestedOutput(alias)]
            result = client.infer("named", inputs, outputs=asked)
            np.testing.assert_array_equal(result.as_numpy("box"), expected["box"])
            np.testing.assert_array_equal(result.as_numpy(alias), expected["score"])


def test_bad_requests_get_a_json_error_naming_the_tensor(served, digits_x):
    client = served.client()
    name = client.get_model_metadata("digits")["inputs"][0]["name"]
    cases = [
        ({name: digits_x[:, :4]}, "has shape [5, 4, 8, 1]; the model takes [-1, 8, 8, 1]"),
        ({name: digits_x.astype(np.uint8)}, f"input '{name}' is UINT8; send FP32"),
        ({"pixels": digits_x}, "unknown input(s) ['pixels'], missing ['image']; the model's inputs are ['image']"),
    ]
    for arrays, message in cases:
        with pytest.raises(InferenceServerException) as caught:
            _infer(client, "digits", arrays)
        assert caught.value.status() == "400" and message in caught.value.message(), caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        _infer(client, "nope", {name: digits_x})
    assert caught.value.status() == "400" or "unknown model 'nope'" in str(caught.value)
    status, _, body = served.http("POST", "/v2/models/nope/infer", b"{}")
    assert status == 404 and "unknown model 'nope'; this server has: digits, digits_int8, two" in json.loads(body)[
        "error"]
    for body, message in ((b"{not json", "not valid JSON"), (b"[]", "JSON object"), (b"{}", "no 'inputs'"),
                          (json.dumps({"inputs": [{"name": name, "shape": [1, 8, 8, 1], "datatype": "FP32",
                                                   "data": [1.0] * 63}]}).encode(), "63 values for shape")):
        status, headers, answer = served.http("POST", "/v2/models/digits/infer", body)
        assert status == 400 and message in json.loads(answer)["error"], answer
        assert headers["content-type"] == "application/json"
    status, _, answer = served.http("POST", "/v2/models/digits/infer", b"{}",
                                    {"Inference-Header-Content-Length": "99"})
    assert status == 400 and b"outside the body" in answer
    assert served.http("GET", "/v2/models/digits/infer")[0] == 405
    assert served.http("GET", "/nothing/here")[0] == 404


def test_an_oversized_body_is_413_and_compressed_bodies_are_bounded(float_tflite, digits_x):
    import gzip

    with Running(ServeConfig(models={"digits": Path(float_tflite)}, max_body=4096, poll=0)) as running:
        status, _, answer = running.http("POST", "/v2/models/digits/infer", b"x" * 5000)
        assert status == 413 and b"--max-body" in answer
        bomb = gzip.compress(b" " * 100_000)  # small on the wire, 100 kB inflated
        status, _, answer = running.http("POST", "/v2/models/digits/infer", bomb, {"Content-Encoding": "gzip"})
        assert status == 413
        name = edgert.load(float_tflite).inputs[0].name
        x = digits_x[:1]
        (got,) = _infer(running.client(), "digits", {name: x}, request_compression_algorithm="gzip")
        np.testing.assert_array_equal(got, edgert.load(float_tflite).run(x)[0])


def test_a_token_file_requires_the_bearer_token(float_tflite, digits_x):
    token = "s3cret-token-of-enough-length"
    with Running(ServeConfig(models={"digits": Path(float_tflite)}, token=token, poll=0)) as running:
        status, headers, answer = running.http("GET", "/v2/health/ready")
        assert status == 401 and headers["www-authenticate"] == "Bearer" and b"--token-file" in answer
        assert running.http("GET", "/metrics", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert running.http("GET", "/v2/health/live")[0] == 200  # for container and systemd probes
        client = running.client()
        assert not client.is_server_ready()
        auth = {"Authorization": f"Bearer {token}"}
        assert client.is_server_ready(headers=auth)
        name = edgert.load(float_tflite).inputs[0].name
        (got,) = _infer_with_headers(client, "digits", name, digits_x, auth)
        assert got.shape == (5, 10)


def _infer_with_headers(client, model, name, x, headers):
    i = th.InferInput(name, list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    meta = client.get_model_metadata(model, headers=headers)
    result = client.infer(model, [i], headers=headers)
    return [result.as_numpy(o["name"]) for o in meta["outputs"]]


def test_metrics_count_requests_by_status_and_show_the_delegate(served, digits_x):
    client = served.client()
    name = client.get_model_metadata("digits")["inputs"][0]["name"]
    for _ in range(3):
        _infer(client, "digits", {name: digits_x})
    served.http("POST", "/v2/models/digits/infer", b"{bad")
    status, headers, text = served.http("GET", "/metrics")
    text = text.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'edgert_requests_total{model="digits",status="200"} 3.0' in text
    assert 'edgert_requests_total{model="digits",status="400"} 1.0' in text
    assert 'edgert_queue_wait_seconds_count{model="digits"} 3.0' in text
    assert 'edgert_compute_seconds_count{model="digits"} 3.0' in text
    assert 'edgert_batch_size_sum{model="digits"} 15.0' in text
    assert 'edgert_queue_depth{model="digits"} 0.0' in text
    assert 'delegate="xnnpack",model="digits"' in text


# -- the repository ---------------------------------------------------------------------------------------------


def _deploy_locally(models: Path, name: str, tflite: Path) -> str:
    """What `edgert deploy` leaves on a board: models/NAME/v-VERSION/ unpacked, and `current` linking to it (the
    one it replaced becomes `previous`)."""
    from edgert.deploy.bundle import build

    data, manifest = build(tflite, None, name=name)
    folder = models / name / f"v-{manifest.version}"
    zipfile.ZipFile(io.BytesIO(data)).extractall(folder)
    current = models / name / "current"
    if current.is_symlink():
        previous = models / name / "previous.tmp"
        os.symlink(os.readlink(current), previous)
        os.rename(previous, models / name / "previous")
    tmp = models / name / "current.tmp"
    os.symlink(folder.name, tmp)
    os.rename(tmp, current)  # what the board agent does: one rename
    return manifest.version


def test_a_deploy_switches_the_served_version_without_dropping_a_request(tmp_path, float_tflite, int8_tflite,
                                                                         digits_x):
    models = tmp_path / "edgert" / "models"
    first = _deploy_locally(models, "digits", Path(float_tflite))
    (models.parent / "venv").mkdir()
    with Running(ServeConfig(repository=models.parent, poll=0.05)) as running:
        client = running.client()
        assert client.get_model_metadata("digits")["versions"] == [first]
        name = client.get_model_metadata("digits")["inputs"][0]["name"]
        float_y = edgert.load(float_tflite).run(digits_x)[0]
        int8_y = edgert.load(int8_tflite).run(digits_x)[0]
        answers, stop = [], threading.Event()

        def hammer():
            c = running.client()
            while not stop.is_set():
                answers.append(_infer(c, "digits", {name: digits_x})[0])
            c.close()

        workers = [threading.Thread(target=hammer) for _ in range(3)]
        for w in workers:
            w.start()
        time.sleep(0.3)
        second = _deploy_locally(models, "digits", Path(int8_tflite))
        deadline = time.monotonic() + 10
        while client.get_model_metadata("digits")["versions"] != [second]:
            assert time.monotonic() < deadline, "the new version was not picked up"
            time.sleep(0.02)
        time.sleep(0.3)
        stop.set()
        for w in workers:
            w.join()
        # every answer is whole and from one version or the other, and both versions answered
        kinds = [("float" if np.array_equal(a, float_y) else "int8" if np.array_equal(a, int8_y) else "other")
                 for a in answers]
        assert "other" not in kinds and "float" in kinds and kinds[-1] == "int8"
        # a rollback (previous becomes current) is served the same way
        os.symlink(os.readlink(models / "digits" / "previous"), models / "digits" / "current.tmp")
        os.rename(models / "digits" / "current.tmp", models / "digits" / "current")
        deadline = time.monotonic() + 10
        while client.get_model_metadata("digits")["versions"] != [first]:
            assert time.monotonic() < deadline, "the rollback was not picked up"
            time.sleep(0.02)
        np.testing.assert_array_equal(_infer(client, "digits", {name: digits_x})[0], float_y)


def test_unload_load_and_a_model_deleted_while_served(tmp_path, float_tflite, digits_x):
    import shutil

    folder = tmp_path / "repo"
    folder.mkdir()
    shutil.copy(float_tflite, folder / "digits.tflite")
    with Running(ServeConfig(repository=folder, poll=0.05)) as running:
        client = running.client()
        name = client.get_model_metadata("digits")["inputs"][0]["name"]
        client.unload_model("digits")
        assert not client.is_model_ready("digits")
        with pytest.raises(InferenceServerException) as caught:
            _infer(client, "digits", {name: digits_x})
        assert "unloaded" in str(caught.value)
        client.load_model("digits")
        assert client.is_model_ready("digits")
        # deleted from the repository: the loaded version goes on serving, and the index says why
        (folder / "digits.tflite").unlink()
        time.sleep(0.3)
        assert _infer(client, "digits", {name: digits_x})[0].shape == (5, 10)
        (row,) = client.get_model_repository_index()
        assert row["state"] == "READY" and "no such model file" in row["reason"]
        # a model added to the repository later is served without asking
        shutil.copy(float_tflite, folder / "late.tflite")
        deadline = time.monotonic() + 10
        while not client.is_model_ready("late"):
            assert time.monotonic() < deadline, "the new model was not picked up"
            time.sleep(0.05)
        client.load_model("late")  # and a load request reloads it
        assert client.is_model_ready("late")
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("never")
        assert "no model 'never'" in str(caught.value)


def test_a_delegate_that_cannot_load_falls_back_or_is_503_under_strict(float_tflite, digits_x):
    with Running(ServeConfig(models={"digits": Path(float_tflite)}, delegate="gpu", poll=0)) as running:
        config = running.client().get_model_config("digits")
        assert config["parameters"]["delegate"] in ("gpu", "xnnpack")  # gpu where one works, else the fallback
        gpu_here = config["parameters"]["delegate"] == "gpu"
    if gpu_here:
        pytest.skip("the GPU delegate works here; the strict refusal needs a machine without one")
    with Running(ServeConfig(models={"digits": Path(float_tflite)}, delegate="gpu", strict=True, poll=0)) as running:
        client = running.client()
        assert not client.is_server_ready() and not client.is_model_ready("digits")
        status, _, answer = running.http("POST", "/v2/models/digits/infer", b"{}")
        assert status == 503 and "not ready: no requested delegate could run the model: gpu" in json.loads(answer)[
            "error"]


def test_dynamic_batching_stacks_concurrent_requests_and_splits_the_answers(float_tflite, digits):
    x = digits.x_test[:64].astype(np.float32)
    expected = edgert.load(float_tflite).run(x)[0]
    config = ServeConfig(models={"digits": Path(float_tflite)}, max_batch=16, batch_timeout_ms=50, poll=0)
    with Running(config) as running:
        name = running.client().get_model_metadata("digits")["inputs"][0]["name"]

        def one(i):
            client = th.InferenceServerClient(running.url)
            try:
                return _infer(client, "digits", {name: x[2 * i:2 * i + 2]})[0]
            finally:
                client.close()

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(one, range(32)))
        for i, got in enumerate(answers):
            np.testing.assert_allclose(got, expected[2 * i:2 * i + 2], rtol=1e-5, atol=1e-6)
        text = running.http("GET", "/metrics")[2].decode()
        count = float(text.split('edgert_batch_size_count{model="digits"} ')[1].split()[0])
        assert count < 32, "no requests were batched together"


# -- the scheduler, deterministically -------------------------------------------------------------------------


class _FakeSpec:
    def __init__(self, dynamic: bool):
        self.shape_signature = (-1, 2) if dynamic else (1, 2)
        self.name = "x"


class _FakeModel:
    """Records what it ran; blocks while `gate` is clear."""

    def __init__(self, name, log, gate, dynamic=False, delegate="xnnpack"):
        self.name, self.log, self.gate = name, log, gate
        self.inputs = [_FakeSpec(dynamic)]
        self.delegation = type("D", (), {"used": delegate, "fallback": False})()
        self.started = 0

    def run(self, inputs):
        self.started += 1
        self.gate.wait(10)
        self.log.append((self.name, inputs[0].shape[0]))
        return [inputs[0] * 2]


def _scheduler(names, gate, log, **kwargs):
    dynamic, copies = kwargs.pop("dynamic", False), kwargs.get("instances", 1)
    models = {n: [_FakeModel(n, log, gate, dynamic) for _ in range(copies)] for n in names}
    repo = Repository({n: Path(n) for n in names}, load_model=lambda p: models[str(p)][0])
    for entry in repo.entries.values():
        entry.current = Version("1", tuple(models[entry.name]))
    scheduler = Scheduler(repo, **kwargs)
    for entry in repo.entries.values():
        scheduler.route(entry)
    return scheduler


def _job(name, rows=1, deadline=None):
    return Job(name, [np.full((rows, 2), rows, np.float32)], rows, deadline)


def test_weighted_round_robin_gives_each_model_its_share():
    gate, log = threading.Event(), []
    scheduler = _scheduler(["a", "b"], gate, log, max_queue=100, priorities={"a": 3, "b": 1})
    blocker = scheduler.submit("a", _job("a"))  # occupies the executor while the queues fill
    time.sleep(0.05)
    futures = [scheduler.submit(n, _job(n)) for n in ["a"] * 12 + ["b"] * 12]
    gate.set()
    for f in [blocker, *futures]:
        f.result(10)
    order = "".join(name for name, _ in log[1:17])
    assert order.count("a") == 12 and order.count("b") == 4, order  # 3:1 while both have work
    scheduler.stop()


def test_a_full_queue_refuses_at_once_and_an_expired_request_is_not_run():
    gate, log = threading.Event(), []
    scheduler = _scheduler(["a"], gate, log, max_queue=2)
    running = scheduler.submit("a", _job("a"))
    time.sleep(0.05)
    queued = [scheduler.submit("a", _job("a", deadline=time.monotonic() - 1)), scheduler.submit("a", _job("a"))]
    with pytest.raises(Overloaded) as caught:
        scheduler.submit("a", _job("a"))
    assert caught.value.retry_after >= 1 and "--max-queue" in str(caught.value)
    gate.set()
    running.result(10)
    with pytest.raises(DeadlineExceeded):
        queued[0].result(10)
    queued[1].result(10)
    assert len(log) == 2  # the expired request never ran
    scheduler.stop()


def test_batches_never_exceed_max_batch_and_split_back_in_order():
    gate, log = threading.Event(), []
    scheduler = _scheduler(["a"], gate, log, max_queue=100, max_batch=8, batch_timeout=0.5, dynamic=True)
    blocker = scheduler.submit("a", _job("a", rows=8))  # a full batch: runs at once, and blocks
    time.sleep(0.05)
    jobs = [_job("a", rows=r) for r in (3, 3, 3, 1, 2, 5)]
    futures = [scheduler.submit("a", j) for j in jobs]
    gate.set()
    blocker.result(10)
    for job, future in zip(jobs, futures):
        (out,) = future.result(10)
        np.testing.assert_array_equal(out, np.full((job.rows, 2), 2 * job.rows))
    assert [rows for _, rows in log[1:]] == [6, 6, 5]  # 3+3, 3+1+2, 5: never past 8, never reordered
    scheduler.stop()


def test_instances_run_one_models_requests_side_by_side_on_their_own_copies():
    gate, log = threading.Event(), []
    scheduler = _scheduler(["a"], gate, log, max_queue=10, instances=2)
    replicas = scheduler.repository.get("a").current.replicas
    futures = [scheduler.submit("a", _job("a")) for _ in range(2)]
    deadline = time.monotonic() + 10
    while sum(m.started for m in replicas) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [m.started for m in replicas] == [1, 1]  # both running at once, one on each copy
    gate.set()
    for f in futures:
        f.result(10)
    scheduler.stop()
    assert len(scheduler.executors["cpu"].threads) == 2
    assert scheduler.copies(replicas[0]) == 2
    assert scheduler.copies(_FakeModel("t", log, gate, delegate="edgetpu")) == 1  # one device, one interpreter

    one = _scheduler(["a"], threading.Event(), [], max_queue=10)
    one.submit("a", _job("a"))
    one.submit("a", _job("a"))
    time.sleep(0.2)
    assert one.repository.get("a").current.replicas[0].started == 1  # one executor thread: one at a time
    one.repository.get("a").current.replicas[0].gate.set()
    one.stop()


def test_a_request_runs_on_the_version_it_was_checked_against():
    """A deploy between a request's check and its turn does not change its model; batches never mix versions."""
    gate, log = threading.Event(), []
    scheduler = _scheduler(["a"], gate, log, max_queue=10, max_batch=8, batch_timeout=0.2, dynamic=True)
    entry = scheduler.repository.get("a")
    old = entry.current
    blocker = scheduler.submit("a", _job("a", rows=8))
    time.sleep(0.05)
    first = Job("a", [np.ones((1, 2), np.float32)], 1, None, old)
    scheduler.submit("a", first)
    new_model = _FakeModel("a-v2", log, gate, dynamic=True)
    entry.current = Version("2", (new_model,))
    second = Job("a", [np.ones((1, 2), np.float32)], 1, None, entry.current)
    scheduler.submit("a", second)
    gate.set()
    for job in (blocker, first.future, second.future):
        job.result(10)
    assert (first.version, second.version) == ("1", "2")
    assert log[1:] == [("a", 1), ("a-v2", 1)]  # each on its own version, not stacked together
    scheduler.stop()


def test_a_full_queue_is_refused_before_the_body_is_read(float_tflite):
    """Past capacity, a refusal costs next to nothing: it comes before the body is read or decoded (this body is
    not even JSON, and the answer is still 503)."""
    with Running(ServeConfig(models={"digits": Path(float_tflite)}, max_queue=1, poll=0)) as running:
        executor = running.server.scheduler.executors["cpu"]
        lane = executor.lanes["digits"]
        with executor.cond:  # the executor cannot take the job while the test holds its lock
            lane.jobs.append(_job("digits"))
            status, headers, answer = running.http("POST", "/v2/models/digits/infer", b"{not json" * 1000)
            lane.jobs.clear()
        assert status == 503 and int(headers["retry-after"]) >= 1 and b"--max-queue" in answer, answer
        status, _, answer = running.http("POST", "/v2/models/digits/infer", b"{not json")
        assert status == 400, answer  # with room in the queue, the same body is decoded and refused as bad


def test_instances_answer_as_edgert_run_does(int8_tflite, digits_x):
    """`--instances 2`: two interpreters of the model, both used, every answer what one interpreter gives."""
    config = ServeConfig(models={"digits_int8": Path(int8_tflite)}, instances=2, poll=0)
    with Running(config) as running:
        replicas = running.server.repository.get("digits_int8").current.replicas
        assert len(replicas) == 2 and replicas[0] is not replicas[1]
        used = [0, 0]
        for i, replica in enumerate(replicas):
            def counted(inputs, _run=replica.run, _i=i):
                used[_i] += 1
                time.sleep(0.002)  # long enough that four clients keep both busy
                return _run(inputs)
            replica.run = counted
        expected = edgert.load(int8_tflite).run(digits_x)[0]
        name = replicas[0].inputs[0].name
        answers, errors = [], []

        def client():
            c = running.client()
            try:
                for _ in range(20):
                    answers.append(_infer(c, "digits_int8", {name: digits_x})[0])
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        clients = [threading.Thread(target=client) for _ in range(4)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(60)
        assert not errors and len(answers) == 80
        for got in answers:
            np.testing.assert_array_equal(got, expected)
        assert min(used) > 0 and sum(used) == 80, used


# -- the command -------------------------------------------------------------------------------------------------


def _edgert(*args, **kwargs):
    return subprocess.run([BIN / "edgert", *args], capture_output=True, text=True, timeout=120, **kwargs)


def test_the_command_refuses_bad_options_in_one_line(tmp_path, float_tflite):
    token = tmp_path / "token"
    token.write_text("short\n")
    for args, message in (((), "name models to serve"),
                          ((str(float_tflite), "--priority", "digits=0"), "NAME=WEIGHT"),
                          (("a=" + str(float_tflite), "a=" + str(float_tflite)), "two models are named 'a'"),
                          ((str(tmp_path / "missing.tflite"),), "no such model file"),
                          ((str(float_tflite), "--token-file", str(token)), "16 or more characters"),
                          ((str(float_tflite), "--tls-cert", str(token)), "--tls-cert and --tls-key go together"),
                          ((str(float_tflite), "--delegate", "gpux"), "gpu")):
        done = _edgert("serve", *args)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr


def test_the_port_in_use_is_one_line(float_tflite):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        done = _edgert("serve", str(float_tflite), "--port", str(s.getsockname()[1]))
    assert done.returncode == 1 and "cannot listen on 127.0.0.1:" in done.stderr and "Traceback" not in done.stderr


def _wait_ready(client, process: subprocess.Popen):
    """`client` once the server `process` answers ready (it fails the test if the process ends or 60 s pass)."""
    wait_until(client.is_server_ready, seconds=60, alive=lambda: process.poll() is None,
               failure=lambda: f"the server exited: {process.communicate()[1]}" if process.poll() is not None
               else "the server did not answer ready within 60 s")
    return client


def test_sigterm_drains_requests_in_flight_and_exits_0(float_tflite, digits_x):
    port = _free_port()
    process = subprocess.Popen([BIN / "edgert", "serve", f"digits={float_tflite}", "--port", str(port),
                                "--grace", "5", "--no-access-log"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        client = _wait_ready(th.InferenceServerClient(f"127.0.0.1:{port}"), process)
        name = client.get_model_metadata("digits")["inputs"][0]["name"]
        expected = edgert.load(float_tflite).run(digits_x)[0]
        outcomes, stop = [], threading.Event()

        def hammer():
            c = th.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=10)
            while not stop.is_set():
                try:
                    got = _infer(c, "digits", {name: digits_x})[0]
                    outcomes.append("ok" if np.array_equal(got, expected) else "corrupt")
                except Exception as exc:  # noqa: BLE001 - refused once the server stops listening
                    outcomes.append(f"refused: {type(exc).__name__}")
                    break
            c.close()

        workers = [threading.Thread(target=hammer) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        took = time.monotonic() - started
        stop.set()
        for w in workers:
            w.join(15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert took < 5 + 2 and "stopped" in out and "Traceback" not in err
    assert outcomes.count("ok") > 10 and "corrupt" not in outcomes


def test_a_client_that_disconnects_mid_request_does_not_disturb_the_server(served, digits_x):
    for partial in (b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"inp",
                    b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nContent-Le"):
        with socket.create_connection(("127.0.0.1", served.config.port)) as s:
            s.sendall(partial)
        time.sleep(0.05)
    client = served.client()
    name = client.get_model_metadata("digits")["inputs"][0]["name"]
    assert _infer(client, "digits", {name: digits_x})[0].shape == (5, 10)


def test_tls_with_a_certificate_and_key(tmp_path, float_tflite, digits_x):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                           "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
                           "-out", str(cert)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate here")
    port = _free_port()
    process = subprocess.Popen([BIN / "edgert", "serve", f"digits={float_tflite}", "--port", str(port),
                                "--tls-cert", str(cert), "--tls-key", str(key)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        client = _wait_ready(th.InferenceServerClient(f"127.0.0.1:{port}", ssl=True,
                                                      ssl_options={"ca_certs": str(cert)}), process)
        name = client.get_model_metadata("digits")["inputs"][0]["name"]
        np.testing.assert_array_equal(_infer(client, "digits", {name: digits_x})[0],
                                      edgert.load(float_tflite).run(digits_x)[0])
        client.close()
        with socket.create_connection(("127.0.0.1", port)) as s:  # plain HTTP to a TLS port gets nothing served
            s.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"edgert" not in s.recv(4096)
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
    assert "serving on https://127.0.0.1:" in out


def test_metrics_carry_power_and_energy_per_inference_when_the_board_has_a_sensor(float_tflite, digits_x, tmp_path,
                                                                                   monkeypatch):
    """An INA260 (a fixture sysfs tree read the way the real driver's files are) at 1 W: /metrics shows its power,
    the energy integrated since start and the energy per inference of the last window."""
    from tests.fakesys import FakeSysfs

    monkeypatch.setenv("EDGERT_SYSFS_ROOT", str(tmp_path / "sysroot"))
    FakeSysfs(tmp_path / "sysroot").ina260(power_mw=1000.0)
    started = time.monotonic()
    with Running(ServeConfig(models={"digits": Path(float_tflite)}, poll=0)) as running:
        assert running.server.power is not None and "ina260" in running.server.power_note
        client = running.client()
        name = client.get_model_metadata("digits")["inputs"][0]["name"]
        deadline = time.monotonic() + 1.6
        count = 0
        while time.monotonic() < deadline:
            _infer(client, "digits", {name: digits_x})
            count += 1
        time.sleep(0.3)
        text = running.http("GET", "/metrics")[2].decode()
        elapsed = time.monotonic() - started
    values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("edgert_") and "sensor=" in line}
    assert values["edgert_power_milliwatts"] == pytest.approx(1000.0)
    # 1 W, integrated over the samples: at least the 1.6 s of requests, at most the whole time the server ran
    assert 1000.0 * 1.6 * 0.9 < values["edgert_energy_millijoules_total"] <= 1000.0 * elapsed
    per = values["edgert_energy_per_inference_millijoules"]
    assert 0 < per <= 1000.0 * elapsed / 5  # a window's energy over the rows (5 a request) run in it


def test_the_dockerfile_runs_options_the_command_has():
    """The image is not built here (no container daemon, no base image to pull); what it runs is checked: its
    entry point's options exist, and it installs the wheel the README's install block builds, with [serve]."""
    text = (Path(__file__).parent.parent / "Dockerfile").read_text()
    entry = json.loads(next(line for line in text.splitlines() if line.startswith("ENTRYPOINT"))[len("ENTRYPOINT"):])
    assert entry[:2] == ["edgert", "serve"]
    help_text = subprocess.run([BIN / "edgert", "serve", "--help"], capture_output=True, text=True).stdout
    for option in (word for word in entry if word.startswith("--")):
        assert option in help_text, option
    assert "dist/edgert-*-py3-none-any.whl" in text and "[serve]" in text
