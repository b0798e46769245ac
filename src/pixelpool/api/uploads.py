"""Uploaded images and latents: checked in the HTTP process before any job exists.

Decoding runs in a thread (never on the event loop) and is bounded: the pixel count
is read from the header and refused (413) before any pixel is decoded, and Pillow's
own decompression-bomb guard stays on. Corrupt or unknown data is a 422 naming the
field. What passes is stored as an artifact; the job refers to it by its file path.
"""

from __future__ import annotations

import asyncio
import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.state import AppState

IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"})
EXIF_ORIENTATION = 0x0112
SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # rotated by 90 or 270 degrees
WIDE_MODES = frozenset({"I", "F", "I;16", "I;16B", "I;16L", "I;16N"})  # one channel, > 8 bits


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    width: int
    height: int
    media_type: str


def max_input_pixels(state: AppState) -> int:
    return state.settings.limits.max_input_pixels


def check_image(data: bytes, field: str, max_pixels: int) -> CheckedImage:
    """Blocking: verify that `data` is one readable image within `max_pixels`.

    The size is the upright one (EXIF orientation applied, as the worker applies it).
    Animated images count by their first frame, which is the one used. 16-bit and
    float images are stored as 8-bit PNG (the worker's RGB conversion would clip them).
    """
    if not data:
        raise field_error(field, "is empty; expected an image file (PNG, JPEG or WebP)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in IMAGE_FORMATS:
                    raise field_error(field, f"unsupported image format {img.format}")
                width, height = img.size
                if width * height > max_pixels:
                    raise _too_large(field, f"is {width}x{height}", max_pixels)
                img.load()
                media_type = Image.MIME.get(img.format, "application/octet-stream")
                if _orientation(img) in SWAPPED_ORIENTATIONS:
                    width, height = height, width
                if img.mode in WIDE_MODES:
                    data, media_type = _as_8bit_png(img), "image/png"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(field, "declares more pixels than allowed", max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise field_error(field, "is not an image in a known format (PNG, JPEG, WebP)") from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as exc:
        reason = str(exc) or type(exc).__name__
        raise field_error(field, f"is not a readable image: {reason}") from exc
    return CheckedImage(data, width, height, media_type)


def _too_large(field: str, what: str, max_pixels: int) -> ApiError:
    message = (
        f"{field}: image {what}, over the limit of {max_pixels} pixels (limits.max_input_pixels)"
    )
    return ApiError(413, message, field)


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block: the worker ignores it too
        return 1
    return value if isinstance(value, int) else 1


def _as_8bit_png(img: Image.Image) -> bytes:
    """A 16-bit or float image, upright, scaled to 8 bits (not clipped) and saved as PNG."""
    img = ImageOps.exif_transpose(img)
    array = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        array = array * 255 if np.nanmax(array, initial=0) <= 1 else array
    else:
        array = array / 257
    array = np.nan_to_num(array, nan=0.0, posinf=255, neginf=0)
    grey = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), "L")
    buf = io.BytesIO()
    grey.save(buf, format="PNG")
    return buf.getvalue()


async def store_image(
    state: AppState, data: bytes, field: str, owner: str | None
) -> tuple[Path, CheckedImage]:
    """Check an uploaded image off the event loop, then store it as an artifact."""
    checked = await asyncio.to_thread(check_image, data, field, max_input_pixels(state))
    art = await state.jobs.artifacts.put(checked.data, checked.media_type, owner)
    return art.path, checked


async def store_blob(state: AppState, data: bytes, media_type: str, owner: str | None) -> Path:
    art = await state.jobs.artifacts.put(data, media_type, owner)
    return art.path
