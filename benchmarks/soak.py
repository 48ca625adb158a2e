"""Soak: 200,000 inferences of an int8 model through `Model.run`, then as many through `edgert.bench`.

For each, resident memory at the end must be within 5% (or 5 MB, whichever is larger) of the figure after the first
1,000 inferences, and the outputs must not change. For `edgert.bench` the end figure is taken once its result (which
holds every run's latency and start time, 16 bytes a run) is released; the figure with it alive is printed too. The model is the digits CNN in full int8 (trained and converted
once into build/bench/). Run with `python benchmarks/soak.py [--runs N]`; not in `make bench` (it takes minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from runtime_overhead import machine  # noqa: E402

import edgert  # noqa: E402

MODEL = Path("build/bench/digits_int8.tflite")


def build_model(path: Path) -> None:
    from edgert.converters import convert
    from edgert.converters.digits import digits_split, train_digits_cnn

    path.parent.mkdir(parents=True, exist_ok=True)
    split = digits_split()
    h5 = path.with_name("digits.h5")
    train_digits_cnn(split).save(h5)
    calibration = path.with_name("digits_calibration.npy")
    np.save(calibration, split.x_train[:300])
    convert(h5, path, int8=True, calibration_data=calibration, force=True)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def verdict(early: float, late: float) -> tuple[bool, float]:
    allowed = max(0.05 * early, 5.0)
    return abs(late - early) <= allowed, allowed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if not MODEL.exists():
        print(f"building {MODEL} (once) ...", flush=True)
        build_model(MODEL)

    model = edgert.load(MODEL, threads=1)
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(0, 1, model.inputs[0].shape).astype(np.float32) for _ in range(16)]
    reference = [model.run(x, raw=True)[0].copy() for x in inputs]
    figures = {}

    started = time.perf_counter()
    changed = 0
    early = None
    for i in range(args.runs):
        k = i % len(inputs)
        out = model.run(inputs[k], raw=True)[0]
        if i % 997 == 0 and not np.array_equal(out, reference[k]):
            changed += 1
        if i == 999:
            early = rss_mb()
    late = rss_mb()
    changed += sum(not np.array_equal(model.run(x, raw=True)[0], r) for x, r in zip(inputs, reference))
    ok, allowed = verdict(early, late)
    figures["Model.run"] = {"runs": args.runs, "seconds": round(time.perf_counter() - started, 1),
                            "rss_after_1000_mb": round(early, 2), "rss_end_mb": round(late, 2),
                            "allowed_mb": round(allowed, 2), "outputs_changed": int(changed), "ok": ok and not changed}

    started = time.perf_counter()
    edgert.bench(model, runs=1000, warmup=0, inputs=inputs[0], power="none", thermal=False)
    early = rss_mb()
    result = edgert.bench(model, runs=args.runs, warmup=0, inputs=inputs[0], power="none", thermal=False)
    # The result keeps every run's latency and start time on purpose (16 bytes a run): that is data, not a leak,
    # so memory is compared once the result is let go, and its own size is reported beside.
    with_result = rss_mb()
    held_mb = (result.latency.samples_ms.nbytes + result.run_starts_ns.nbytes) / 2**20
    count, p50 = result.latency.count, result.latency.p50_ms
    del result
    late = rss_mb()
    changed = sum(not np.array_equal(model.run(x, raw=True)[0], r) for x, r in zip(inputs, reference))
    ok, allowed = verdict(early, late)
    figures["edgert.bench"] = {"runs": count, "seconds": round(time.perf_counter() - started, 1),
                               "p50_ms": round(p50, 4), "rss_after_1000_mb": round(early, 2),
                               "rss_end_mb": round(late, 2), "rss_with_result_mb": round(with_result, 2),
                               "result_samples_mb": round(held_mb, 2), "allowed_mb": round(allowed, 2),
                               "outputs_changed": int(changed), "ok": ok and not changed}

    print(f"{MODEL}, machine: {machine()}")
    print(f"{'path':<14} {'runs':>8} {'s':>6} {'RSS@1000 MB':>12} {'RSS end MB':>11} {'allowed':>8} {'changed':>8}  verdict")
    for name, f in figures.items():
        print(f"{name:<14} {f['runs']:>8} {f['seconds']:>6} {f['rss_after_1000_mb']:>12.2f} {f['rss_end_mb']:>11.2f} "
              f"{f['allowed_mb']:>8.2f} {f['outputs_changed']:>8}  {'ok' if f['ok'] else 'FAILED'}")
    bench_figures = figures["edgert.bench"]
    print(f"(edgert.bench: {bench_figures['rss_with_result_mb']:.2f} MB while its result, holding "
          f"{bench_figures['result_samples_mb']:.2f} MB of per-run samples, was alive)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"machine": machine(), "results": figures}, indent=2))
    if not all(f["ok"] for f in figures.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
