"""ControlNets over a real server: /api/generate equals diffusers' ControlNet pipeline,
manifest defaults, img2img, the depth preprocessor, and bad input as a 4xx naming the field."""

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from PIL import Image

from pixelpool.testing import write_demo_models
from pixelpool.testing.server import ServerProcess
from pixelpool.testing.tiny_controlnet import write_tiny_controlnet
from pixelpool.testing.tiny_vision import write_vision_models

from .diffusion_server import decode, png_bytes, smooth_image

BASE = {"prompt": "a photo of a red fox", "negative_prompt": "blurry", "steps": 2,
        "cfg_scale": 6.0, "seed": 42, "model": "demo-sd", "width": 64, "height": 64}  # fmt: skip
CONTROL = smooth_image(64, 64, seed=5)
B64 = base64.b64encode(png_bytes(CONTROL)).decode()
MANIFEST = '[[controlnets]]\nmodel = "cn-sd"\nconditioning_scale = 0.6\n'


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("controlnet-models")
    write_demo_models(root)
    write_tiny_controlnet(root / "sd15/demo-sd", root / "controlnet/cn-sd", seed=1)
    write_tiny_controlnet(root / "sdxl/demo-sdxl", root / "ControlNet/cn-xl", seed=2)
    write_vision_models(root, ["tiny-depth"])
    (root / "sd15/demo-sd.toml").write_text(MANIFEST)
    return root


@pytest.fixture(scope="module")
def client(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with (
        ServerProcess(models, tmp_path_factory.mktemp("data")) as server,
        httpx.Client(base_url=server.url, timeout=120) as c,
    ):
        yield c


def _cn(**kw: Any) -> dict[str, Any]:
    return {"model": "cn-sd", "image": B64, **kw}


def test_list_and_generate_equals_diffusers(client: httpx.Client, models: Path) -> None:
    listed = {c["name"]: c["architecture"] for c in client.get("/api/controlnet-list").json()}
    assert listed == {"cn-sd": "sd15", "cn-xl": "sdxl"}
    body = {**BASE, "controlnets": [_cn(conditioning_scale=0.9, guidance_end=0.7)]}
    ours = decode(client.post("/api/generate", json=body))
    net = ControlNetModel.from_pretrained(models / "controlnet/cn-sd", local_files_only=True)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        models / "sd15/demo-sd", controlnet=net, local_files_only=True, safety_checker=None
    )
    ref = pipe(
        BASE["prompt"], negative_prompt=BASE["negative_prompt"], image=Image.fromarray(CONTROL),
        width=64, height=64, num_inference_steps=2, guidance_scale=6.0,
        controlnet_conditioning_scale=0.9, control_guidance_end=0.7,
        generator=torch.Generator("cpu").manual_seed(42),
    )  # fmt: skip
    assert np.abs(ours.astype(int) - np.asarray(ref.images[0]).astype(int)).max() <= 1


def test_manifest_default_and_data_url(client: httpx.Client) -> None:
    explicit = decode(client.post("/api/generate", json={**BASE, "controlnets": [
        _cn(conditioning_scale=0.6)]}))  # fmt: skip
    default = decode(client.post("/api/generate", json={**BASE, "controlnets": [
        {"image": "data:image/png;base64," + B64}]}))  # fmt: skip
    assert np.array_equal(explicit, default)


def test_img2img_with_depth_preprocessor(client: httpx.Client) -> None:
    params = {**BASE, "strength": 0.8, "controlnets": [_cn(preprocessor="depth")]}
    files = [("image", ("in.png", png_bytes(smooth_image(64, 64)), "image/png"))]
    resp = client.post("/api/img2img", files=files, data={"params": json.dumps(params)})
    assert decode(resp).shape == (64, 64, 3)


@pytest.mark.parametrize(
    ("entry", "status", "field"),
    [
        (_cn(model="nope"), 404, "controlnets[0].model"),
        (_cn(model="cn-xl"), 422, "controlnets[0].model"),
        (_cn(image=base64.b64encode(png_bytes(smooth_image(64, 48))).decode()), 422,
         "controlnets[0].image"),
        (_cn(image=base64.b64encode(b"not an image").decode()), 422, "controlnets[0].image"),
        (_cn(image="%%%"), 422, "controlnets[0].image"),
        (_cn(preprocessor="sobel"), 422, "controlnets[0].preprocessor"),
        (_cn(guidance_start=0.8, guidance_end=0.5), 422, "controlnets[0].guidance_start"),
        (_cn(conditioning_scale=11), 422, "controlnets[0].conditioning_scale"),
        ({"image": B64}, 422, "controlnets[0].model"),  # the manifest names one default
    ],
)  # fmt: skip
def test_bad_input_names_the_field(
    client: httpx.Client, entry: dict[str, Any], status: int, field: str
) -> None:
    resp = client.post("/api/generate", json={**BASE, "controlnets": [_cn(), entry]})
    field = field.replace("[0]", "[1]")
    assert resp.status_code == status, resp.text
    assert resp.json()["detail"][0]["field"] == field, resp.text


def test_not_for_other_ops(client: httpx.Client) -> None:
    resp = client.post("/api/generate-hires", json={**BASE, "controlnets": [_cn()]})
    assert resp.status_code == 422 and "controlnets" in resp.text


def test_depth_without_a_depth_model_says_what_to_install(
    client: httpx.Client, models: Path
) -> None:
    shutil.rmtree(models / "vision")
    assert client.post("/api/rescan-models").status_code == 200
    resp = client.post("/api/generate", json={**BASE, "controlnets": [_cn(preprocessor="depth")]})
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"][0]["field"] == "controlnets[0].preprocessor"
    assert "Depth Anything" in resp.text
