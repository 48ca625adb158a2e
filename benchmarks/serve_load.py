"""`edgert serve` under load from tritonclient, against the in-process ceiling on the same model and threads.

Anchor: a `Model.run` loop in this process on the same model with the same interpreter threads (one loop per
instance, each on its own copy of the model, for `--instances`): its p50 and its throughput. Contender: `edgert
serve` in its own process, driven by 1, 4 and 16 tritonclient HTTP clients, each in its own process as each app on
a board is (binary FP32 tensors, one connection each), on the digits int8 model and MobileNetV2 int8 (224 px).
Each client sends its own seeded input and checks every answer against the in-process output, so a lost or
mixed-up response is counted, not missed. The 16-client run is past capacity: the server runs with --max-queue 1
and answers the excess 503 at once; clients back off exponentially (10 ms doubling, with jitter) and try again.

Setups: the server's defaults (one single-threaded interpreter per model), `--instances 2` (two side by side) and
`--threads 2`, each against its own anchor. The targets judge the defaults:
1 client, digits: p50 <= anchor p50 + 1.0 ms. 4 clients, MobileNetV2: throughput >= 0.85x the ceiling.
16 clients: no lost or corrupted answer, and the accepted requests' p99 <= 3x the 1-client p99.
Run: python benchmarks/serve_load.py [--seconds 5] [--default-only] [--json out.json]; the soak (100,000
requests, the server's RSS at each tenth): python benchmarks/serve_load.py --soak 100000
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from runtime_overhead import MODEL as MOBILENET  # noqa: E402
from runtime_overhead import ensure_model, machine  # noqa: E402
from soak import MODEL as DIGITS  # noqa: E402  (the same digits int8 model the runtime soak builds)
from soak import build_model as build_digits  # noqa: E402

import edgert  # noqa: E402

BIN = Path(sys.executable).parent


def ensure_digits() -> Path:
    if not DIGITS.exists():
        print(f"building {DIGITS} (once) ...", flush=True)
        build_digits(DIGITS)
    return DIGITS


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def anchor(path: Path, threads: int | None, seconds: float, instances: int = 1) -> dict:
    """The in-process ceiling: `instances` Python threads, each looping `Model.run` on its own copy of the model
    (as the server's executor threads do), for `seconds`."""
    models = [edgert.load(path, threads=threads) for _ in range(instances)]
    x = np.random.default_rng(0).uniform(-1, 1, models[0].inputs[0].shape).astype(np.float32)
    times: list[list[float]] = [[] for _ in models]
    go, end = threading.Barrier(instances), [0.0]

    def loop(i: int) -> None:
        model, mine = models[i], times[i]
        for _ in range(20):
            model.run(x)
        go.wait()
        if i == 0:
            end[0] = time.perf_counter() + seconds
        go.wait()
        while time.perf_counter() < end[0]:
            started = time.perf_counter()
            model.run(x)
            mine.append(time.perf_counter() - started)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(instances)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    ms = np.array([t for mine in times for t in mine]) * 1e3
    return {"p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "throughput": len(ms) / seconds}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, models: dict[str, Path], max_queue: int, log: Path, options=()):
        self.port = free_port()
        self.log = log
        self.process = subprocess.Popen(
            [BIN / "edgert", "serve", *(f"{n}={p}" for n, p in models.items()), "--port", str(self.port),
             "--max-queue", str(max_queue), "--poll", "0", *options],
            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        import tritonclient.http as th

        client = th.InferenceServerClient(f"127.0.0.1:{self.port}")
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.is_server_ready():
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"the server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)

    def queue_ms(self, model: str, since: float) -> list[float]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                if row["model"] == model and row["status"] == 200 and row["time"] >= since:
                    out.append(row["queue_ms"])
        return out


def _client(port: int, name: str, spec_name: str, out_name: str, x: np.ndarray, expected: np.ndarray, go, stop,
            results) -> None:
    """One client (its own process, as each app on a board is): infer in a loop until `stop`, checking every
    answer. On a 503 it backs off as well-behaved clients do (exponential with full jitter: up to 10 ms, doubling
    with each refusal in a row, at most 320 ms)."""
    import random

    import tritonclient.http as th

    c = th.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60)
    item = th.InferInput(spec_name, list(x.shape), "FP32")
    item.set_data_from_numpy(x, binary_data=True)
    wanted = [th.InferRequestedOutput(out_name, binary_data=True)]
    r = dict(ok=[], refused=0, corrupt=0, errors=[])
    refusals = 0
    go.wait()
    while not stop.is_set():
        started = time.perf_counter()
        try:
            got = c.infer(name, [item], outputs=wanted).as_numpy(out_name)
        except th.InferenceServerException as exc:
            if exc.status() == "503":
                r["refused"] += 1
                time.sleep(random.uniform(0, 0.01 * 2 ** min(refusals, 5)))
                refusals += 1
                continue
            r["errors"].append(str(exc)[:200])
            continue
        elapsed = time.perf_counter() - started
        refusals = 0
        if np.array_equal(got, expected):
            r["ok"].append(elapsed)
        else:
            r["corrupt"] += 1
    c.close()
    results.put(r)


def load(served: Served, name: str, path: Path, clients: int, seconds: float) -> dict:
    """`clients` client processes on one model for `seconds`; every answer checked against the in-process one."""
    import multiprocessing

    model = edgert.load(path)
    spec, out_name = model.inputs[0], model.outputs[0].name
    inputs = [np.random.default_rng(100 + i).uniform(-1, 1, spec.shape).astype(np.float32) for i in range(clients)]
    expected = [model.run(x)[0] for x in inputs]
    context = multiprocessing.get_context("spawn")
    go, stop, queue = context.Event(), context.Event(), context.Queue()
    workers = [context.Process(target=_client, args=(served.port, name, spec.name, out_name, inputs[i], expected[i],
                                                     go, stop, queue)) for i in range(clients)]
    for w in workers:
        w.start()
    time.sleep(1.0 + 0.3 * clients)  # the clients import tritonclient before they start together
    start_at = time.time()
    go.set()
    time.sleep(seconds)
    stop.set()
    results = [queue.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(60)
    ms = np.array([x for r in results for x in r["ok"]]) * 1e3
    queue_ms = served.queue_ms(name, start_at)
    return {"clients": clients, "answered": len(ms), "throughput": len(ms) / seconds, "p50_ms": pct(ms, 50),
            "p99_ms": pct(ms, 99), "queue_p50_ms": pct(queue_ms, 50),
            "refused_503": sum(r["refused"] for r in results), "corrupt": sum(r["corrupt"] for r in results),
            "errors": [e for r in results for e in r["errors"]][:5]}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak(requests: int) -> dict:
    """`requests` inferences on the digits model from 4 clients; the server's RSS after the first tenth (warm) and
    at the end, and every tenth in between."""
    import tritonclient.http as th

    served = Served({"digits_int8": DIGITS}, 64, Path("build/bench/serve_soak.log"))
    model = edgert.load(DIGITS)
    spec, out_name = model.inputs[0], model.outputs[0].name
    x = np.random.default_rng(0).uniform(0, 1, spec.shape).astype(np.float32)
    expected = model.run(x)[0]
    done, bad, lock, marks = [0], [0], threading.Lock(), []

    def client() -> None:
        c = th.InferenceServerClient(f"127.0.0.1:{served.port}")
        item = th.InferInput(spec.name, list(spec.shape), "FP32")
        item.set_data_from_numpy(x, binary_data=True)
        while True:
            with lock:
                if done[0] >= requests:
                    break
                done[0] += 1
                n = done[0]
            if n % (requests // 10) == 0:
                marks.append((n, rss_mib(served.process.pid)))
            got = c.infer("digits_int8", [item]).as_numpy(out_name)
            if not np.array_equal(got, expected):
                with lock:
                    bad[0] += 1
        c.close()

    started = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - started
    marks.append((requests, rss_mib(served.process.pid)))
    served.stop()
    marks.sort()
    print(f"soak: {requests} requests in {seconds:.0f} s, {bad[0]} wrong; server RSS MiB at each tenth: "
          + ", ".join(f"{m:.1f}" for _, m in marks))
    return {"requests": requests, "seconds": seconds, "wrong": bad[0], "rss_mib": marks}


# (label, edgert serve options, interpreter threads, instances): the default first, which the targets judge.
SETUPS = [("default", [], None, 1), ("--instances 2", ["--instances", "2"], None, 2),
          ("--threads 2", ["--threads", "2"], 2, 1)]
OVERLOAD_QUEUE = 1  # --max-queue of the 16-client run: the queue bound is what holds the accepted requests' p99


def measure(models: dict[str, Path], options: list[str], threads: int | None, instances: int,
            seconds: float) -> dict:
    log = Path("build/bench/serve_load.log")
    out = {}
    for name, path in models.items():
        ceiling = anchor(path, threads, seconds, instances)
        rows = []
        served = Served(models, 64, log, options)
        try:
            for clients in (1, 4):
                rows.append(load(served, name, path, clients, seconds))
        finally:
            served.stop()
        served = Served(models, OVERLOAD_QUEUE, log.with_name("serve_load_overload.log"), options)
        try:
            rows.append(load(served, name, path, 16, seconds))
        finally:
            served.stop()
        out[name] = {"anchor": ceiling, "server": rows}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--json", dest="json_out")
    parser.add_argument("--soak", type=int, default=0, metavar="N", help="only the soak: N requests, RSS kept")
    parser.add_argument("--default-only", action="store_true", help="only the default setup (what the targets judge)")
    args = parser.parse_args()
    ensure_digits()
    if args.soak:
        result = soak(args.soak)
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=2))
        return
    ensure_model()
    models = {"digits_int8": DIGITS, "mobilenet_v2_int8": MOBILENET}
    report = {"machine": machine(), "setups": {}}
    for label, options, threads, instances in SETUPS[:1] if args.default_only else SETUPS:
        print(f"setup {label} ...", flush=True)
        report["setups"][label] = measure(models, options, threads, instances, args.seconds)
    print(f"\n{'setup':<14} {'model':<18} {'clients':>8} {'req/s':>8} {'x ceil':>7} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'queue p50':>9} {'503s':>6} {'corrupt':>7}")
    for label, setup in report["setups"].items():
        for name, data in setup.items():
            a = data["anchor"]
            print(f"{label:<14} {name:<18} {'in-proc':>8} {a['throughput']:>8.1f} {1.0:>7.3f} {a['p50_ms']:>8.3f} "
                  f"{a['p99_ms']:>8.3f} {'-':>9} {'-':>6} {'-':>7}")
            for r in data["server"]:
                print(f"{label:<14} {name:<18} {r['clients']:>8} {r['throughput']:>8.1f} "
                      f"{r['throughput'] / a['throughput']:>7.3f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
                      f"{r['queue_p50_ms']:>9.3f} {r['refused_503']:>6} {r['corrupt']:>7}"
                      + (f"  errors: {r['errors']}" if r["errors"] else ""))
    default = report["setups"]["default"]
    d, m = default["digits_int8"], default["mobilenet_v2_int8"]
    checks = {
        "digits 1 client p50 - anchor p50 (ms, target <= 1.0)": d["server"][0]["p50_ms"] - d["anchor"]["p50_ms"],
        "mobilenet 4 clients throughput / ceiling (target >= 0.85)":
            m["server"][1]["throughput"] / m["anchor"]["throughput"],
        **{f"{n} 16 clients accepted p99 / 1-client p99 (target <= 3)":
           v["server"][2]["p99_ms"] / v["server"][0]["p99_ms"] for n, v in default.items()},
        "lost or corrupted answers, all setups (target 0)": sum(
            r["corrupt"] + len(r["errors"]) for setup in report["setups"].values() for v in setup.values()
            for r in v["server"]),
    }
    report["checks"] = checks
    print()
    for k, v in checks.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
