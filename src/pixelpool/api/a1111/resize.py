"""Fitting a control image to the output size, as the sd-webui-controlnet extension does.

A1111 clients send control images of any size and rely on the extension to fit them
(`resize_mode`): "Crop and Resize" (the default) scales to cover the output and crops
the centre, "Resize and Fill" scales to fit inside and pads with the border's median
colour, "Just Resize" stretches. The interpolation is the extension's: nearest for
maps of few colours (segmentation), area when shrinking, cubic when enlarging; a
black-and-white map is thresholded back to two colours (Otsu). The extension's extra
thinning of one-pixel edges after resizing them is not reproduced.

Blocking (decoding and resizing): call it off the event loop.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from pixelpool.api.errors import field_error
from pixelpool.api.uploads import CheckedImage

CROP, FILL, STRETCH = "Crop and Resize", "Resize and Fill", "Just Resize"
MODES = {
    CROP: CROP, FILL: FILL, STRETCH: STRETCH,
    "Inner Fit (Scale to Fit)": CROP, "Scale to Fit (Inner Fit)": CROP,
    "Outer Fit (Shrink to Fit)": FILL, "Envelope (Outer Fit)": FILL,
    0: STRETCH, 1: CROP, 2: FILL, 3: STRETCH,  # 3: "Just Resize (Latent upscale)"
}  # fmt: skip


def resize_mode(value: Any, field: str) -> str:
    """The extension's resize mode for a name, an old alias or its number."""
    known = isinstance(value, str | int) and not isinstance(value, bool)
    mode = MODES.get(value) if known else None
    if mode is None:
        raise field_error(field, f"unknown resize mode {value!r}; valid: {CROP}, {FILL}, {STRETCH}")
    return mode


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The extension's `high_quality_resize` (without the one-pixel-edge thinning)."""
    import cv2

    if x.shape[1] == size[0] and x.shape[0] == size[1]:
        return x
    smaller = size[0] * size[1] < x.shape[0] * x.shape[1]
    colours = len(np.unique(x.reshape(-1, x.shape[2]), axis=0))
    binary = colours == 2 and int(x.min()) < 16 and int(x.max()) > 240
    if 2 < colours < 200:
        interpolation = cv2.INTER_NEAREST
    elif smaller:
        interpolation = cv2.INTER_AREA
    else:
        interpolation = cv2.INTER_CUBIC
    y = cv2.resize(x, size, interpolation=interpolation)
    if binary:
        grey = np.mean(y.astype(np.float32), axis=2).clip(0, 255).astype(np.uint8)
        _, grey = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        y = np.stack([grey] * 3, axis=2)
    return y


def fit_array(x: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """An RGB array (h, w, 3) fitted to `size` (width, height) by `mode`."""
    w, h = size
    if mode == STRETCH:
        return _resize(x, (w, h))
    old_h, old_w = x.shape[:2]
    k0, k1 = h / old_h, w / old_w
    if mode == FILL:
        k = min(k0, k1)
        borders = np.concatenate([x[0, :, :], x[-1, :, :], x[:, 0, :], x[:, -1, :]], axis=0)
        background = np.tile(np.median(borders, axis=0).astype(x.dtype)[None, None], [h, w, 1])
        y = _resize(x, (round(old_w * k), round(old_h * k)))
        new_h, new_w = y.shape[:2]
        top, left = max(0, (h - new_h) // 2), max(0, (w - new_w) // 2)
        background[top : top + new_h, left : left + new_w] = y
        return background
    k = max(k0, k1)
    y = _resize(x, (round(old_w * k), round(old_h * k)))
    new_h, new_w = y.shape[:2]
    top, left = max(0, (new_h - h) // 2), max(0, (new_w - w) // 2)
    return y[top : top + h, left : left + w]


def fit_image(checked: CheckedImage, size: tuple[int, int], mode: str) -> CheckedImage:
    """A checked upload fitted to `size`, as a PNG (upright, as the worker reads it)."""
    with Image.open(io.BytesIO(checked.data)) as img:
        rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(fit_array(rgb, size, mode))).save(out, format="PNG")
    return CheckedImage(data=out.getvalue(), width=size[0], height=size[1], media_type="image/png")
