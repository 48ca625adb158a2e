"""`make zoo`: every architecture of the zoo, from every saved form, to float32 and full int8, through `edgert convert`
and through the bare TFLiteConverter on the same loaded model, side by side.

For each (architecture, format, mode): whether edgert converted it, its agreement with what the Keras model computed
before it was saved (max relative difference for float32, worst cosine for int8, on 8 preprocessed images), its
wall time, and the bare converter's outcome and time in the same process (`from_keras_model` on the model as its own
Keras loads it; a file its Keras cannot load fails there). Models come from tests/zoo.py (weights=None, logits,
random batch-norm statistics). `--stages` also runs prune 50% + int8 and QAT on Keras 3 MobileNetV2 and
EfficientNetB0 through the tf_keras rebuild. Run: `python benchmarks/zoo.py [--arch A ...] [--stages]`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import zoo  # noqa: E402

WORK = Path("build/zoo")


def bare_convert(path: Path, fmt: str, mode: str, calibration: np.ndarray) -> tuple[str, float]:
    """What a user's own script does: load with the Keras that wrote the file, then TFLiteConverter."""
    from edgert.converters._tf import import_keras3, import_tf
    from edgert.runtime.native import native_log_captured

    tf, tf_keras = import_tf()
    started = time.perf_counter()
    try:
        with native_log_captured(), contextlib.redirect_stdout(io.StringIO()):  # it prints its signatures
            if fmt.startswith("tf_keras"):
                from tf_keras.src.applications.convnext import LayerScale

                model = tf_keras.models.load_model(str(path), compile=False, custom_objects={"LayerScale": LayerScale})
            else:
                model = import_keras3().saving.load_model(str(path), compile=False)
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            if mode == "int8":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = converter.inference_output_type = tf.int8
            converter.convert()
        return "ok", time.perf_counter() - started
    except Exception as exc:  # the point is to see where the bare path fails
        return f"fails: {type(exc).__name__}: {' '.join(str(exc).split())[:70]}", time.perf_counter() - started


def edgert_convert(path: Path, mode: str, calibration_file: Path, out: Path) -> tuple[str, str, float]:
    from edgert.converters import convert

    started = time.perf_counter()
    try:
        if mode == "int8":
            result = convert(path, out, int8=True, calibration_data=calibration_file, force=True)
        else:
            result = convert(path, out, force=True)
    except Exception as exc:
        return f"fails: {' '.join(str(exc).split())[:90]}", "", time.perf_counter() - started
    return "ok" + (" (warning)" if result.warnings else ""), result.output_path, time.perf_counter() - started


def agreement(arch: str, path: Path, tflite: str, mode: str) -> str:
    import edgert

    expected = zoo.expected_outputs(path).astype(np.float64)
    got = edgert.load(tflite).run(zoo.images(arch, zoo.SAMPLES))[0].astype(np.float64)
    if mode == "float32":
        return f"rel {np.max(np.abs(got - expected)) / np.max(np.abs(expected)):.1e}"
    cos = np.sum(got * expected, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    return f"cos {cos.min():.4f}"


def stages(archs: list[str]) -> None:
    from edgert.converters import ConvertRecipe, PruneConfig, Quantization, TrainConfig, convert

    print("\nstages on Keras 3 models through the tf_keras rebuild (32 synthetic samples, 1 epoch)")
    for arch in archs:
        path = zoo.build(arch, "keras3.keras", WORK)
        train = WORK / f"{arch}_train.npz"
        np.savez(train, x=zoo.images(arch, 32, seed=2), y=np.random.default_rng(3).integers(0, 1000, 32))
        for recipe in (ConvertRecipe(Quantization.INT8, prune=PruneConfig(0.5), train=TrainConfig(1, 16)),
                       ConvertRecipe(Quantization.INT8, qat=True, train=TrainConfig(1, 16))):
            started = time.perf_counter()
            try:
                result = convert(path, WORK / f"{arch}_{recipe.name}.tflite", recipe=recipe, train_data=train,
                                 force=True)
            except Exception as exc:
                print(f"  {arch:<16} {recipe.name:<18} fails: {' '.join(str(exc).split())[:160]}")
                continue
            rebuild = next(s for s in result.stages if s.stage == "rebuild")
            print(f"  {arch:<16} {recipe.name:<18} {time.perf_counter() - started:6.1f} s  {rebuild.notes[0]}")
            print(f"  {'':<16} {'':<18} {'':>8}  .tflite vs {result.agreement.reference}: "
                  f"{result.agreement.describe().split(' vs ')[0]}")
            for note in result.notes:
                if note.startswith(("tfmot", "QAT left")):
                    print(f"  {'':<16} {'':<18} {'':>8}  {note[:150]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", choices=list(zoo.ARCHITECTURES), help="repeatable; default all")
    parser.add_argument("--format", action="append", choices=zoo.FORMATS, dest="formats")
    parser.add_argument("--stages", action="store_true", help="also prune + int8 and QAT on Keras 3 models")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    archs = args.arch or list(zoo.ARCHITECTURES)
    print(f"{'architecture':<17} {'format':<13} {'mode':<8} {'edgert':<11} {'agreement':<12} {'edgert s':>9} "
          f"{'bare':<11} {'bare s':>7} {'ratio':>6}")
    failures = 0
    for arch in archs:
        for fmt in args.formats or zoo.FORMATS:
            if zoo.skip_reason(arch, fmt):
                print(f"{arch:<17} {fmt:<13} {'-':<8} not made: {zoo.skip_reason(arch, fmt)}")
                continue
            try:
                path = zoo.build(arch, fmt, WORK)
            except Exception:
                print(f"{arch:<17} {fmt:<13} could not be built:\n{traceback.format_exc(limit=2)}")
                failures += 1
                continue
            calibration = zoo.images(arch, 16, seed=1)
            calibration_file = WORK / f"{arch}_calibration.npy"
            np.save(calibration_file, calibration)
            for mode in ("float32", "int8"):
                out = WORK / f"{arch}.{fmt}.{mode}.tflite"
                status, tflite, seconds = edgert_convert(path, mode, calibration_file, out)
                agree = agreement(arch, path, tflite, mode) if tflite else "-"
                bare, bare_s = bare_convert(path, fmt, mode, calibration)
                ratio = f"{seconds / bare_s:6.2f}" if bare == "ok" else "-"
                failures += not status.startswith("ok")
                print(f"{arch:<17} {fmt:<13} {mode:<8} {status:<11} {agree:<12} {seconds:>9.1f} "
                      f"{bare if bare == 'ok' else 'fails':<11} {bare_s:>7.1f} {ratio:>6}", flush=True)
                if status != "ok" and not status.startswith("ok"):
                    print(f"    edgert: {status}")
                if bare != "ok":
                    print(f"    bare converter: {bare}")
    if args.stages:
        stages(["MobileNetV2", "EfficientNetB0"])
    print(f"\n{failures} conversion(s) failed")


if __name__ == "__main__":
    main()
