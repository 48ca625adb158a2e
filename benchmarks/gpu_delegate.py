"""The `gpu` delegate against the XNNPACK CPU anchor: latency, agreement of outputs, and the delegation reports.

Each model is loaded twice through `edgert.load` (delegate `xnnpack`, then `gpu` with `--strict` off so a
fallback is visible in the report rather than an error), run on the same seeded input, warmed up, then timed in
alternating blocks so both see the same machine state. Prints one JSON record per model and the p50 ratio
gpu/xnnpack (below 1 means the GPU is faster). Needs a GPU with a Vulkan driver (or Metal on macOS); without one
the gpu run shows the fallback and its reason. `python benchmarks/gpu_delegate.py MODEL.tflite [...] --runs 200`
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

import edgert
from edgert.runtime.backend import get_backend


def _input(model: edgert.Model) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for spec in model.inputs:
        if spec.quantized or spec.dtype.startswith("float"):
            out.append(rng.uniform(-1, 1, spec.shape).astype(np.float32))
        else:
            out.append(rng.integers(0, 10, spec.shape).astype(spec.dtype))
    return out


def _time(model: edgert.Model, inputs, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        model.run(inputs)
        samples.append((time.perf_counter_ns() - started) / 1e6)
    return samples


def bench(path: str, runs: int, warmup: int, threads: int, blocks: int = 4) -> dict:
    started = time.perf_counter()
    cpu = edgert.load(path, delegate="xnnpack", threads=threads)
    cpu_init_ms = (time.perf_counter() - started) * 1e3
    started = time.perf_counter()
    gpu = edgert.load(path, delegate="gpu", threads=threads)
    gpu_init_ms = (time.perf_counter() - started) * 1e3
    inputs = _input(cpu)
    ref, got = cpu.run(inputs), gpu.run(inputs)
    for _ in range(warmup):
        cpu.run(inputs)
        gpu.run(inputs)
    times: dict[str, list[float]] = {"xnnpack": [], "gpu": []}
    for _ in range(blocks):  # alternate so drift hits both alike
        times["xnnpack"] += _time(cpu, inputs, runs // blocks)
        times["gpu"] += _time(gpu, inputs, runs // blocks)
    stats = {k: {"p50_ms": float(np.percentile(v, 50)), "p90_ms": float(np.percentile(v, 90)),
                 "mean_ms": float(np.mean(v)), "runs": len(v)} for k, v in times.items()}
    scale = max(float(np.abs(r).max()) for r in ref) or 1.0
    return {
        "model": path, "threads": threads,
        "init_ms": {"xnnpack": round(cpu_init_ms, 1), "gpu": round(gpu_init_ms, 1)},
        "latency": stats,
        "p50_ratio_gpu_over_xnnpack": stats["gpu"]["p50_ms"] / stats["xnnpack"]["p50_ms"],
        "max_abs_diff_relative": max(float(np.abs(a - b).max()) for a, b in zip(ref, got)) / scale,
        "top1_agree": all(int(np.argmax(a)) == int(np.argmax(b)) for a, b in zip(ref, got)),
        "delegation": {"xnnpack": cpu.delegation.to_dict(), "gpu": gpu.delegation.to_dict()},
        "report_lines": {"xnnpack": cpu.delegation.describe(), "gpu": gpu.delegation.describe()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    print(json.dumps({"machine": platform.processor() or platform.machine(), "edgert": edgert.__version__,
                      "backend": str(get_backend())}))
    for path in args.models:
        record = bench(path, args.runs, args.warmup, args.threads)
        print(json.dumps(record))
        print(f"{path}: gpu p50 {record['latency']['gpu']['p50_ms']:.3f} ms vs xnnpack "
              f"{record['latency']['xnnpack']['p50_ms']:.3f} ms -> ratio {record['p50_ratio_gpu_over_xnnpack']:.3f}; "
              f"top-1 agree {record['top1_agree']}, max |diff|/max|ref| {record['max_abs_diff_relative']:.2e}")
        print(f"  gpu:     {record['report_lines']['gpu']}")
        print(f"  xnnpack: {record['report_lines']['xnnpack']}")


if __name__ == "__main__":
    main()
