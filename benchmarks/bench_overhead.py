"""Per-inference overhead of `edgert bench` (with power sampled at 100 Hz) against a bare invoke loop.

Anchor: `set_tensor` / `invoke` / `get_tensor` timed per call on the interpreter that the `Model` holds (int8
MobileNetV2), in the same process. Contenders: `edgert.bench` with an INA260 read at 100 Hz (a fixture sysfs
tree under `EDGERT_SYSFS_ROOT`, since this machine has no power monitor: the sampling thread does the same file
reads it would on a board) and with power off. Rounds alternate so that frequency changes and other load hit all
alike. Target: p50 ratio <= 1.03 with power sampling. Run with `make bench` (or `python benchmarks/bench_overhead.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from runtime_overhead import MODEL, ensure_model, machine  # noqa: E402

import edgert  # noqa: E402
from edgert.measure.bench import bench, random_inputs  # noqa: E402


def fixture_ina260(root: Path) -> None:
    base = root / "sys/class/hwmon/hwmon0"
    base.mkdir(parents=True)
    for name, value in {"name": "ina260", "in1_input": 5000, "curr1_input": 600, "power1_input": 3000000,
                        "update_interval": 1}.items():
        (base / name).write_text(f"{value}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=25, help="timed inferences per contender per round")
    parser.add_argument("--rounds", type=int, default=40, help="rounds, the contenders' order rotating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")
    args = parser.parse_args()

    ensure_model()
    root = Path(tempfile.mkdtemp(prefix="edgert-sysfs-"))
    fixture_ina260(root)
    os.environ["EDGERT_SYSFS_ROOT"] = str(root)

    model = edgert.load(MODEL, threads=args.threads)
    (x,) = random_inputs(model.inputs, seed=0)
    # The anchor drives the very interpreter the Model holds: two interpreters alternating would each find the
    # other's weights in the caches, a difference that has nothing to do with edgert.
    raw = model._interpreter
    in_index, out_index = model.inputs[0].index, model.outputs[0].index

    def bare(n: int) -> list[float]:
        out = []
        for _ in range(n):
            started = time.perf_counter_ns()
            raw.set_tensor(in_index, x)
            raw.invoke()
            raw.get_tensor(out_index)
            out.append((time.perf_counter_ns() - started) / 1e6)
        return out

    anchor = "bare invoke loop (anchor)"
    sampled = "edgert bench, power at 100 Hz"
    off = "edgert bench, power off"
    samples: dict[str, list[float]] = {anchor: [], sampled: [], off: []}
    hz = []

    def with_power() -> list[float]:
        result = bench(model, runs=args.runs, warmup=2, inputs=x, power="ina2xx", power_hz=100, idle_s=0)
        assert result.energy is not None, result.power_note
        hz.append(result.power.sample_hz)
        return result.latency.samples_ms.tolist()

    def power_off() -> list[float]:
        return bench(model, runs=args.runs, warmup=2, inputs=x, power="none").latency.samples_ms.tolist()

    contenders = {anchor: lambda: bare(args.runs), sampled: with_power, off: power_off}
    bare(10)
    names = list(contenders)
    for r in range(args.rounds):  # short rounds in rotating order: drifts in the machine's speed hit all alike
        for name in names[r % 3:] + names[:r % 3]:
            samples[name] += contenders[name]()

    per_round = {name: np.percentile(np.reshape(v, (args.rounds, args.runs)), 50, axis=1)
                 for name, v in samples.items()}
    p50_anchor = float(np.percentile(samples[anchor], 50))
    print(f"{MODEL} ({args.threads} threads, {args.rounds} rounds x {args.runs} runs), machine: {machine()}")
    print(f"power sampled at {np.mean(hz):.1f} Hz on average (fixture INA260 under {root})")
    print(f"{'contender':<32} {'p50 ms':>8} {'p90 ms':>8} {'ratio p50':>10} {'median of round ratios':>23}")
    results = {}
    for name, values in samples.items():
        p50, p90 = (float(np.percentile(values, q)) for q in (50, 90))
        paired = float(np.median(per_round[name] / per_round[anchor]))
        results[name] = {"p50_ms": p50, "p90_ms": p90, "ratio_p50": p50 / p50_anchor, "runs": len(values),
                         "median_round_ratio_p50": paired}
        print(f"{name:<32} {p50:>8.3f} {p90:>8.3f} {p50 / p50_anchor:>10.3f} {paired:>23.3f}")
    met = results[sampled]["ratio_p50"] <= 1.03
    print(f"target edgert bench (100 Hz power) / bare <= 1.03: {'met' if met else 'MISSED'}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"machine": machine(), "sample_hz": float(np.mean(hz)),
                                                   "results": results}, indent=2))


if __name__ == "__main__":
    main()
