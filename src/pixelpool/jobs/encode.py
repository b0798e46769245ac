"""Image encoding for results. Runs in a thread pool, never on the event loop.

PNG uses zlib level 1: several times faster than Pillow's default level 6 for
a modest size increase (bench/ measures it); JPEG/WebP use the usual qualities.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
PNG_COMPRESS_LEVEL = 1


def encode_image(
    array: np.ndarray, fmt: str = "png", quality: int = 90, text: dict[str, str] | None = None
) -> bytes:
    image = Image.fromarray(array)
    buf = io.BytesIO()
    options: dict[str, Any] = {}
    if fmt == "png":
        options["compress_level"] = PNG_COMPRESS_LEVEL
        if text:
            info = PngImagePlugin.PngInfo()
            for key, value in text.items():
                info.add_text(key, value)
            options["pnginfo"] = info
    elif fmt == "jpeg":
        if image.mode == "RGBA":
            image = image.convert("RGB")
        options["quality"] = quality
    elif fmt == "webp":
        options["quality"] = quality
    else:
        raise ValueError(f"unsupported output format {fmt!r}")
    image.save(buf, format=fmt.upper(), **options)
    return buf.getvalue()


def a1111_parameters(params: dict[str, Any], model: str) -> str:
    """The 'parameters' text A1111 writes into PNGs, so other tools can read it back."""
    lines = [str(params.get("prompt", ""))]
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    fields = {
        "Steps": params.get("steps"),
        "Sampler": params.get("sampler") or "model default",
        "CFG scale": params.get("cfg_scale"),
        "Seed": params.get("seed"),
        "Size": f"{params.get('width')}x{params.get('height')}",
        "Model": model,
    }
    lines.append(", ".join(f"{k}: {v}" for k, v in fields.items() if v is not None))
    return "\n".join(lines)
