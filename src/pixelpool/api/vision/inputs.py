"""Image inputs of the vision dialect: base64 (optionally a `data:` URL) or an http(s)
URL, checked like an upload before any job exists.

A URL is fetched only when `limits.fetch_urls` is on (see `api/fetch_url.py`);
otherwise it is a 400 saying how to enable it. Base64 that does not decode, or
decodes to something that is not an image, is a 422 naming the field.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from pathlib import Path

from pixelpool.api.errors import field_error
from pixelpool.api.fetch_url import fetch_image, looks_like_url
from pixelpool.api.state import AppState
from pixelpool.api.uploads import CheckedImage, check_image
from pixelpool.config import Settings

_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def decode_base64(value: str, field: str) -> bytes:
    """The bytes of a base64 string (standard or URL-safe alphabet, padding optional,
    whitespace ignored, a `data:...;base64,` prefix dropped); a 422 naming `field`."""
    text = _WHITESPACE.sub("", _DATA_URL.sub("", value, count=1))
    if not text:
        raise field_error(field, "is empty; expected a base64 image or an http(s) URL")
    text += "=" * (-len(text) % 4)
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(text, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise field_error(field, "is neither valid base64 nor an http(s) URL") from exc


async def read_image_input(settings: Settings, value: str, field: str) -> CheckedImage:
    """One image input (`images[0]`...): fetched if a URL, else decoded from base64;
    then checked off the event loop (format, `limits.max_input_pixels`)."""
    if looks_like_url(value):
        return await fetch_image(settings, value, field)
    data = decode_base64(value, field)
    return await asyncio.to_thread(check_image, data, field, settings.limits.max_input_pixels)


async def store_image_input(
    state: AppState, value: str, field: str, owner: str | None
) -> tuple[Path, CheckedImage]:
    """`read_image_input`, then stored as an artifact of `owner` (as `uploads.store_image`
    does for uploads): the path a job spec refers to, and the checked image."""
    checked = await read_image_input(state.settings, value, field)
    art = await state.jobs.artifacts.put(checked.data, checked.media_type, owner)
    return art.path, checked
