"""Input images for img2img and inpaint: reading, resizing, outpaint canvases (torch-free)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ASPECT_TOLERANCE = 0.01  # a target this close to the input's aspect ratio is a plain resize


def open_image(path: str | Path) -> Image.Image:
    """An uploaded image, upright (EXIF orientation applied), fully decoded."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        img.load()
        return img


def split_alpha(img: Image.Image) -> tuple[Image.Image, np.ndarray | None]:
    """RGB for the model, and the alpha channel (if any) to put back on the output."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        return rgba.convert("RGB"), np.asarray(rgba)[:, :, 3].copy()
    return img.convert("RGB"), None


def same_aspect(size: tuple[int, int], width: int, height: int) -> bool:
    return abs((size[0] / size[1]) / (width / height) - 1) <= ASPECT_TOLERANCE


def fit_canvas(img: Image.Image, width: int, height: int) -> tuple[Image.Image, Image.Image]:
    """Outpaint set-up: the image scaled to fit inside width x height, centred, its edges
    extended into the new area; and a mask that is white (repaint) on the new area only."""
    scale = min(width / img.width, height / img.height)
    inner = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    scaled = np.asarray(img.resize(inner, Image.Resampling.LANCZOS))
    left, top = (width - inner[0]) // 2, (height - inner[1]) // 2
    pad = ((top, height - inner[1] - top), (left, width - inner[0] - left), (0, 0))
    canvas = np.pad(scaled, pad, mode="edge")
    mask = np.full((height, width), 255, np.uint8)
    mask[top : top + inner[1], left : left + inner[0]] = 0
    return Image.fromarray(canvas), Image.fromarray(mask, "L")


def prepare_init(
    img: Image.Image, width: int, height: int
) -> tuple[Image.Image, Image.Image | None]:
    """The init image at the target size, plus an outpaint mask when the aspect ratio changes."""
    if img.size == (width, height):
        return img, None
    if same_aspect(img.size, width, height):
        return img.resize((width, height), Image.Resampling.LANCZOS), None
    return fit_canvas(img, width, height)


def prepare_mask(path: str | Path, size: tuple[int, int]) -> Image.Image:
    """A mask as 8-bit grey at the image's size (white = repaint); resized when it differs."""
    mask = open_image(path)
    if mask.mode in ("RGBA", "LA"):  # a transparent-where-to-paint mask: use its alpha inverted
        alpha = mask.getchannel("A")
        if alpha.getextrema() != (255, 255):
            mask = ImageOps.invert(alpha)
    mask = mask.convert("L")
    return mask if mask.size == size else mask.resize(size, Image.Resampling.LANCZOS)


def with_alpha(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Put an input's alpha back on an output of the same size; otherwise leave it RGB."""
    if alpha is None or alpha.shape != rgb.shape[:2]:
        return rgb
    return np.ascontiguousarray(np.dstack([rgb, alpha]))
