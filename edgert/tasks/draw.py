"""Results drawn on the photograph (Pillow): boxes with their label and score, or a mask's classes as a coloured
overlay; written atomically, never over a file without `force`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgert.errors import InputDataError
from edgert.files import atomic_path, check_output_path
from edgert.tasks.image import _pillow, read_image
from edgert.tasks.results import Classification, Detections, Segmentation

SAVE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def colour(index: int) -> tuple[int, int, int]:
    """A distinct, stable colour for a class index (golden-ratio hues)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def annotate(result, picture):
    """The photograph (a path, a Pillow image or pixels) with `result` drawn on it, as a Pillow RGB image."""
    Image = _pillow()
    from PIL import ImageDraw

    base = Image.fromarray(read_image(picture, "RGB"))
    if (base.width, base.height) != (result.width, result.height):
        raise InputDataError(f"the picture is {base.width}x{base.height} but the result is for "
                             f"{result.width}x{result.height}")
    if isinstance(result, Segmentation):
        palette = np.array([(0, 0, 0)] + [colour(i) for i in range(1, max(int(result.mask.max()) + 1, 2))],
                           np.float32)
        tint = palette[result.mask]
        pixels = np.asarray(base, np.float32)
        alpha = np.where(result.mask[..., None] > 0, 0.5, 0.0)  # class 0 (background) left as it is
        base = Image.fromarray(np.clip(pixels * (1 - alpha) + tint * alpha, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(base)
        lines = [f"{label} {share:.0%}" for label, _, share in result.areas()[:5]]
    elif isinstance(result, Detections):
        draw = ImageDraw.Draw(base)
        width = max(2, round(min(base.size) / 200))
        for d in sorted(result.detections, key=lambda d: d.score):  # best drawn last, on top
            c = colour(d.class_id)
            x1, y1, x2, y2 = d.box
            draw.rectangle((x1, y1, x2, y2), outline=c, width=width)
            text = f"{d.label} {d.score:.2f}"
            left, top, right, bottom = draw.textbbox((x1, y1), text)
            lift = bottom - top + 4
            y = y1 - lift if y1 - lift >= 0 else y1
            draw.rectangle((x1, y, x1 + right - left + 4, y + lift), fill=c)
            draw.text((x1 + 2, y + 2), text, fill=(0, 0, 0))
        lines = []
    elif isinstance(result, Classification):
        draw = ImageDraw.Draw(base)
        lines = [f"{c.label} {c.score:.3f}" for c in result.classes]
    else:
        raise InputDataError(f"cannot draw a {type(result).__name__}")
    y = 4
    for line in lines:
        left, top, right, bottom = draw.textbbox((4, y), line)
        draw.rectangle((2, y - 2, right + 4, bottom + 2), fill=(0, 0, 0))
        draw.text((4, y), line, fill=(255, 255, 255))
        y = bottom + 6
    return base


def output_paths(pictures: list, output: str | os.PathLike) -> list[Path]:
    """Where each picture's annotated copy goes: `output` itself for one picture given as a file name with a
    picture suffix; else `output` is a folder, and each copy keeps its picture's name.

    Raises:
        InputDataError: several pictures for one file, or a suffix Pillow does not write.
    """
    out = Path(output)
    if out.suffix.lower() in SAVE_SUFFIXES and not out.is_dir():
        if len(pictures) != 1:
            raise InputDataError(f"-o {out} is one file but there are {len(pictures)} pictures; give a folder")
        return [out]
    if out.suffix and not out.is_dir():
        raise InputDataError(f"-o {out}: write a picture ({', '.join(SAVE_SUFFIXES)}) or give a folder")
    names = [Path(str(p)).name if str(p) else f"picture{i}.png" for i, p in enumerate(pictures)]
    if len(set(names)) != len(names):  # the same name from two folders: keep both
        names = [f"{i:04d}_{n}" for i, n in enumerate(names)]
    return [out / (n if Path(n).suffix.lower() in SAVE_SUFFIXES else n + ".png") for n in names]


def save(image, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write a Pillow image atomically (the format from the suffix).

    Raises:
        OutputExistsError: the file exists and `force` is false. OutputNotWritableError: the folder is not writable.
    """
    path = Path(path)
    check_output_path(path, force=force)
    with atomic_path(path) as tmp:
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}.get(path.suffix.lower(),
                                                                                   path.suffix[1:].upper())
        image.save(tmp, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return path
