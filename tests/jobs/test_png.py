"""The parallel PNG encoder: decoders read back exactly the pixels and text it was given."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pixelpool.jobs import png
from pixelpool.jobs.encode import encode_image
from pixelpool.jobs.png import can_encode, encode_png, paeth_rows


def photo_like(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus grain: every Paeth branch (left, up, up-left) gets taken."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = (x * 3 + y * 5)[..., None] + np.arange(channels) * 40
    return ((base + rng.integers(0, 24, (height, width, channels))) % 256).astype(np.uint8)


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every chunk of a PNG, each checked against its CRC."""
    assert data[:8] == png.SIGNATURE
    out, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        out.append((kind, body))
        at += 12 + length
    return out


def reference_paeth(rows: np.ndarray, channels: int) -> np.ndarray:
    """PNG's Paeth filter byte by byte, as the specification writes it."""
    height, width = rows.shape
    out = np.zeros((height, width + 1), np.uint8)
    out[:, 0] = 4
    for y in range(height):
        for x in range(width):
            a = int(rows[y, x - channels]) if x >= channels else 0
            b = int(rows[y - 1, x]) if y > 0 else 0
            c = int(rows[y - 1, x - channels]) if x >= channels and y > 0 else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
            out[y, x + 1] = (int(rows[y, x]) - pred) % 256
    return out


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_paeth_matches_the_specification(channels: int) -> None:
    rows = photo_like(9, 7, channels, seed=channels).reshape(9, 7 * channels)
    rows[4] = 255  # saturated rows and wraparound below zero
    rows[5] = 0
    assert np.array_equal(paeth_rows(rows, channels, 0, 9), reference_paeth(rows, channels))
    # A strip starting mid-image predicts from the row above it, as the whole image does.
    assert np.array_equal(paeth_rows(rows, channels, 3, 9), reference_paeth(rows, channels)[3:])


@pytest.mark.parametrize(
    ("shape", "mode"),
    [
        ((64, 48, 3), "RGB"),
        ((48, 64, 4), "RGBA"),
        ((33, 17), "L"),
        ((20, 21, 2), "LA"),
        ((1, 1, 3), "RGB"),
        ((700, 130, 3), "RGB"),  # several strips, the last one short
        ((5, 9000, 3), "RGB"),  # a row wider than a strip: one row per strip
    ],
)
def test_pillow_reads_back_the_same_pixels(shape: tuple[int, ...], mode: str) -> None:
    array = photo_like(shape[0], shape[1], shape[2] if len(shape) == 3 else 1)
    array = array if len(shape) == 3 else array[..., 0]
    data = encode_png(array)
    image = Image.open(io.BytesIO(data))
    assert image.mode == mode and image.size == (shape[1], shape[0])
    assert np.array_equal(np.asarray(image), array)


def test_the_stream_is_one_valid_zlib_stream_with_its_checksum() -> None:
    """zlib itself checks the Adler-32 at the end (Pillow stops reading before it)."""
    array = photo_like(700, 130, 3)
    idat = b"".join(body for kind, body in chunks(encode_png(array)) if kind == b"IDAT")
    raw = zlib.decompress(idat)  # raises on a wrong checksum or a broken stream
    assert raw == paeth_rows(array.reshape(700, 390), 3, 0, 700).tobytes()
    assert len(raw) > 4 * png.STRIP_BYTES  # it really was cut into strips


def test_the_same_image_gives_the_same_file() -> None:
    array = photo_like(300, 200, 3)
    assert encode_png(array) == encode_png(array.copy())


def test_text_chunks_are_read_back_latin1_and_not() -> None:
    array = photo_like(16, 16, 3)
    text = {"parameters": "a fox\nSteps: 20, Seed: 1", "comment": "狐 in the snow 🦊"}
    image = Image.open(io.BytesIO(encode_png(array, text)))
    assert image.text == text
    kinds = [kind for kind, _body in chunks(encode_png(array, text))]
    assert kinds == [b"IHDR", b"tEXt", b"iTXt", b"IDAT", b"IEND"]


def test_encode_image_uses_it_for_8_bit_images_and_pillow_for_the_rest() -> None:
    array = photo_like(40, 40, 3)
    assert encode_image(array, "png", text={"parameters": "x"}) == encode_png(
        array, {"parameters": "x"}
    )
    wide = np.arange(40 * 40, dtype=np.uint16).reshape(40, 40)  # 16-bit grey: Pillow's
    assert not can_encode(wide) and not can_encode(array[..., :0])
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_image(wide)))), wide)


def test_files_stay_the_size_of_pillows() -> None:
    """Paeth on every row costs little over Pillow's per-row choice on a photo-like image
    (the benchmark's encode suite has the figures at 1024x1024)."""
    array = photo_like(256, 256, 3)
    ours = len(encode_png(array))
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG", compress_level=png.LEVEL, compress_type=png.STRATEGY)
    assert ours <= 1.1 * len(buf.getvalue())
