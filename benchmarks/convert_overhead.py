"""Wall time of `edgert convert --int8` against the bare TFLiteConverter calls it wraps, on MobileNetV2.

Anchor: a script that loads the same .h5 with tf_keras, sets the same converter options and representative data,
converts and writes the file. Both run as fresh processes (TensorFlow import included), alternating, with
seeded calibration data. Target: median ratio <= 1.10. Run: `python benchmarks/convert_overhead.py [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORK = Path("build/bench")
BARE = """
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np, tensorflow as tf, tf_keras
model = tf_keras.models.load_model(sys.argv[1], compile=False)
calibration = np.load(sys.argv[2])
def representative_dataset():
    for i in range(len(calibration)):
        yield [calibration[i:i + 1]]
converter = tf.lite.TFLiteConverter.from_keras_model(model)
converter.optimizations = [tf.lite.Optimize.DEFAULT]
converter.representative_dataset = representative_dataset
converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
converter.inference_input_type = tf.int8
converter.inference_output_type = tf.int8
open(sys.argv[3], "wb").write(converter.convert())
"""


def prepare(samples: int) -> tuple[Path, Path]:
    h5, calibration = WORK / "mobilenet_v2.h5", WORK / f"calibration_{samples}.npy"
    WORK.mkdir(parents=True, exist_ok=True)
    if not h5.exists():
        from edgert.converters._tf import import_tf

        _, keras = import_tf()
        keras.utils.set_random_seed(0)
        keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save(h5)
    if not calibration.exists():
        rng = np.random.default_rng(0)
        np.save(calibration, rng.uniform(-1, 1, (samples, 224, 224, 3)).astype(np.float32))
    return h5, calibration


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=32, help="calibration samples (both sides use all)")
    args = parser.parse_args()
    h5, calibration = prepare(args.samples)
    edgert_cmd = str(Path(sys.executable).parent / "edgert")
    contenders = {
        "bare TFLiteConverter (anchor)": [sys.executable, "-c", BARE, str(h5), str(calibration),
                                          str(WORK / "bare_int8.tflite")],
        "edgert convert --int8": [edgert_cmd, "convert", str(h5), "--int8", "--calibration-data", str(calibration),
                                  "--calibration-samples", str(args.samples), "-o",
                                  str(WORK / "edgert_int8.tflite"), "--force"],
    }
    times = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, cmd in contenders.items():
            times[name].append(timed(cmd))
    anchor = statistics.median(times["bare TFLiteConverter (anchor)"])
    print(f"MobileNetV2 (weights=None) -> full int8, {args.samples} calibration samples, {args.rounds} rounds")
    print(f"{'contender':<32} {'median s':>9} {'runs':>24} {'ratio':>7}")
    for name, values in times.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:<32} {statistics.median(values):>9.2f} {runs:>24} {statistics.median(values) / anchor:>7.3f}")
    ratio = statistics.median(times["edgert convert --int8"]) / anchor
    print(f"target edgert / bare <= 1.10: {'met' if ratio <= 1.10 else 'MISSED'} ({ratio:.3f})")


if __name__ == "__main__":
    main()
