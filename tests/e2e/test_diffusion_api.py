"""img2img, inpaint, hi-res, LoRAs, manifests and bad input on the native API, end to end."""

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline
from PIL import Image

from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

from .diffusion_server import decode, png_bytes, smooth_image

BASE = {"prompt": "a photo of a red fox", "negative_prompt": "blurry", "steps": 3,
        "cfg_scale": 6.0, "seed": 42, "model": "demo-sd"}  # fmt: skip
IMAGE = smooth_image(64, 64)
MASK = np.zeros((64, 64), np.uint8)
MASK[16:48, 16:48] = 255


@pytest.fixture(scope="module")
def models(tuned_dir: Path) -> Path:
    return tuned_dir


@pytest.fixture(scope="module")
def client(tuned_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tuned_server.url, timeout=120) as c:
        yield c


def _multipart(params: dict, image: bytes | list[bytes] = b"", mask: Any = None) -> dict:
    images = image if isinstance(image, list) else [image or png_bytes(IMAGE)]
    files = [("image", (f"in{i}.png", data, "image/png")) for i, data in enumerate(images)]
    masks = mask if isinstance(mask, list) else [] if mask is None else [mask]
    files += [("mask", ("mask.png", m, "image/png")) for m in masks]
    return {"files": files, "data": {"params": json.dumps(params)}}


def _direct(cls: type, models: Path, **kw: Any) -> np.ndarray:
    pipe = cls.from_pretrained(models / "sd15/demo-sd", local_files_only=True, safety_checker=None)
    out = pipe(
        BASE["prompt"], negative_prompt=BASE["negative_prompt"], num_inference_steps=BASE["steps"],
        guidance_scale=BASE["cfg_scale"], generator=torch.Generator().manual_seed(BASE["seed"]),
        **kw,
    )  # fmt: skip
    return np.asarray(out.images[0])


def _diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def test_img2img_parity_with_diffusers(client: httpx.Client, models: Path) -> None:
    ours = decode(client.post("/api/img2img", **_multipart({**BASE, "strength": 0.6})))
    ref = _direct(StableDiffusionImg2ImgPipeline, models, image=Image.fromarray(IMAGE),
                  strength=0.6)  # fmt: skip
    assert ours.shape == (64, 64, 3) and _diff(ours, ref) <= 1


def test_inpaint_parity_with_diffusers(client: httpx.Client, models: Path) -> None:
    body = _multipart({**BASE, "strength": 1.0}, mask=png_bytes(MASK))
    ours = decode(client.post("/api/inpaint", **body))
    ref = _direct(StableDiffusionInpaintPipeline, models, image=Image.fromarray(IMAGE),
                  mask_image=Image.fromarray(MASK), width=64, height=64, strength=1.0)  # fmt: skip
    assert _diff(ours, ref) <= 1


def test_enqueue_img2img_with_two_images_and_other_size(client: httpx.Client) -> None:
    body = _multipart({**BASE, "width": 96, "height": 64},
                      image=[png_bytes(IMAGE), png_bytes(smooth_image(64, 64, 1))])  # fmt: skip
    job_id = client.post("/api/enqueue/img2img", **body).json()["job_id"]
    status = wait_for_job(client, job_id)
    assert status["status"] == "completed" and status["seeds"] == [42, 43]
    second = decode(client.get(f"/api/job/{job_id}/result?index=1"))
    assert second.shape == (64, 96, 3)  # another aspect ratio: outpainted


def test_hires_fix_returns_the_target_size(client: httpx.Client) -> None:
    body = {**BASE, "width": 128, "height": 96, "hires_steps": 2, "hires_denoising_strength": 0.5}
    for upscaler in ("latent", "pixel"):
        img = decode(client.post("/api/generate-hires", json={**body, "hires_upscaler": upscaler}))
        assert img.shape == (96, 128, 3)
    job_id = client.post("/api/enqueue/generate-hires", json=body).json()["job_id"]
    assert wait_for_job(client, job_id)["status"] == "completed"


def test_lora_list_and_weights(client: httpx.Client) -> None:
    loras = {x["name"]: x for x in client.get("/api/lora-list").json()}
    assert loras["style"]["architecture"] == "sd15"
    assert loras["xl/style-xl"]["architecture"] == "sdxl"
    assert loras["style"]["trigger_words"] == ["foxy style"] and loras["style"]["size_bytes"] > 0
    body = {**BASE, "width": 64, "height": 64}
    base = decode(client.post("/api/generate", json=body))
    zero_weight = {**body, "loras": [{"name": "style", "weight": 0}]}
    zero = decode(client.post("/api/generate", json=zero_weight))
    one = decode(client.post("/api/generate", json={**body, "loras": [{"name": "style"}]}))
    tagged = {**body, "prompt": BASE["prompt"] + " <lora:style:1>"}
    tag = decode(client.post("/api/generate", json=tagged))
    assert _diff(zero, base) <= 1 and _diff(one, base) > 10 and np.array_equal(one, tag)
    assert client.post("/api/rescan-loras").json()["total"] == 2


