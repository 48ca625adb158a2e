"""`make demo`: train a small CNN on scikit-learn's digits, convert it with `edgert convert`, compare float and int8.

Everything lands in build/demo/. The conversions go through the installed `edgert` command, exactly as a user
would type them; accuracy and latency are measured through the edgert runtime.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import edgert
from edgert.converters.digits import digits_split, train_digits_cnn

OUT = Path("build/demo")


def sh(*args: str) -> None:
    print("$ " + shlex.join(args), flush=True)
    subprocess.run(args, check=True)


def p50_latency_ms(model: edgert.Model, x: np.ndarray, runs: int = 300) -> float:
    for _ in range(20):  # warm-up
        model.run(x)
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        model.run(x)
        samples.append(time.perf_counter_ns() - started)
    return float(np.percentile(samples, 50)) / 1e6


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    split = digits_split()
    print(f"digits: {len(split.x_train)} training and {len(split.x_test)} held-out 8x8 images", flush=True)
    model = train_digits_cnn(split)
    h5 = OUT / "digits.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf_keras calls .h5 "legacy"; it is the format edgert convert is shown on
        model.save(h5)
    calibration = OUT / "calibration.npy"
    np.save(calibration, split.x_train)
    np.save(OUT / "sample.npy", split.x_test[:4])

    edgert_cmd = str(Path(sys.executable).parent / "edgert")
    # --force: the demo owns build/demo and rebuilds it on every run.
    sh(edgert_cmd, "convert", str(h5), "--force")
    sh(edgert_cmd, "convert", str(h5), "--int8", "--calibration-data", str(calibration), "--force")

    keras_accuracy = float((model.predict(split.x_test, verbose=0).argmax(1) == split.y_test).mean())
    rows = [("Keras (.h5)", keras_accuracy, h5.stat().st_size, None)]
    for label, path in (("TFLite float32", OUT / "digits.tflite"), ("TFLite int8", OUT / "digits_int8.tflite")):
        m = edgert.load(path)
        accuracy = float((m.run(split.x_test)[0].argmax(1) == split.y_test).mean())
        rows.append((label, accuracy, path.stat().st_size, p50_latency_ms(m, split.x_test[:1])))

    print(f"\nheld-out accuracy, size and batch-1 latency through edgert ({edgert.backend.get_backend()}):")
    print(f"  {'model':<16} {'accuracy':>9} {'size':>11} {'p50 latency':>12}")
    for label, accuracy, size, latency in rows:
        lat = f"{latency * 1000:.1f} us" if latency is not None else "-"
        print(f"  {label:<16} {accuracy:>9.2%} {size / 1024:>7.1f} KiB {lat:>12}")
    change = (rows[2][1] - rows[1][1]) * 100
    print(f"\nint8 vs float32: {rows[1][2] / rows[2][2]:.1f}x smaller, accuracy {change:+.2f} points")
    print(f"try: edgert inspect {OUT / 'digits_int8.tflite'}")
    print(f"     edgert run {OUT / 'digits_int8.tflite'} --input {OUT / 'sample.npy'}")


if __name__ == "__main__":
    main()
