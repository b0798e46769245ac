"""Latent operations over HTTP: generate-latents + decode-latents == generate; FXLT in/out."""

import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from pixelpool.families.diffusion.latent_format import FXLT_MEDIA_TYPE, decode_latents
from pixelpool.jobs import service
from pixelpool.testing.server import ServerProcess

from .diffusion_server import decode, png_bytes, smooth_image

pytestmark = pytest.mark.skipif(
    "encode_result" not in Path(service.__file__).read_text(),
    reason="the job service does not store latent results (Result.info['blob']) yet",
)
BODY = {"prompt": "a photo of a red fox", "negative_prompt": "blurry", "width": 64,
        "height": 64, "steps": 3, "cfg_scale": 6.0, "seed": 42, "model": "demo-sd"}  # fmt: skip


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.mark.parametrize("accept", [FXLT_MEDIA_TYPE, "application/x-safetensors"])
def test_generate_latents_then_decode_equals_generate(client: httpx.Client, accept: str) -> None:
    image = decode(client.post("/api/generate", json=BODY))
    resp = client.post("/api/generate-latents", json=BODY, headers={"Accept": accept})
    assert resp.status_code == 200 and resp.headers["content-type"] == accept
    array, meta = decode_latents(resp.content)
    assert array.shape == (1, 4, 8, 8) and meta["seed"] == 42 and meta["architecture"] == "sd15"
    decoded = decode(client.post("/api/decode-latents?model=demo-sd", content=resp.content))
    assert np.array_equal(decoded, image)


def test_encode_and_hires_latents(client: httpx.Client) -> None:
    fox = {"Accept": FXLT_MEDIA_TYPE}
    enc = client.post("/api/encode-latents?model=demo-sd", content=png_bytes(smooth_image(64, 64)),
                      headers=fox)  # fmt: skip
    assert enc.status_code == 200 and enc.content[:4] == b"FXLT"
    hires = client.post(
        "/api/hires-latents?model=demo-sd&prompt=a+fox&hires_width=128&hires_height=128"
        "&hires_steps=2&steps=2&hires_denoising_strength=0.5&seed=3", content=enc.content,
        headers=fox,
    )  # fmt: skip
    assert hires.status_code == 200, hires.text
    assert decode_latents(hires.content)[0].shape == (1, 4, 16, 16)
    img = decode(client.post("/api/decode-latents?model=demo-sd", content=hires.content))
    assert img.shape == (128, 128, 3)


def test_bad_latents_are_rejected_by_name(client: httpx.Client) -> None:
    good = client.post("/api/generate-latents", json=BODY, headers={"Accept": FXLT_MEDIA_TYPE})
    bad_version = good.content[:4] + struct.pack("<H", 9) + good.content[6:]
    for blob in (b"", b"garbage!", good.content[:-8], bad_version):
        resp = client.post("/api/decode-latents?model=demo-sd", content=blob)
        assert resp.status_code == 422 and "latents" in resp.json()["error"], resp.text
    resp = client.post("/api/decode-latents?model=demo-sdxl", content=good.content)
    assert resp.status_code == 422 and "sd15" in resp.json()["error"]
