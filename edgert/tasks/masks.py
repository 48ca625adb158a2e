"""A segmenter's output as a class per pixel: plain functions over arrays."""

from __future__ import annotations

import numpy as np


def class_map(output: np.ndarray, channel_first: bool = False) -> np.ndarray:
    """One picture's per-pixel class scores (1, H, W, C), or (1, C, H, W) with `channel_first`, as a class index
    per pixel (H, W); one channel is a foreground probability, thresholded at 0.5."""
    a = np.asarray(output)
    a = a.reshape(a.shape[-3:]) if a.ndim >= 3 else a
    if channel_first:
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        return (a[..., 0] > 0.5).astype(np.int32)
    return a.argmax(axis=-1).astype(np.int32)


def to_photo(mask: np.ndarray, geometry, input_hw: tuple[int, int]) -> np.ndarray:
    """A mask over the model's input (or a grid of it) back over the photograph: the letterbox's padding cut off,
    then nearest-neighbour to the photograph's size."""
    from PIL import Image

    h, w = mask.shape
    sy, sx = h / input_hw[0], w / input_hw[1]  # the mask may be a fraction of the input's size
    x0, y0 = int(round(geometry.pad_x * sx)), int(round(geometry.pad_y * sy))
    x1 = int(round((geometry.pad_x + geometry.width * geometry.scale_x) * sx))
    y1 = int(round((geometry.pad_y + geometry.height * geometry.scale_y) * sy))
    inner = mask[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    picture = Image.fromarray(inner.astype(np.int32), mode="I").resize((geometry.width, geometry.height),
                                                                         Image.NEAREST)
    return np.asarray(picture, np.int32)


def segmentation_shape(shape: tuple[int, ...], input_hw: tuple[int, int]) -> bool | None:
    """Whether an output shape is a per-pixel map over the input (True: channel-first (1, C, H, W); False:
    channel-last (1, H, W, C)), or None when it is not one. Maps may be the input's size or a whole fraction of
    it (DeepLab's output stride)."""
    if len(shape) != 4 or shape[0] != 1:
        return None
    h, w = input_hw

    def grid(a: int, b: int) -> bool:
        return a > 1 and b > 1 and h % a == 0 and w % b == 0 and h // a == w // b and h // a <= 32

    if grid(shape[1], shape[2]) and shape[3] < max(shape[1], shape[2]):
        return False
    if grid(shape[2], shape[3]) and shape[1] < max(shape[2], shape[3]):
        return True
    return None
