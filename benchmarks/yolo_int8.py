"""int8 for a YOLOv8n-size detector: is it still a real speed-up once its detections are kept?

A YOLOv8-layout detector at YOLOv8n's width (16 base channels, 80 classes, 640 px; tests/detectors/nets.py, seeded
random weights: the speed does not depend on training) is exported to ONNX as Ultralytics does and converted by
`edgert convert` to float32 (the anchor) and to full int8, whose output joins box pixels and scores and so keeps that
join in float. Beside them, the same float model quantized with nothing kept in float (the unremedied int8, whose
scores collapse). Each is timed on one thread, interleaved, in the same run: p50 and its ratio to float32.

Target: remedied int8 p50 <= 0.7 x float32. Minutes: onnx2tf and two conversions at 640 px.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--seconds", type=float, default=8.0, help="timing per model, interleaved")
    args = parser.parse_args()
    import torch

    from edgert.converters import convert
    from edgert.converters.foreign import ForeignOptions
    from edgert.converters.foreign.litert_route import quantize
    from edgert.converters.measure import interleaved_p50
    from edgert.converters.recipe import Quantization
    from tests.detectors import nets, shapes

    folder = Path(tempfile.mkdtemp(prefix="edgert-yolo-int8-"))
    torch.manual_seed(0)
    model = nets.Detector("yolov8", nc=80, size=args.size, width=16).eval()
    source = folder / "yolov8n_size.onnx"
    torch.onnx.export(model, (torch.rand(1, 3, args.size, args.size),), str(source), input_names=["images"],
                      output_names=["output0"], opset_version=17, dynamo=False)
    calibration = folder / "calibration.npy"
    np.save(calibration, shapes.batch(np.random.default_rng(0), 16, args.size)[0])
    started = time.perf_counter()
    floating = convert(source, folder / "float32.tflite", foreign=ForeignOptions())
    remedied = convert(source, folder / "int8.tflite", int8=True, calibration_data=calibration,
                       foreign=ForeignOptions(), fallback=False)
    plain = quantize((folder / "float32.tflite").read_bytes(), Quantization.INT8,
                     [np.load(calibration).transpose(0, 2, 3, 1)], 1, [], input_names=["images"])
    (folder / "int8_unremedied.tflite").write_bytes(plain)
    print(f"YOLOv8-layout detector, width 16, 80 classes, {args.size} px ({sum(p.numel() for p in model.parameters())}"
          f" parameters); converted in {time.perf_counter() - started:.0f} s; "
          f"int8 kept in float: {', '.join(remedied.recipe.keep_float)}")
    paths = {"float32 (anchor)": folder / "float32.tflite", "int8, tail in float": folder / "int8.tflite",
             "int8, unremedied": folder / "int8_unremedied.tflite"}
    p50 = interleaved_p50(paths, seconds=args.seconds)
    anchor = p50["float32 (anchor)"]
    print(f"{'model':<24}{'size MiB':>10}{'p50 ms':>10}{'ratio p50':>11}")
    for label, path in paths.items():
        print(f"{label:<24}{path.stat().st_size / 2**20:>10.2f}{p50[label]:>10.2f}{p50[label] / anchor:>11.3f}")
    ratio = p50["int8, tail in float"] / anchor
    print(f"target int8 (tail in float) / float32 <= 0.7: {'met' if ratio <= 0.7 else 'NOT met'} ({ratio:.3f}); "
          f"against the unremedied int8: {p50['int8, tail in float'] / p50['int8, unremedied']:.3f}")
    del floating


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
