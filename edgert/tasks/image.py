"""Photographs to model inputs: reading pictures (Pillow), listing them (a file, a folder, a glob), and preparing
one for a model's image input: resize (or letterbox, keeping the aspect and padding, as detectors take them),
RGB or grayscale, normalisation, channel-first where the model takes it, and the geometry that maps the model's
pixels back to the photograph's.

Normalisation, in the order the first one that applies wins:
1. `mean`/`std` given, in pixel units (0..255), as TFLite metadata's NormalizationOptions state them:
   input = (pixel - mean) / std;
2. the model's own metadata (NormalizationOptions of its input);
3. a quantized input: the 256 pixel levels map onto the input's 256 integer levels, so the float values the
   quantization represents span 0..255's image (uint8 gets the pixel, int8 the pixel - 128: PyCoral's
   `set_resized_input` and the Support Library feed quantized inputs this way);
4. a float input: pixels scaled to 0..1 (mean 0, std 255), with a note, since nothing says otherwise.
"""

from __future__ import annotations

import glob as globbing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgert.errors import InputDataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LETTERBOX_FILL = 114  # Ultralytics' and YOLOX's grey


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise InputDataError("pictures need Pillow: pip install 'edgert[images]' (or pip install pillow)") from None
    return Image


def list_images(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """The pictures `specs` name: files, folders (their pictures, sorted) and globs, in order, each once.

    Raises:
        InputDataError: a name that matches nothing, or a folder without pictures.
    """
    out: list[Path] = []
    for spec in specs:
        text = str(spec)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise InputDataError(f"--image {text}: the folder has no pictures ({', '.join(IMAGE_SUFFIXES[:5])}, "
                                     "...)")
        elif path.exists():
            found = [path]
        elif any(c in text for c in "*?["):
            found = sorted(Path(p) for p in globbing.glob(text) if Path(p).is_file())
            if not found:
                raise InputDataError(f"--image {text}: the pattern matches no file")
        else:
            raise InputDataError(f"--image {text}: no such file or folder")
        out.extend(p for p in found if p not in out)
    return out


def read_image(source, color: str = "RGB") -> np.ndarray:
    """A picture as uint8 pixels: (H, W, 3) for "RGB", (H, W) for "L". `source` is a path, a Pillow image, or an
    array of pixels (H, W), (H, W, 3) or (H, W, 4), uint8 or float in 0..255.

    Raises:
        InputDataError: the file cannot be read as a picture, or the array is not one.
    """
    Image = _pillow()
    if isinstance(source, np.ndarray):
        a = source
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.dtype.kind not in "uif":
            raise InputDataError(f"an image array is (height, width) or (height, width, 3 or 4) pixels; got "
                                 f"{a.shape} {a.dtype}")
        if a.dtype != np.uint8:
            a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        picture = Image.fromarray(a)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            with Image.open(path) as opened:
                opened.load()
                picture = opened.copy()
        except FileNotFoundError:
            raise InputDataError(f"{path}: no such picture") from None
        except (OSError, SyntaxError, ValueError) as exc:  # Pillow's UnidentifiedImageError is an OSError
            raise InputDataError(f"{path} is not a picture Pillow can read ({_first_line(exc)}); give a JPEG, "
                                 "PNG, BMP, GIF, TIFF or WebP file") from None
    elif hasattr(source, "convert") and hasattr(source, "size"):
        picture = source
    else:
        raise InputDataError(f"an image is a path, a Pillow image or an array of pixels, not {type(source).__name__}")
    if picture.mode != color:
        picture = picture.convert(color)
    return np.asarray(picture)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


@dataclass(frozen=True)
class Geometry:
    """How a photograph became the model's input: the photograph's size, the scale applied and the padding
    before it, so a box in model pixels maps back as (x - pad_x) / scale_x."""

    width: int
    height: int
    scale_x: float
    scale_y: float
    pad_x: float = 0.0
    pad_y: float = 0.0

    def to_photo(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) x1y1x2y2 in the model's input pixels, in the photograph's pixels (clipped to it)."""
        out = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.pad_x) / self.scale_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.pad_y) / self.scale_y
        out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, self.width)
        out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, self.height)
        return out


@dataclass(frozen=True)
class ImageInput:
    """What a model's image input takes, and how pixels become it."""

    name: str
    height: int
    width: int
    channels: int  # 1 or 3
    channel_first: bool  # (1, C, H, W) rather than (1, H, W, C)
    mean: tuple[float, ...]  # per channel, in pixel units: input = (pixel - mean) / std
    std: tuple[float, ...]
    source: str  # where the normalisation came from: "--mean/--std", "metadata", "quantization", "default"
    letterbox: bool = False
    bgr: bool = False
    top_left: bool = False  # a letterbox's picture at the top left (YOLOX's own), not centred (Ultralytics')

    def describe(self) -> str:
        def fmt(values):
            return ",".join(f"{v + 0.0:g}" for v in dict.fromkeys(values))  # + 0.0: never "-0"

        shape = f"{self.channels}x{self.height}x{self.width}" if self.channel_first else \
            f"{self.height}x{self.width}x{self.channels}"
        how = ("letterboxed (top left)" if self.top_left else "letterboxed") if self.letterbox else "resized"
        colour = "grayscale" if self.channels == 1 else ("BGR" if self.bgr else "RGB")
        return (f"{how} to {shape} {colour}, (pixel - {fmt(self.mean)}) / {fmt(self.std)} (from the "
                f"{self.source})")


def image_input(model, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                letterbox: bool = False, bgr: bool = False, metadata=None) -> ImageInput:
    """The model's image input and its normalisation (see the module's order).

    Raises:
        InputDataError: the model does not take one image (its inputs say why), or mean/std of the wrong length.
    """
    specs = model.inputs
    if len(specs) != 1:
        raise InputDataError(f"--image needs a model with one image input; this one has {len(specs)} inputs "
                             f"({', '.join(s.name for s in specs)}): give arrays with --input")
    spec = specs[0]
    shape = tuple(spec.shape)
    if len(shape) != 4 or not (shape[3] in (1, 3) or shape[1] in (1, 3)):
        raise InputDataError(f"input '{spec.name}' has shape {list(shape)}; an image input is (1, height, width, 1 "
                             "or 3), or channel-first (1, 1 or 3, height, width): give arrays with --input")
    channel_first = shape[3] not in (1, 3) and shape[1] in (1, 3)
    channels, height, width = (shape[1], shape[2], shape[3]) if channel_first else (shape[3], shape[1], shape[2])
    if (mean is None) != (std is None):
        raise InputDataError("give --mean and --std together (pixel units: input = (pixel - mean) / std)")
    if mean is not None:
        means, stds, source = per_channel(mean, channels, "--mean"), per_channel(std, channels, "--std"), "--mean/--std"
    else:
        norm = _metadata_normalisation(metadata)
        if norm is not None:
            means, stds, source = per_channel(norm[0], channels, "--mean"), per_channel(norm[1], channels, "--std"), \
                "metadata"
        else:
            real = spec.real_range()
            if real is not None:
                std_ = 255.0 / (real[1] - real[0])
                means, stds, source = (-real[0] * std_,) * channels, (std_,) * channels, "input's quantization"
            else:
                means, stds, source = (0.0,) * channels, (255.0,) * channels, "default: no metadata, pixels to 0..1"
    if any(s == 0 for s in stds):
        raise InputDataError("--std cannot be 0")
    return ImageInput(spec.name, int(height), int(width), int(channels), channel_first, tuple(float(m) for m in means),
                      tuple(float(s) for s in stds), source, letterbox, bgr)


def per_channel(values: Sequence[float], channels: int, option: str,
                error: type[Exception] = InputDataError) -> tuple[float, ...]:
    """One value for every channel, or one per channel (a mean, a std: the run's and the metadata writer's rule).

    Raises:
        `error` (InputDataError unless given): neither one value nor one per channel; the message names `option`.
    """
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise error(f"{option} has {len(values)} values but the input has {channels} channel(s); give one value, or "
                    "one per channel")
    return values


def _metadata_normalisation(metadata) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if metadata is None or not metadata.inputs:
        return None
    tensor = metadata.inputs[0]
    return (tensor.mean, tensor.std) if tensor.mean and tensor.std else None


def prepare(pixels: np.ndarray, how: ImageInput) -> tuple[np.ndarray, Geometry]:
    """One photograph's pixels (H, W, 3) or (H, W) uint8 as the model's float input batch of one, and its
    geometry. The model quantizes a float input itself (`Model.run`)."""
    Image = _pillow()
    if how.channels == 1 and pixels.ndim == 3:
        pixels = np.asarray(Image.fromarray(pixels).convert("L"))
    elif how.channels == 3 and pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    h, w = pixels.shape[:2]
    if how.letterbox:
        scale = min(how.width / w, how.height / h)
        size = int if how.top_left else round  # YOLOX's preproc truncates the size; Ultralytics' rounds it
        new_w, new_h = max(1, size(w * scale)), max(1, size(h * scale))
        pad_x, pad_y = (0, 0) if how.top_left else ((how.width - new_w) // 2, (how.height - new_h) // 2)
        geometry = Geometry(w, h, new_w / w, new_h / h, pad_x, pad_y)
    else:
        new_w, new_h, pad_x, pad_y = how.width, how.height, 0, 0
        geometry = Geometry(w, h, how.width / w, how.height / h)
    resized = pixels if (new_w, new_h) == (w, h) else np.asarray(
        Image.fromarray(pixels).resize((new_w, new_h), Image.BILINEAR))
    if resized.ndim == 2:
        resized = resized[..., None]
    if how.letterbox:  # pad in uint8 (a quarter of the bytes), then one pass to float
        canvas = np.full((how.height, how.width, how.channels), LETTERBOX_FILL, np.uint8)
        canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    else:
        canvas = resized
    if how.bgr:
        canvas = canvas[..., ::-1]
    if how.channel_first:
        canvas = np.moveaxis(canvas, -1, 0)
    out = np.ascontiguousarray(canvas[None], dtype=np.float32)  # one float copy (a channel-first view transposed)
    mean, std = set(how.mean), set(how.std)
    if len(mean) == 1 and len(std) == 1:  # in place: pixel * (1 / std), then the mean's share off if any
        m, inv = mean.pop(), np.float32(1.0 / std.pop())
        out *= inv
        if m:
            out -= np.float32(m) * inv
    else:
        shape = (1, -1, 1, 1) if how.channel_first else (1, 1, 1, -1)
        out -= np.asarray(how.mean, np.float32).reshape(shape)
        out *= np.asarray([1.0 / s for s in how.std], np.float32).reshape(shape)
    batch = out
    return batch, geometry
