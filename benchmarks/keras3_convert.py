"""Wall time of `edgert convert --int8` on a Keras 3 `.keras` MobileNetV2 against Keras 3's own LiteRT exporter.

Anchor: a script that loads the same `.keras` file with Keras 3 (TensorFlow backend) and runs
`keras.src.export.LiteRTExporter` with the same settings edgert uses: full int8 (`Optimize.DEFAULT`, int8 builtins
only, int8 input and output) on the same calibration samples. Both run as fresh processes (imports included),
alternating. edgert also checks the result against the Keras model (8 samples through the edgert runtime), which
the exporter does not. Target: median ratio <= 1.10. Run: `python benchmarks/keras3_convert.py [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

WORK = Path("build/bench")
EXPORTER = """
import os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import numpy as np, tensorflow as tf, keras
from keras.src.export import LiteRTExporter
model = keras.saving.load_model(sys.argv[1], compile=False)
calibration = np.load(sys.argv[2])
def representative_dataset():
    for i in range(len(calibration)):
        yield [calibration[i:i + 1]]
LiteRTExporter(model, optimizations=[tf.lite.Optimize.DEFAULT], representative_dataset=representative_dataset,
               target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
               inference_input_type=tf.int8, inference_output_type=tf.int8).export(sys.argv[3])
"""
BUILD = """
import os, sys
os.environ["KERAS_BACKEND"] = "tensorflow"
import keras
keras.utils.set_random_seed(0)
keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save(sys.argv[1])
"""


def prepare(samples: int) -> tuple[Path, Path]:
    model, calibration = WORK / "mobilenet_v2_keras3.keras", WORK / f"calibration_{samples}.npy"
    WORK.mkdir(parents=True, exist_ok=True)
    if not model.exists():  # saved as a Keras 3 user would, in a process of its own
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        subprocess.run([sys.executable, "-c", BUILD, str(model)], check=True, capture_output=True, env=env)
    if not calibration.exists():
        rng = np.random.default_rng(0)
        np.save(calibration, rng.uniform(-1, 1, (samples, 224, 224, 3)).astype(np.float32))
    return model, calibration


def timed(cmd: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=32, help="calibration samples (both sides use all)")
    args = parser.parse_args()
    model, calibration = prepare(args.samples)
    edgert_cmd = str(Path(sys.executable).parent / "edgert")
    anchor_name = "Keras 3 LiteRTExporter (anchor)"
    contenders = {
        anchor_name: [sys.executable, "-c", EXPORTER, str(model), str(calibration),
                      str(WORK / "keras_exporter_int8.tflite")],
        "edgert convert --int8": [edgert_cmd, "convert", str(model), "--int8", "--calibration-data", str(calibration),
                                  "--calibration-samples", str(args.samples), "-o",
                                  str(WORK / "edgert_keras3_int8.tflite"), "--force"],
    }
    times = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, cmd in contenders.items():
            times[name].append(timed(cmd))
    anchor = statistics.median(times[anchor_name])
    print(f"Keras 3 MobileNetV2 (.keras, weights=None, 224 px) -> full int8, {args.samples} calibration samples, "
          f"{args.rounds} rounds")
    print(f"{'contender':<34} {'median s':>9} {'runs':>24} {'ratio':>7}")
    for name, values in times.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:<34} {statistics.median(values):>9.2f} {runs:>24} {statistics.median(values) / anchor:>7.3f}")
    ratio = statistics.median(times["edgert convert --int8"]) / anchor
    print(f"target edgert / Keras exporter <= 1.10: {'met' if ratio <= 1.10 else 'MISSED'} ({ratio:.3f})")


if __name__ == "__main__":
    main()
