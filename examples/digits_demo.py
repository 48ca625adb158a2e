"""`make demo`: train a small CNN on scikit-learn's digits, convert it with `edgert convert`, compare float and int8.

Everything lands in build/demo/: the model (digits.h5, and as a SavedModel in saved_model/), its data
(calibration.npy, sample.npy, train.npz, test.npz, a folder of images and labels.txt) and a small untrained
student.h5, which are the files the README's examples use. The conversions go through the installed `edgert`
command, exactly as a user would type them; accuracy and latency are measured through the edgert runtime.
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
from edgert.runtime.backend import get_backend
from edgert.converters.digits import digits_split, train_digits_cnn

OUT = Path("build/demo")


def sh(*args: str) -> None:
    """Run the venv's `edgert` with `args`, showing the command as a user types it."""
    print("$ " + shlex.join(("edgert", *args)), flush=True)
    subprocess.run([str(Path(sys.executable).parent / "edgert"), *args], check=True)


def p50_latency_ms(model: edgert.Model, x: np.ndarray, runs: int = 300) -> float:
    for _ in range(20):  # warm-up
        model.run(x)
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        model.run(x)
        samples.append(time.perf_counter_ns() - started)
    return float(np.percentile(samples, 50)) / 1e6


def write_examples_data(model, split) -> None:
    """What the README's examples read, beside the demo's own files."""
    import contextlib
    import io
    import shutil

    from edgert.converters._tf import import_tf
    from edgert.runtime.native import native_log_captured

    tf, keras = import_tf()
    np.savez(OUT / "train.npz", x=split.x_train, y=split.y_train)
    np.savez(OUT / "test.npz", x=split.x_test, y=split.y_test)
    (OUT / "labels.txt").write_text("".join(f"{digit}\n" for digit in range(10)))
    images = OUT / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir()
    for i, image in enumerate(split.x_train[:32]):  # pixels 0..255 in PNG; the model takes 0..1
        (images / f"{i:02d}.png").write_bytes(tf.io.encode_png((image * 255).astype(np.uint8)).numpy())
    shutil.rmtree(OUT / "saved_model", ignore_errors=True)
    with native_log_captured(), contextlib.redirect_stdout(io.StringIO()):  # export() prints its signatures
        model.export(str(OUT / "saved_model"))
    keras.utils.set_random_seed(1)
    student = keras.Sequential([keras.Input(shape=(8, 8, 1), name="image"), keras.layers.Conv2D(4, 3, activation="relu"),
                                keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")], name="student")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student.save(OUT / "student.h5")
    print(f"wrote {OUT}/: train.npz, test.npz, labels.txt, images/, saved_model/, student.h5 (the README's examples)")


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
    write_examples_data(model, split)

    # --force: the demo owns build/demo and rebuilds it on every run.
    sh("convert", str(h5), "--force")
    sh("convert", str(h5), "--int8", "--calibration-data", str(calibration), "--force")

    keras_accuracy = float((model.predict(split.x_test, verbose=0).argmax(1) == split.y_test).mean())
    rows = [("Keras (.h5)", keras_accuracy, h5.stat().st_size, None)]
    for label, path in (("TFLite float32", OUT / "digits.tflite"), ("TFLite int8", OUT / "digits_int8.tflite")):
        m = edgert.load(path)
        accuracy = float((m.run(split.x_test)[0].argmax(1) == split.y_test).mean())
        rows.append((label, accuracy, path.stat().st_size, p50_latency_ms(m, split.x_test[:1])))

    print(f"\nheld-out accuracy, size and batch-1 latency through edgert ({get_backend()}):")
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
