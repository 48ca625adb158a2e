"""Structured (channel) pruning against the unpruned model: latency with `edgert bench --threads 1`, MACs, size.

Anchor: MobileNetV2 (224 px, weights=None) converted to float32 and to full int8, benchmarked in the same run.
Contenders: the same model through `--prune-channels 0.25/0.5` (no fine-tuning: latency does not depend on the
weights' values), float32 and int8. Rows alternate in rounds so that frequency changes and other load hit all
alike; each row runs in a fresh process (`isolate=True`). Unstructured `--prune 0.75` is the row the issue started
from: its zeros are stored dense, so it is no faster.
Run: python benchmarks/channel_prune.py [--rounds 3] [--seconds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from runtime_overhead import machine  # noqa: E402

import edgert  # noqa: E402

HERE = Path("build/bench/channels")


def build() -> dict[str, Path]:
    from edgert.converters import convert
    from edgert.converters._tf import import_tf
    from edgert.converters.recipe import ChannelPruneConfig, ConvertRecipe, PruneConfig, Quantization

    HERE.mkdir(parents=True, exist_ok=True)
    h5 = HERE / "mobilenet_v2_224.h5"
    calibration = HERE / "calibration.npy"
    if not h5.exists():
        _, keras = import_tf()
        keras.utils.set_random_seed(0)
        keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save(h5)
        np.save(calibration, np.random.default_rng(0).uniform(-1, 1, (16, 224, 224, 3)).astype(np.float32))
    rows = {
        "float32": ConvertRecipe(),
        "channels25 float32": ConvertRecipe(prune_channels=ChannelPruneConfig(0.25)),
        "channels50 float32": ConvertRecipe(prune_channels=ChannelPruneConfig(0.5)),
        "int8": ConvertRecipe(Quantization.INT8),
        "channels25 int8": ConvertRecipe(Quantization.INT8, prune_channels=ChannelPruneConfig(0.25)),
        "channels50 int8": ConvertRecipe(Quantization.INT8, prune_channels=ChannelPruneConfig(0.5)),
    }
    paths = {}
    for label, recipe in rows.items():
        out = HERE / (label.replace(" ", "_") + ".tflite")
        if not out.exists():
            print(f"converting {label} ...", flush=True)
            convert(h5, out, recipe=recipe, calibration_data=calibration if recipe.quantization.value == "int8"
                    else None, force=True)
        paths[label] = out
    prune75 = HERE / "prune75_float32.tflite"
    if not prune75.exists():
        print("converting prune75 float32 (one-shot, constant schedule) ...", flush=True)
        np.savez(HERE / "train.npz", x=np.load(calibration), y=np.zeros(16, np.int64))
        convert(h5, prune75, recipe=ConvertRecipe(prune=PruneConfig(0.75, "constant")),
                train_data=HERE / "train.npz", force=True)
    paths["prune75 float32"] = prune75
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="per row per round")
    parser.add_argument("--json", dest="json_out")
    args = parser.parse_args()
    paths = build()
    p50: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(args.rounds):
        for label, path in paths.items():
            result = edgert.bench(str(path), threads=1, duration_s=args.seconds, power=None, isolate=True)
            p50[label].append(result.latency.p50_ms)
    report = {"machine": machine(), "rows": {}}
    print(f"\nMobileNetV2 224, edgert bench --threads 1, median of {args.rounds} rounds x {args.seconds:g} s")
    print(f"{'model':<20} {'p50 ms':>8} {'vs float32':>10} {'vs int8':>8} {'size MiB':>9}")
    base_f, base_i = float(np.median(p50["float32"])), float(np.median(p50["int8"]))
    for label, path in paths.items():
        value = float(np.median(p50[label]))
        size = path.stat().st_size / 2**20
        report["rows"][label] = {"p50_ms": value, "vs_float32": value / base_f, "vs_int8": value / base_i,
                                 "size_mib": size, "rounds": p50[label]}
        print(f"{label:<20} {value:>8.2f} {value / base_f:>10.3f} {value / base_i:>8.3f} {size:>9.2f}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
