"""Reference images (IP-Adapter) over a real server, in every dialect that takes them."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from pixelpool.testing.server import ServerProcess

from .diffusion_server import decode, png_bytes, smooth_image

JOB = {"prompt": "a red fox", "width": 64, "height": 64, "steps": 2, "cfg_scale": 7.0,
       "seed": 77}  # fmt: skip
REFERENCE = png_bytes(smooth_image(48, 40, seed=4))
NOT_AN_IMAGE = base64.b64encode(b"hello, not an image").decode()


@pytest.fixture(scope="module")
def models(extras_dir: Path) -> Path:
    """The shared tree holds an SD 1.x IP-Adapter laid out as the published repository
    does (`models/` with `image_encoder/`), and an SDXL one under ComfyUI's folder name."""
    return extras_dir


@pytest.fixture(scope="module")
def client(extras_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=extras_server.url, timeout=120) as c:
        yield c


def _generate(client: httpx.Client, **extra: object) -> np.ndarray:
    resp = client.post("/generate", json={**JOB, **extra})
    assert resp.status_code == 200, resp.text[:500]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(resp.json()["image"]))))


def _diffusers(models: Path, scale: float) -> np.ndarray:
    """diffusers' own IP-Adapter output for JOB with REFERENCE."""
    pipe = DiffusionPipeline.from_pretrained(str(models / "sd15/demo-sd"), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_ip_adapter(str(models / "ip-adapter/models"), subfolder="",
                         weight_name="ipa-sd15.safetensors")  # fmt: skip
    pipe.set_ip_adapter_scale(scale)
    out = pipe(
        JOB["prompt"], width=64, height=64, num_inference_steps=2, guidance_scale=7.0,
        generator=torch.Generator().manual_seed(77),
        ip_adapter_image=Image.open(io.BytesIO(REFERENCE)).convert("RGB"),
    ).images[0]  # fmt: skip
    return np.asarray(out)


def test_health_and_list(client: httpx.Client) -> None:
    assert client.get("/health").json()["ip_adapter_loaded"] is True
    listed = client.get("/api/ip-adapter-list").json()
    assert [(a["name"], a["architecture"], a["variant"], a["default"]) for a in listed] == [
        ("ipa-sdxl", "sdxl", "base", True),
        ("models/ipa-sd15", "sd15", "base", True),
    ]


def test_selfhosted_reference_equals_diffusers(client: httpx.Client, models: Path) -> None:
    ref = base64.b64encode(REFERENCE).decode()
    plain = _generate(client)
    guided = _generate(client, reference_image=ref)
    assert np.abs(guided.astype(int) - plain.astype(int)).max() > 10
    assert np.abs(guided.astype(int) - _diffusers(models, 0.7).astype(int)).max() <= 1
    stronger = client.post("/generate", json={**JOB, "reference_image": ref,
                                              "ip_adapter_scale": 1.2}).json()  # fmt: skip
    assert stronger["parameters"]["ip_adapter_scale"] == 1.2
    # The native dialect, the same job: the same image.
    native = client.post("/api/generate", json={**JOB, "ip_adapter": {"images": [ref]}})
    assert np.array_equal(decode(native), guided)
    named = {"name": "ipa-sd15", "scale": 0.7, "images": [ref]}
    assert np.array_equal(decode(client.post("/api/generate", json={**JOB, "ip_adapter": named})),
                          guided)  # fmt: skip


def test_img2img_and_openai_edits_take_references(client: httpx.Client) -> None:
    init = png_bytes(smooth_image(64, 64, seed=9))
    params = {k: v for k, v in JOB.items() if k not in ("width", "height")}
    files = [("image", ("i.png", init, "image/png")), ("reference", ("r.png", REFERENCE))]
    data = {"params": json.dumps({**params, "ip_adapter": {"scale": 0.9}})}
    guided = decode(client.post("/api/img2img", files=files, data=data))
    without = {"params": json.dumps(params)}
    plain = decode(client.post("/api/img2img", files=files[:1], data=without))
    assert np.abs(guided.astype(int) - plain.astype(int)).max() > 0
    two = [("image[]", ("i.png", init, "image/png")), ("image[]", ("r.png", REFERENCE))]
    form = {"prompt": "a red fox", "steps": "2", "seed": "77", "ip_adapter_scale": "0.9"}
    resp = client.post("/v1/images/edits", files=two, data=form)
    assert resp.status_code == 200, resp.text[:300]
    edited = base64.b64decode(resp.json()["data"][0]["b64_json"])
    edited = np.asarray(Image.open(io.BytesIO(edited)))
    assert np.array_equal(edited, guided)  # the same job as img2img with a reference file


def test_bad_references_name_the_field(client: httpx.Client) -> None:
    resp = client.post("/generate", json={**JOB, "reference_image": NOT_AN_IMAGE})
    assert resp.status_code == 422 and "reference_image" in resp.json()["detail"]
    resp = client.post("/generate", json={**JOB, "reference_image": NOT_AN_IMAGE[:5] + "!"})
    assert resp.status_code == 422 and "reference_image" in resp.json()["detail"]
    ref = base64.b64encode(REFERENCE).decode()
    for adapter, status, field in (
        ({"images": [NOT_AN_IMAGE]}, 422, "ip_adapter.images[0]"),
        ({"images": []}, 422, "ip_adapter.images"),
        ({"name": "ipa-sdxl", "images": [ref]}, 422, "ip_adapter.name"),
        ({"name": "no-such-adapter", "images": [ref]}, 404, "ip_adapter.name"),
        ({"scale": -1, "images": [ref]}, 422, "scale"),
    ):
        resp = client.post("/api/generate", json={**JOB, "ip_adapter": adapter})
        assert resp.status_code == status and field in resp.json()["error"], resp.text[:300]
    resp = client.post("/api/generate-hires", json={**JOB, "ip_adapter": {"images": [ref]}})
    assert resp.status_code == 422 and "ip_adapter" in resp.json()["error"]
    init = png_bytes(smooth_image(64, 64))
    files = [("image", ("i.png", init)), ("reference", ("r.png", b"not an image"))]
    resp = client.post("/api/img2img", files=files, data={"params": json.dumps({"steps": 2})})
    assert resp.status_code == 422 and "reference" in resp.json()["error"]
    two = [("image[]", ("i.png", init)), ("image[]", ("r.png", b"not an image"))]
    resp = client.post("/v1/images/edits", files=two, data={"prompt": "a fox"})
    assert resp.status_code == 400 and "image[1]" in resp.json()["error"]["message"]  # OpenAI: 400
