"""Result encoding. Runs in a thread pool, never on the event loop.

PNG: 8-bit images go through `png.py` (Paeth rows deflated in parallel strips, zlib
level 1 with the RLE strategy: several times faster than Pillow's default level 6 for
a modest size increase; bench/ measures it), anything else through Pillow with the
same zlib settings. JPEG/WebP use the usual qualities.
The generation parameters go where A1111 puts them: a PNG `parameters` text
chunk, or the EXIF UserComment of a JPEG/WebP, so other tools can read them back.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from pixelpool.jobs import png

MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXIF_USER_COMMENT = 0x9286
# A JPEG APP1 segment holds at most 65,533 bytes of EXIF; keep the comment well inside it
# (WebP uses the same cap), so a long prompt is truncated instead of failing the job.
MAX_EXIF_COMMENT = 60_000
_SURROGATES = re.compile("[\ud800-\udfff]")
BLOB_KEY = "blob"  # Result.info key for a non-image result (latents): raw bytes


def _user_comment(text: str) -> bytes:
    """EXIF UserComment in the UNICODE encoding A1111 (piexif) writes, cut to fit EXIF."""
    data = safe_text(text).encode("utf-16-be")
    if len(data) > MAX_EXIF_COMMENT:
        data = data[:MAX_EXIF_COMMENT].decode("utf-16-be", "ignore").encode("utf-16-be")
    return b"UNICODE\0" + data


def safe_text(text: str) -> str:
    """Text that encodes as UTF-8 (an unpaired surrogate becomes U+FFFD), so that
    metadata can never fail an encode after the image was made."""
    return _SURROGATES.sub("\ufffd", text)


def encode_image(
    array: np.ndarray, fmt: str = "png", quality: int = 90, text: dict[str, str] | None = None
) -> bytes:
    if fmt == "png" and png.can_encode(array):
        return png.encode_png(array, {safe_text(k): safe_text(v) for k, v in (text or {}).items()})
    image = Image.fromarray(array)
    buf = io.BytesIO()
    options: dict[str, Any] = {}
    if fmt == "png":
        options["compress_level"] = png.LEVEL  # the same settings as `png.py`'s
        options["compress_type"] = png.STRATEGY
        if text:
            info = PngImagePlugin.PngInfo()
            for key, value in text.items():
                info.add_text(safe_text(key), safe_text(value))
            options["pnginfo"] = info
    elif fmt in ("jpeg", "webp"):
        if fmt == "jpeg" and image.mode in ("RGBA", "LA"):
            image = image.convert("RGB")  # JPEG has no alpha; WebP keeps it
        options["quality"] = quality
        if text and "parameters" in text:
            exif = Image.Exif()
            exif.get_ifd(0x8769)[EXIF_USER_COMMENT] = _user_comment(text["parameters"])
            options["exif"] = exif.tobytes()
    else:
        raise ValueError(f"unsupported output format {fmt!r}")
    try:
        image.save(buf, format=fmt.upper(), **options)
    except (OSError, ValueError):
        if "exif" not in options and "pnginfo" not in options:
            raise
        # Metadata that does not fit is dropped; the image itself must not be lost.
        options.pop("exif", None)
        options.pop("pnginfo", None)
        buf = io.BytesIO()
        image.save(buf, format=fmt.upper(), **options)
    return buf.getvalue()


def encode_result(
    images: list[np.ndarray],
    info: dict[str, Any],
    fmt: str,
    text: dict[str, str] | None,
    quality: int = 90,
) -> tuple[list[tuple[bytes, str]], dict[str, Any]]:
    """A result's payloads as (bytes, media type), and its info without raw bytes.

    Images are encoded in `fmt`; a non-image result (latents) carries its bytes in
    `info["blob"]` with `info["media_type"]` and is passed through as is.
    """
    payloads = [(encode_image(img, fmt, quality, text), MEDIA_TYPES[fmt]) for img in images]
    if BLOB_KEY in info:
        info = dict(info)
        payloads.append((bytes(info.pop(BLOB_KEY)), str(info.get("media_type"))))
    return payloads, info


NPY_MEDIA_TYPE = "application/x-npy"


def encode_arrays(arrays: dict[str, np.ndarray]) -> list[tuple[str, bytes, dict[str, Any]]]:
    """Each named array (masks, depth, features) as `.npy` bytes, with its shape and dtype."""
    out = []
    for name, array in arrays.items():
        buf = io.BytesIO()
        np.save(buf, np.asarray(array), allow_pickle=False)
        meta = {"name": name, "shape": list(np.shape(array)), "dtype": str(np.asarray(array).dtype)}
        out.append((name, buf.getvalue(), meta))
    return out
