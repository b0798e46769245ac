"""The shared validation helpers and the input checks, as pure functions (no server)."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from pixelpool.api.errors import ApiError, clean_text
from pixelpool.api.native import GenerateRequest
from pixelpool.api.openai.plan import EditRequest
from pixelpool.api.uploads import check_image
from pixelpool.api.validation import check_id, check_name, clean_prompt, json_depth, parse_json
from pixelpool.families.diffusion.latent_format import (
    LatentFormatError,
    decode_latents,
    encode_latents,
)
from pixelpool.jobs.encode import encode_image
from pixelpool.pipelines.diffusion.images import open_image, split_alpha

from .hostile_cases import bomb, fxlt_raw, png_claiming

MAX_PIXELS = 4 * 2048 * 2048


def saved(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def test_prompts_lose_control_characters_but_keep_lines() -> None:
    assert clean_prompt("a\x00 red\x1b[31m fox\x7f\tin\nsnow\u0085") == "a red[31m fox\tin\nsnow"
    with pytest.raises(ValueError, match="surrogate"):
        clean_prompt("fox \ud800")


@pytest.mark.parametrize(
    "name", ["../x", "a/../../b", "/etc/passwd", "..\\..\\x", "C:\\models", "a\x00b", "a\nb",
             "\udc80", "x" * 600],
)  # fmt: skip
def test_names_that_could_leave_their_folder_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_name(name)


def test_ordinary_names_pass() -> None:
    for name in ("demo-sd", "anime/animagine", "sdxl/anime/x.safetensors", "3f2a9c0d11", "Euler a"):
        assert check_name(name) == name


def test_ids_are_opaque_tokens() -> None:
    assert check_id("job_id", "0123abcdef") == "0123abcdef"
    for bad in ("..", "../x", "a\x00", "a/b", "", "%2e%2e", "x" * 200):
        with pytest.raises(ApiError) as err:
            check_id("job_id", bad)
        assert err.value.status == 404 and err.value.field == "job_id"


def test_json_depth_is_measured_without_parsing() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[{{{"}]}') == 3
    assert json_depth(b"[" * 100_000) == 100_000
    assert json_depth(b'"no \\" brackets"') == 0
    with pytest.raises(ApiError) as err:
        parse_json("[" * 50 + "]" * 50, "params", 422)
    assert err.value.status == 422 and err.value.field == "params"
    with pytest.raises(ApiError, match="malformed JSON"):
        parse_json(b"\xff{")
    assert parse_json('{"a": [[1]]}') == {"a": [[1]]}


def test_request_models_are_strict_in_json_and_parse_text_in_forms() -> None:
    for bad in ({"steps": True}, {"steps": "3"}, {"cfg_scale": float("nan")}, {"width": 64.0},
                {"priority": 1.5}, {"preview": "yes"}):  # fmt: skip
        with pytest.raises(ValidationError):
            GenerateRequest.model_validate({"prompt": "a", **bad})
    ok = GenerateRequest.model_validate({"prompt": "a\x00b", "cfg_scale": 5, "steps": 3})
    assert ok.prompt == "ab" and ok.cfg_scale == 5.0
    from pixelpool.api.validation import validate_form

    form = validate_form(EditRequest, {"prompt": "a", "n": "2", "strength": "0.5"})
    assert form.n == 2 and form.strength == 0.5
    with pytest.raises(ValidationError):
        validate_form(EditRequest, {"prompt": "a", "n": "true"})


def test_error_text_has_no_object_reprs_or_surrogates() -> None:
    text = clean_text("cannot identify image file <_io.BytesIO object at 0x7f13>: \ud800")
    assert text == "cannot identify image file: \ufffd"


# Latents


@pytest.mark.parametrize("fmt", ["fxlt", "safetensors"])
@pytest.mark.parametrize(
    "meta", [{"seed": "abc"}, {"steps": "1e400"}, {"cfg_scale": "nan"}, {"width": 1.5},
             {"seed": 2**80}],
)  # fmt: skip
def test_latent_metadata_of_the_wrong_type_is_a_format_error(fmt: str, meta: dict) -> None:
    blob = encode_latents(np.zeros((1, 4, 8, 8), np.float32), meta, fmt)
    with pytest.raises(LatentFormatError, match="latent metadata"):
        decode_latents(blob)


def test_latent_metadata_numbers_are_read_back() -> None:
    for fmt in ("fxlt", "safetensors"):
        blob = encode_latents(np.zeros((1, 4, 8, 8), np.float32), {"seed": 7, "cfg_scale": 6.5},
                              fmt)  # fmt: skip
        meta = decode_latents(blob)[1]
        assert meta["seed"] == 7 and meta["cfg_scale"] == 6.5


def test_fxlt_shapes_that_overflow_or_lie_are_refused() -> None:
    with pytest.raises(LatentFormatError, match="bytes of data"):
        decode_latents(fxlt_raw((32768,) * 8))
    with pytest.raises(LatentFormatError, match="bytes of data"):
        decode_latents(fxlt_raw((1, 4, 32768, 32768), data=b"\0" * 64))
    with pytest.raises(LatentFormatError, match=r"truncated|must be"):
        decode_latents(b"FXLT" + struct.pack("<HH", 1, 4) + b"\x00")
    with pytest.raises(LatentFormatError, match="JSON object"):
        decode_latents(fxlt_raw((1,), b"[1]", b"\0" * 4))
    with pytest.raises(LatentFormatError):
        decode_latents(b"\xff" * 8 + b"{}")  # a safetensors header length of 2**64 - 1


# Images


def test_header_bombs_are_refused_before_decoding() -> None:
    for blob in (png_claiming(100_000, 100_000), png_claiming(2**31 - 1, 2**31 - 1), bomb()):
        with pytest.raises(ApiError) as err:
            check_image(blob, "image", MAX_PIXELS)
        assert err.value.status == 413 and err.value.field == "image"
        assert "limits.max_input_pixels" in err.value.message


def test_truncated_and_corrupt_images_are_422() -> None:
    good = saved(Image.new("RGB", (64, 64), "red"), "PNG")
    jpeg = saved(Image.new("RGB", (64, 64), "red"), "JPEG")
    for blob in (good[: len(good) // 2], jpeg[:200], b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBP"):
        with pytest.raises(ApiError) as err:
            check_image(blob, "mask", MAX_PIXELS)
        assert err.value.status == 422 and err.value.field == "mask"
        assert " at 0x" not in err.value.message


def test_odd_modes_are_accepted_and_come_out_rgb(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (64, 48), c) for c in ("red", "blue")]
    inputs = {
        "cmyk": saved(Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG"),
        "palette": saved(Image.new("RGB", (64, 48), "green").convert("P"), "PNG"),
        "animated": saved(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        "16bit": saved(Image.fromarray(np.full((48, 64), 40_000, np.uint16)), "PNG"),
        "grey": saved(Image.new("L", (64, 48), 128), "PNG"),
    }
    for name, blob in inputs.items():
        checked = check_image(blob, "image", MAX_PIXELS)
        assert (checked.width, checked.height) == (64, 48), name
        path = tmp_path / name
        path.write_bytes(checked.data)
        rgb, _ = split_alpha(open_image(path))
        assert rgb.mode == "RGB" and rgb.size == (64, 48), name
    sixteen = tmp_path / "16bit"
    assert np.asarray(split_alpha(open_image(sixteen))[0])[0, 0, 0] == round(40_000 / 257)


def test_exif_rotation_gives_the_upright_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: a 64x32 picture shows as 32x64
    blob = saved(Image.new("RGB", (64, 32), "red"), "JPEG", exif=exif.tobytes())
    checked = check_image(blob, "image", MAX_PIXELS)
    assert (checked.width, checked.height) == (32, 64)


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png"])
def test_long_parameters_never_fail_the_encode(fmt: str) -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    text = {"parameters": "a fox\nNegative prompt: " + "blurry, \ud800" * 50_000}
    data = encode_image(image, fmt, text=text)
    assert Image.open(io.BytesIO(data)).size == (64, 64)
