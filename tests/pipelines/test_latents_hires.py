"""Latent operations and hi-res fix on the tiny SD 1.x and SDXL models."""

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

from pixelpool.families.diffusion.latent_format import (
    FXLT_MEDIA_TYPE,
    LatentFormatError,
    decode_fxlt,
    decode_latents,
    encode_fxlt,
)
from pixelpool.pipelines.base import Loaded
from pixelpool.pipelines.diffusion.hires import second_pass_steps

from .diffusion_helpers import BASE, MODELS, load, max_diff, run, write_image


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def model(request: pytest.FixtureRequest, models_dir: Path) -> Loaded:
    return load(models_dir / MODELS[request.param], request.param)


def _write(tmp_path: Path, blob: bytes, name: str = "lat.bin") -> str:
    path = tmp_path / name
    path.write_bytes(blob)
    return str(path)


@pytest.mark.parametrize("fmt", ["safetensors", "fxlt"])
def test_generate_latents_then_decode_equals_generate(
    model: Loaded, tmp_path: Path, fmt: str
) -> None:
    (image,) = run(model, "txt2img", BASE)
    (lat,) = run(model, "txt2img", {**BASE, "latent_format": fmt})
    assert lat.images == [] and lat.info["latent_shape"] == [1, 4, 6, 8]
    _, meta = decode_latents(lat.info["blob"])
    assert meta["seed"] == BASE["seed"] and meta["width"] == 64 and meta["architecture"]
    if fmt == "fxlt":
        assert lat.info["media_type"] == FXLT_MEDIA_TYPE and lat.info["blob"][:4] == b"FXLT"
    (decoded,) = run(model, "decode_latents", {"latents": _write(tmp_path, lat.info["blob"])})
    assert np.array_equal(decoded.images[0], image.images[0])


def test_encode_then_decode_keeps_the_size(model: Loaded, tmp_path: Path) -> None:
    src = write_image(tmp_path / "in.png", 64, 48)
    (enc,) = run(model, "encode_latents", {"image": str(src), "width": 64, "height": 48,
                                           "latent_format": "fxlt"})  # fmt: skip
    array, meta = decode_fxlt(enc.info["blob"])
    assert array.shape == (1, 4, 6, 8) and meta["scaling_factor"] > 0
    (dec,) = run(model, "decode_latents", {"latents": _write(tmp_path, enc.info["blob"])})
    assert dec.images[0].shape == (48, 64, 3)


def test_fxlt_rejects_bad_data() -> None:
    good = encode_fxlt(np.zeros((1, 4, 2, 2), np.float32), {"seed": 1})
    assert decode_fxlt(good)[1] == {"seed": 1}
    for bad in (good[:-4], b"FXLT" + b"\x02\x00" + good[6:], good[:8] + b"\x00" * 4):
        with pytest.raises(LatentFormatError):
            decode_latents(bad)
    with pytest.raises(LatentFormatError):
        decode_latents(b"not latents at all")


HIRES = {**BASE, "width": 128, "height": 96, "base_width": 64, "base_height": 48,
         "hires_steps": 2, "hires_denoising_strength": 0.5}  # fmt: skip


def test_hires_latent_matches_diffusers_two_passes(models_dir: Path) -> None:
    sd = load(models_dir / MODELS["sd15"], "sd15")
    (ours,) = run(sd, "hires", HIRES)
    assert ours.images[0].shape == (96, 128, 3)
    path = models_dir / MODELS["sd15"]
    base = StableDiffusionPipeline.from_pretrained(path, local_files_only=True)
    kw = {"negative_prompt": BASE["negative_prompt"], "guidance_scale": BASE["cfg_scale"]}
    lat = base(BASE["prompt"], width=64, height=48, num_inference_steps=BASE["steps"],
               output_type="latent", generator=torch.Generator().manual_seed(BASE["seed"]),
               **kw).images  # fmt: skip
    up = torch.nn.functional.interpolate(lat, size=(12, 16), mode="bilinear")
    ref = StableDiffusionImg2ImgPipeline.from_pipe(base)(
        BASE["prompt"], image=up, strength=0.5, num_inference_steps=second_pass_steps(2, 0.5),
        generator=torch.Generator().manual_seed(BASE["seed"]), **kw,
    ).images[0]  # fmt: skip
    assert max_diff(ours.images[0], np.asarray(ref)) <= 1


def test_hires_pixel_and_from_latents(model: Loaded, tmp_path: Path) -> None:
    (pixel,) = run(model, "hires", {**HIRES, "hires_upscaler": "pixel"})
    assert pixel.images[0].shape == (96, 128, 3)
    (lat,) = run(model, "txt2img", {**BASE, "latent_format": "safetensors"})
    (from_lat,) = run(model, "hires", {**HIRES, "latents": _write(tmp_path, lat.info["blob"]),
                                       "latent_format": "fxlt"})  # fmt: skip
    array, _ = decode_fxlt(from_lat.info["blob"])
    assert array.shape == (1, 4, 12, 16)
    (hires,) = run(model, "hires", {**HIRES, "latent_format": "fxlt"})
    assert np.allclose(decode_fxlt(hires.info["blob"])[0], array, atol=1e-5)


def test_second_pass_steps() -> None:
    assert second_pass_steps(15, 0.33) == 46
    assert second_pass_steps(15, 1.0) == 15
