"""PyTorch MobileNetV3-Small (torchvision's architecture, 224x224, seeded weights) through edgert's two routes,
against the bare tools, as fresh processes (imports included), and the p50 of what each produced.

Anchors: for conversion time, a script that calls `litert_torch.convert` and writes the float32 `.tflite` (the bare
litert-torch route) and one that runs `torch.onnx.export` and `onnx2tf.convert` as its README shows (the bare onnx
route; onnx2tf then writes its own float32 and float16 `.tflite` files too). edgert's conversions add the names,
the layout (NHWC), the calibration (int8: 32 samples) and the agreement check against torch. For latency, the
float32 `.tflite` of the bare litert-torch call, single-threaded p50 interleaved with every other `.tflite`.
Run: `python benchmarks/torch_convert.py [--rounds 1]`.
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

WORK = Path("build/bench/torch")
NETS = Path(__file__).resolve().parent.parent / "tests" / "torch_models"
FACTORY = f"""
import sys, torch
sys.path.insert(0, {str(NETS)!r})
import nets

def make():
    module, _ = nets.mobilenet_v3_small()
    return module, (torch.rand(1, 3, 224, 224),)
"""
BARE_LITERT = """
import sys, torch, litert_torch
sys.path.insert(0, sys.argv[1])
from mobilenet import make
module, example = make()
litert_torch.convert(module, example).export(sys.argv[2])
"""
BARE_ONNX2TF = """
import os, sys, torch, onnx2tf
sys.path.insert(0, sys.argv[1])
from mobilenet import make
module, example = make()
torch.onnx.export(module, example, "mobilenet.onnx", input_names=["image"], output_names=["output_0"],
                  opset_version=17, dynamo=False)
onnx2tf.convert(input_onnx_file_path="mobilenet.onnx", output_folder_path="onnx2tf_out", non_verbose=True)
"""


def timed(cmd: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    work = WORK.resolve()
    (work / "mobilenet.py").write_text(FACTORY)
    np.save(work / "calibration.npy", np.random.default_rng(0).random((32, 3, 224, 224), dtype=np.float32))
    # onnx2tf fetches this sample from GitHub unless it is here (the bare run must not time a download)
    np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy",
            np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
    edgert = str(Path(sys.executable).parent / "edgert")
    contenders = {
        "bare litert_torch.convert (anchor)": ([sys.executable, "-c", BARE_LITERT, str(work), "bare.tflite"], None),
        "edgert --route litert-torch": ([edgert, "convert", "mobilenet.py:make", "--route", "litert-torch", "-o",
                                         "litert_f32.tflite", "--force"], "litert_f32.tflite"),
        "edgert --route litert-torch --int8": ([edgert, "convert", "mobilenet.py:make", "--int8",
                                                "--calibration-data", "calibration.npy", "-o", "litert_int8.tflite",
                                                "--force"], "litert_int8.tflite"),
        "bare torch.onnx + onnx2tf": ([sys.executable, "-c", BARE_ONNX2TF, str(work)], None),
        "edgert --route onnx": ([edgert, "convert", "mobilenet.py:make", "--route", "onnx", "-o", "onnx_f32.tflite",
                                 "--force"], "onnx_f32.tflite"),
        "edgert --route onnx --int8": ([edgert, "convert", "mobilenet.py:make", "--route", "onnx", "--int8",
                                        "--calibration-data", "calibration.npy", "-o", "onnx_int8.tflite",
                                        "--force"], "onnx_int8.tflite"),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, (cmd, _) in contenders.items():
            times[name].append(timed(cmd, work))
    anchor = statistics.median(times["bare litert_torch.convert (anchor)"])
    print(f"MobileNetV3-Small 224x224 from PyTorch, {args.rounds} round(s); int8: 32 calibration samples")
    print(f"{'conversion':<38} {'median s':>9} {'ratio':>7}")
    for name, values in times.items():
        print(f"{name:<38} {statistics.median(values):>9.1f} {statistics.median(values) / anchor:>7.2f}")

    from edgert.converters.measure import interleaved_p50

    paths = {"bare litert-torch float32 (anchor)": work / "bare.tflite"}
    paths.update({name.replace("edgert --route ", "").replace(" --int8", " int8"): work / out
                  for name, (_, out) in contenders.items() if out})
    p50 = interleaved_p50(paths)
    base = p50["bare litert-torch float32 (anchor)"]
    print()
    print(f"{'.tflite (one thread)':<38} {'p50 ms':>9} {'ratio':>7}")
    for name, value in p50.items():
        print(f"{name:<38} {value:>9.3f} {value / base:>7.2f}")


if __name__ == "__main__":
    main()
