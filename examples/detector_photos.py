"""A trained detector and photographs for the README's detector section.

Copies ddddocr's text detector (`common_det.onnx`: YOLOX-style, 416 px, one class, raw boxes; the `ddddocr` package
ships it) here, and writes `photographs.npy`: scikit-image's photographs and crops of them, letterboxed to 416 px as
YOLOX takes them (BGR, 0..255, channel-first, padded with 114). Both packages are in `make install`'s venv.
"""

import importlib.util
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

PHOTOGRAPHS = ("astronaut", "coffee", "chelsea", "rocket", "text", "page", "camera", "coins", "hubble_deep_field",
               "retina", "immunohistochemistry")


def letterboxed(picture: np.ndarray, size: int = 416) -> np.ndarray:
    r = min(size / picture.shape[0], size / picture.shape[1])
    image = Image.fromarray(picture).resize((int(picture.shape[1] * r), int(picture.shape[0] * r)), Image.BILINEAR)
    padded = np.full((size, size, 3), 114, np.uint8)
    padded[: image.size[1], : image.size[0]] = np.asarray(image)
    return padded[..., ::-1].transpose(2, 0, 1).astype(np.float32)


if __name__ == "__main__":
    spec = importlib.util.find_spec("ddddocr")
    if spec is None:
        raise SystemExit("ddddocr is not installed: pip install --no-deps ddddocr==1.6.1")
    shutil.copy(Path(spec.origin).parent / "common_det.onnx", "common_det.onnx")
    out = []
    for name in PHOTOGRAPHS:
        a = getattr(data, name)()
        a = np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]
        for crop in (a, a[: a.shape[0] * 2 // 3, : a.shape[1] * 2 // 3], a[a.shape[0] // 3:, a.shape[1] // 3:]):
            out.append(letterboxed(crop))
    np.save("photographs.npy", np.stack(out))
