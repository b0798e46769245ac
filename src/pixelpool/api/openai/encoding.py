"""Image bytes for OpenAI responses: output_compression and full-size partial images.

Blocking work; callers run these in a thread, never on the event loop.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from pixelpool.jobs.encode import encode_image


def reencode(data: bytes, fmt: str, quality: int) -> bytes:
    """A lossless (PNG) result re-encoded as JPEG/WebP at the requested quality; an alpha
    channel (a transparent background) stays for WebP."""
    with Image.open(io.BytesIO(data)) as img:
        mode = "RGBA" if "A" in img.getbands() else "RGB"
        return encode_image(np.asarray(img.convert(mode)), fmt, quality)


def preview_b64(png_b64: str, width: int, height: int, fmt: str, quality: int) -> str:
    """A step preview (latent-sized PNG, or full-size from TAESD) scaled to the output size,
    in the output format."""
    with Image.open(io.BytesIO(base64.b64decode(png_b64))) as img:
        scaled = img.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    return base64.b64encode(encode_image(np.asarray(scaled), fmt, quality)).decode()
