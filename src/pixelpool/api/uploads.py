"""Uploaded images and latents: checked in the HTTP process before any job exists.

Decoding runs in a thread (never on the event loop) and is bounded: the pixel count
is read from the header and refused (413) before any pixel is decoded, and Pillow's
own decompression-bomb guard stays on. Corrupt or unknown data is a 422 naming the
field. What passes is stored as an artifact; the job refers to it by its file path.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pixelpool.api.errors import ApiError, field_error
from pixelpool.api.state import AppState

IMAGE_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"})


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    width: int
    height: int
    media_type: str


def max_input_pixels(state: AppState) -> int:
    return state.settings.limits.max_input_pixels


def check_image(data: bytes, field: str, max_pixels: int) -> CheckedImage:
    """Blocking: verify that `data` is one readable image within `max_pixels`."""
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
                    raise ApiError(
                        413, f"{field}: image is {width}x{height}, over the limit of "
                        f"{max_pixels} pixels", field,
                    )  # fmt: skip
                img.load()
                media_type = Image.MIME.get(img.format, "application/octet-stream")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ApiError(413, f"{field}: image is too large: {exc}", field) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise field_error(field, f"is not a readable image: {exc}") from exc
    return CheckedImage(data, width, height, media_type)


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
