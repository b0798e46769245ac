"""Vision image inputs: base64 in its usual spellings, URLs refused while fetching is
off, and bad input a 4xx naming the field."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from PIL import Image

from pixelpool.api.errors import ApiError
from pixelpool.api.vision.inputs import decode_base64, read_image_input
from pixelpool.config import Settings

FIELD = "images[1]"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (9, 7), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
B64 = base64.b64encode(PNG).decode()


@pytest.mark.parametrize(
    "value",
    [
        B64,
        B64.rstrip("="),
        "data:image/png;base64," + B64,
        "\n".join(B64[i : i + 76] for i in range(0, len(B64), 76)),
        base64.urlsafe_b64encode(PNG).decode(),
    ],
)
def test_base64_spellings_decode_to_the_image(value: str) -> None:
    checked = asyncio.run(read_image_input(Settings(), value, FIELD))
    assert checked.data == PNG
    assert (checked.width, checked.height, checked.media_type) == (9, 7, "image/png")


@pytest.mark.parametrize(
    ("value", "status", "words"),
    [
        ("", 422, "is empty"),
        ("not base64!", 422, "neither valid base64"),
        (base64.b64encode(b"<html></html>").decode(), 422, "not an image"),
        ("https://example.com/a.png", 400, "limits.fetch_urls"),
        ("http://127.0.0.1/a.png", 400, "limits.fetch_urls"),
    ],
)
def test_bad_inputs_are_a_4xx_naming_the_field(value: str, status: int, words: str) -> None:
    with pytest.raises(ApiError) as err:
        asyncio.run(read_image_input(Settings(), value, FIELD))
    assert err.value.status == status and err.value.field == FIELD
    assert words in err.value.message


def test_a_loopback_url_is_refused_when_fetching_is_on() -> None:
    settings = Settings.model_validate({"limits": {"fetch_urls": True}})
    with pytest.raises(ApiError) as err:
        asyncio.run(read_image_input(settings, "http://127.0.0.1:9/a.png", FIELD))
    assert err.value.status == 403 and "loopback" in err.value.message


def test_decode_base64_alone() -> None:
    assert decode_base64("aGVsbG8", FIELD) == b"hello"
