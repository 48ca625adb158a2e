"""Per-inference overhead of `Model.run` against the bare ai_edge_litert interpreter on an int8 MobileNetV2.

Anchor: `set_tensor` / `invoke` / `get_tensor` on the same model bytes, in the same process, interleaved with the
edgert calls in alternating blocks so that frequency changes and other load hit both alike. Target: p50 ratio
<= 1.05. Run with `make bench` (or `python benchmarks/runtime_overhead.py --runs 400`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import edgert
from edgert.runtime.backend import get_backend

MODEL = Path("build/bench/mobilenet_v2_int8.tflite")


def build_model(path: Path) -> None:
    """MobileNetV2 (weights=None, 224x224x3) converted to full int8 with seeded random calibration data."""
    from edgert.converters import convert
    from edgert.converters._tf import import_tf

    _, keras = import_tf()
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    h5 = path.with_name("mobilenet_v2.h5")
    keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save(h5)
    calibration = path.with_name("calibration.npy")
    np.save(calibration, np.random.default_rng(0).uniform(-1, 1, (16, 224, 224, 3)).astype(np.float32))
    convert(h5, path, int8=True, calibration_data=calibration, force=True)


def ensure_model() -> Path:
    """The benchmark model, built on first use."""
    if not MODEL.exists():
        print(f"building {MODEL} (once) ...", flush=True)
        build_model(MODEL)
    return MODEL


def bare_interpreter(threads: int):
    """The anchor: the backend's own interpreter on the same bytes, and its first input and output indices."""
    raw = get_backend().interpreter_class(model_content=MODEL.read_bytes(), num_threads=threads)
    raw.allocate_tensors()
    return raw, raw.get_input_details()[0]["index"], raw.get_output_details()[0]["index"]


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "backend": str(get_backend()), "edgert": edgert.__version__, "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        info["governor"] = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        info.setdefault("governor", "unknown")
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="timed inferences per contender")
    parser.add_argument("--block", type=int, default=10, help="inferences per interleaved block")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", dest="json_out", help="also write the figures to this JSON file")
    args = parser.parse_args()

    model = edgert.load(ensure_model(), threads=args.threads)
    spec = model.inputs[0]
    raw, in_index, out_index = bare_interpreter(args.threads)

    rng = np.random.default_rng(0)
    x_float = rng.uniform(-1, 1, spec.shape).astype(np.float32)
    x_int8 = np.clip(np.round(x_float / spec.scale[0]) + spec.zero_point[0], -128, 127).astype(np.int8)

    def bare():
        raw.set_tensor(in_index, x_int8)
        raw.invoke()
        return raw.get_tensor(out_index)

    contenders = {
        "bare interpreter (anchor)": bare,
        "Model.run, int8 in, raw out": lambda: model.run(x_int8, raw=True),
        "Model.run, float in/out": lambda: model.run(x_float),
    }
    np.testing.assert_array_equal(bare(), model.run(x_int8, raw=True)[0])  # same model, same answer

    for fn in contenders.values():  # warm-up: first invokes pack weights and fault pages in
        for _ in range(5):
            fn()
    samples = {name: [] for name in contenders}
    for _ in range(max(1, args.runs // args.block)):
        for name, fn in contenders.items():
            for _ in range(args.block):
                started = time.perf_counter_ns()
                fn()
                samples[name].append(time.perf_counter_ns() - started)

    anchor = float(np.percentile(samples["bare interpreter (anchor)"], 50))
    results = {}
    print(f"{MODEL} ({MODEL.stat().st_size / 1e6:.2f} MB, {args.threads} threads), machine: {machine()}")
    print(f"{'contender':<30} {'p50 ms':>8} {'p90 ms':>8} {'ratio p50':>10}")
    for name, values in samples.items():
        p50, p90 = (float(np.percentile(values, q)) for q in (50, 90))
        results[name] = {"p50_ms": p50 / 1e6, "p90_ms": p90 / 1e6, "ratio_p50": p50 / anchor, "runs": len(values)}
        print(f"{name:<30} {p50 / 1e6:>8.3f} {p90 / 1e6:>8.3f} {p50 / anchor:>10.3f}")
    verdict = results["Model.run, int8 in, raw out"]["ratio_p50"] <= 1.05
    print(f"target Model.run / bare <= 1.05 (int8 in): {'met' if verdict else 'MISSED'}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
