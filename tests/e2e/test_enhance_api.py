"""Enhance through HTTP: /api/enhance and /api/enqueue/enhance, pixel and latent paths,
and bad input answered with a 4xx naming the field."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from pixelpool.families.diffusion.latent_format import encode_latents
from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

from .diffusion_server import png_bytes, smooth_image

PARAMS = {"prompt": "a red fox", "model": "demo-sd", "hires_steps": 2, "denoising_strength": 0.5,
          "cfg": 6.0, "seed": 7}  # fmt: skip


@pytest.fixture(scope="module")
def client(extras_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=extras_server.url, timeout=120) as c:
        yield c


def _post(client: httpx.Client, path: str, params: dict[str, Any], **files: bytes) -> Any:
    parts = {name: (name, data, "application/octet-stream") for name, data in files.items()}
    return client.post(path, data={"params": json.dumps(params)}, files=parts)


IMAGE = png_bytes(smooth_image(64, 48))


def test_sync_enhance_returns_the_target_size_with_parameters(client: httpx.Client) -> None:
    resp = _post(client, "/api/enhance", PARAMS, image=IMAGE)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png" and resp.headers["x-seed"] == "7"
    img = Image.open(io.BytesIO(resp.content))
    assert img.size == (128, 96)  # default target: twice the input
    text = img.info["parameters"]
    # the default upscaler: the first installed model by name (tiny-compact, tiny-esrgan)
    assert "Hires upscaler: tiny-compact" in text and "Denoising strength: 0.5" in text
    # the same request queued gives the same image
    job = _post(client, "/api/enqueue/enhance", PARAMS, image=IMAGE).json()["job_id"]
    view = wait_for_job(client, job)
    assert view["status"] == "completed" and view["op"] == "enhance"
    again = client.get(f"/api/job/{job}/result")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(again.content))), np.asarray(img))


def test_enqueue_from_cached_latents_without_image(client: httpx.Client) -> None:
    lat = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(1)).numpy()
    blob = encode_latents(lat, {"model": "demo-sd", "seed": 1}, "fxlt")
    params = {**PARAMS, "hires_width": 96, "hires_height": 80}
    params.pop("model")  # taken from the latents' metadata
    resp = _post(client, "/api/enqueue/enhance", params, cached_latents=blob)
    assert resp.status_code == 200, resp.text
    view = wait_for_job(client, resp.json()["job_id"])
    assert view["status"] == "completed", view
    out = Image.open(io.BytesIO(client.get(f"/api/job/{view['job_id']}/result").content))
    assert out.size == (96, 80) and "Hires upscaler: Latent" in out.info["parameters"]


def test_lanczos_upscaler_by_name(client: httpx.Client) -> None:
    resp = _post(client, "/api/enhance", {**PARAMS, "upscaler": "lanczos", "hires_width": 64,
                                          "hires_height": 64}, image=IMAGE)  # fmt: skip
    assert resp.status_code == 200, resp.text
    img = Image.open(io.BytesIO(resp.content))
    assert img.size == (64, 64) and "Hires upscaler: Lanczos" in img.info["parameters"]


@pytest.mark.parametrize(
    ("params", "files", "status", "field"),
    [
        ({}, {"image": b"not an image"}, 422, "image"),
        ({}, {}, 422, "image"),
        ({"upscaler": "no-such-upscaler"}, {"image": IMAGE}, 404, "upscaler"),
        ({"upscaler": "demo-sd"}, {"image": IMAGE}, 422, "upscaler"),
        ({"model": "tiny-esrgan"}, {"image": IMAGE}, 422, "model"),
        ({"hires_width": 4096}, {"image": IMAGE}, 422, "hires_width"),
        ({"hires_height": 100}, {"image": IMAGE}, 422, "hires_height"),
        ({}, {"image": png_bytes(smooth_image(1104, 64))}, 422, "hires_width"),  # 2x: too big
        ({}, {"image": IMAGE, "latent_data": b"FXLT garbage"}, 422, "latent_data"),
        ({"denoising_strength": 1.5}, {"image": IMAGE}, 422, "denoising_strength"),
        ({"denoising_strength": 0}, {"image": IMAGE}, 422, "denoising_strength"),
        ({"hires_steps": 0}, {"image": IMAGE}, 422, "hires_steps"),
        ({"bogus": 1}, {"image": IMAGE}, 422, "bogus"),
    ],
)
def test_bad_input_names_the_field(
    client: httpx.Client, params: dict[str, Any], files: dict[str, bytes], status: int, field: str
) -> None:
    for path in ("/api/enhance", "/api/enqueue/enhance"):
        resp = _post(client, path, {**PARAMS, **params}, **files)
        assert resp.status_code == status, resp.text
        assert field in resp.json()["error"], resp.text


def test_not_multipart_is_a_4xx(client: httpx.Client) -> None:
    resp = client.post("/api/enhance", json=PARAMS)
    assert resp.status_code == 422 and "image" in resp.json()["error"]