def test_manifest_defaults_presets_and_model_list(client: httpx.Client) -> None:
    models = {m["name"]: m for m in client.get("/api/model-list").json()}
    tuned = models["demo-sd-tuned"]
    assert tuned["display_name"] == "Demo SD, tuned" and tuned["alias"] == "tuned"
    assert tuned["defaults"]["steps"] == 3 and tuned["defaults"]["sampler"] == "Euler a"
    assert tuned["presets"]["fast"] == {"steps": 2}
    job = client.post("/api/enqueue/generate", json={"prompt": "a fox", "model": "tuned"}).json()
    status = wait_for_job(client, job["job_id"])
    assert status["denoise_total"] == 3
    meta = Image.open(io.BytesIO(client.get(f"/api/job/{job['job_id']}/result").content))
    assert "Negative prompt: blurry, watermark" in meta.info["parameters"]
    assert "Sampler: Euler a" in meta.info["parameters"] and meta.size == (64, 64)
    fast = client.post("/api/enqueue/generate", json={"prompt": "a fox", "model": "tuned",
                                                      "quality": "fast"}).json()  # fmt: skip
    assert wait_for_job(client, fast["job_id"])["denoise_total"] == 2


def test_variation_seeds_and_output_formats(client: httpx.Client) -> None:
    body = {**BASE, "width": 64, "height": 64}
    base = decode(client.post("/api/generate", json=body))
    none = decode(client.post("/api/generate", json={**body, "subseed": 7}))
    varied = decode(client.post("/api/generate", json={**body, "subseed": 7,
                                                       "subseed_strength": 0.3}))  # fmt: skip
    assert np.array_equal(base, none) and _diff(base, varied) > 0
    for fmt, mime in (("jpeg", "image/jpeg"), ("webp", "image/webp")):
        resp = client.post("/api/generate", json={**body, "output_format": fmt})
        assert resp.headers["content-type"] == mime
        exif = Image.open(io.BytesIO(resp.content)).getexif().get_ifd(0x8769)
        assert b"Seed: 42".decode() in exif[0x9286].decode("utf-16-be", "ignore")


def _huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (2100, 2100)).save(buf, format="PNG")  # 4.4 M pixels > 4 x 1024^2
    return buf.getvalue()


BAD_IMG2IMG = [
    ({**BASE, "width": 65}, None, 422, "width"),
    ({**BASE, "width": 4096}, None, 422, "width"),
    ({**BASE, "strength": 1.5}, None, 422, "strength"),
    ({**BASE, "strength": 0.1}, None, 422, "strength"),  # no step left to run
    ({**BASE, "sampler": "Warp"}, None, 422, "DPM++ 2M"),
    ({**BASE, "scheduler": "Karras", "sampler": "Euler a"}, None, 422, "scheduler"),
    ({**BASE, "loras": [{"name": "nope"}]}, None, 404, "nope"),
    ({**BASE, "loras": [{"name": "xl/style-xl"}]}, None, 422, "sdxl"),
    ({**BASE, "prompt": "x <lora:xl/style-xl:1>"}, None, 422, "demo-sd"),
    ({**BASE, "model": "nope"}, None, 404, "nope"),
    ({**BASE, "strenght": 0.5}, None, 422, "strenght"),
    (BASE, b"this is not an image", 422, "image"),
    (BASE, png_bytes(IMAGE)[:200], 422, "image"),
    (BASE, "huge", 413, "image"),
]


@pytest.mark.parametrize(("params", "image", "status", "needle"), BAD_IMG2IMG)
def test_bad_img2img_input_names_the_field(
    client: httpx.Client, params: dict, image: Any, status: int, needle: str
) -> None:
    data = _huge_png() if image == "huge" else image or b""
    for path in ("/api/img2img", "/api/enqueue/img2img"):
        resp = client.post(path, **_multipart(params, image=data))
        assert resp.status_code == status, resp.text[:300]
        assert needle in resp.json()["error"]


def test_bad_inpaint_and_hires_input(client: httpx.Client) -> None:
    mask = png_bytes(MASK)
    cases = [
        (_multipart(BASE), "mask"),  # inpaint needs a mask
        (_multipart(BASE, image=[png_bytes(IMAGE)] * 3, mask=[mask, mask]), "mask"),
        (_multipart(BASE, mask=b"not a mask"), "mask"),
    ]
    for body, needle in cases:
        resp = client.post("/api/inpaint", **body)
        assert resp.status_code == 422 and needle in resp.json()["error"], resp.text
    resp = client.post("/api/inpaint", data={"params": "{not json"}, files=[
        ("image", ("a.png", png_bytes(IMAGE), "image/png"))])  # fmt: skip
    assert resp.status_code == 422 and "params" in resp.json()["error"]
    resp = client.post("/api/img2img", json=BASE)
    assert resp.status_code == 422 and "image" in resp.json()["error"]
    for bad, field in (
        ({"hires_denoising_strength": 2}, "hires_denoising_strength"),
        ({"width": 8200}, "width"),
        ({"hires_steps": 0}, "hires_steps"),
    ):
        resp = client.post("/api/generate-hires", json={**BASE, **bad})
        assert resp.status_code == 422 and field in resp.json()["error"], resp.text


def test_bad_input_never_reached_a_worker(client: httpx.Client) -> None:
    before = client.get("/api/status").json()["devices"][0]["cache"]
    client.post("/api/img2img", **_multipart({**BASE, "strength": 2}))
    client.post("/api/inpaint", **_multipart(BASE, mask=b"junk"))
    client.post("/api/generate", json={**BASE, "loras": [{"name": "xl/style-xl"}]})
    after = client.get("/api/status").json()["devices"][0]["cache"]
    assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])
