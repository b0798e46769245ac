"""The AUTOMATIC1111 dialect (/sdapi/v1), driven by the `webuiapi` client library."""

from __future__ import annotations

import base64
import io
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image

from pixelpool.testing.server import ServerProcess

from .auth_helpers import token

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def url(jwt_server: ServerProcess) -> str:
    return jwt_server.url


def client(url: str, sub: str = "alice") -> webuiapi.WebUIApi:
    host, port = url.removeprefix("http://").split(":")
    api = webuiapi.WebUIApi(host=host, port=int(port))
    api.session.headers["Authorization"] = f"Bearer {token(sub)}"
    return api


def call(url: str, method: str, path: str, sub: str = "alice", **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token(sub)}"}
    return httpx.request(method, f"{url}/sdapi/v1/{path}", headers=headers, timeout=120, **kw)


def test_txt2img_matches_native_generate(url: str) -> None:
    result = client(url).txt2img(prompt="a fox", seed=1, sampler_name="Euler a", **SMALL)
    native = httpx.post(
        f"{url}/api/generate", timeout=120, headers={"Authorization": f"Bearer {token('alice')}"},
        json={"prompt": "a fox", "seed": 1, "sampler": "Euler a", **SMALL},
    )  # fmt: skip
    ours = np.asarray(result.image.convert("RGB"), dtype=np.int16)
    theirs = np.asarray(Image.open(io.BytesIO(native.content)).convert("RGB"), dtype=np.int16)
    assert np.abs(ours - theirs).max() <= 1
    assert result.info["seed"] == 1 and result.info["sd_model_name"] == "demo-sd"
    assert result.info["sampler_name"] == "Euler a" and result.info["steps"] == 2
    assert "Seed: 1" in result.info["infotexts"][0]
    assert result.parameters["prompt"] == "a fox"


def test_batch_seeds_and_png_info_round_trip(url: str) -> None:
    body = {"prompt": "a cat", "negative_prompt": "ugly", "seed": 1, "batch_size": 2, **SMALL}
    resp = call(url, "POST", "txt2img", json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    info = json.loads(out["info"])
    assert info["all_seeds"] == [1, 2] and len(out["images"]) == 2
    parsed = call(url, "POST", "png-info", json={"image": out["images"][1]}).json()
    assert parsed["info"] == info["infotexts"][1]
    fields = parsed["parameters"]
    assert fields["Prompt"] == "a cat" and fields["Negative prompt"] == "ugly"
    assert fields["Seed"] == "2" and fields["Steps"] == "2" and fields["Size"] == "64x64"
    assert fields["Model"] == "demo-sd"


def test_hires_fix(url: str) -> None:
    body = {"prompt": "a fox", "seed": 4, "enable_hr": True, "hr_scale": 2,
            "hr_upscaler": "Latent", "denoising_strength": 0.5, **SMALL}  # fmt: skip
    out = call(url, "POST", "txt2img", json=body).json()
    image = Image.open(io.BytesIO(base64.b64decode(out["images"][0])))
    assert image.size == (128, 128)
    infotext = json.loads(out["info"])["infotexts"][0]
    assert "Hires resize: 128x128" in infotext and "Size: 64x64" in infotext


def test_img2img(url: str) -> None:
    start = Image.new("RGB", (64, 64), (200, 30, 30))
    result = client(url).img2img(images=[start], prompt="a red square", denoising_strength=0.5,
                                 seed=3, **SMALL)  # fmt: skip
    assert result.image.size == (64, 64) and result.info["seed"] == 3


def test_listings_and_options_per_key(url: str) -> None:
    alice, bob = client(url, "alice"), client(url, "bob")
    titles = alice.util_get_model_names()
    assert any(t.startswith("demo-sd [") for t in titles)
    assert any(t.startswith("demo-sdxl [") for t in titles)
    assert "Euler a" in [s["name"] for s in alice.get_samplers()]
    assert "karras" in [s["name"] for s in call(url, "GET", "schedulers").json()]
    assert isinstance(call(url, "GET", "loras").json(), list)
    before = bob.get_options()["sd_model_checkpoint"]
    sdxl = next(t for t in titles if t.startswith("demo-sdxl ["))
    alice.set_options({"sd_model_checkpoint": sdxl, "CLIP_stop_at_last_layers": 2})
    assert alice.get_options()["sd_model_checkpoint"] == sdxl
    assert bob.get_options()["sd_model_checkpoint"] == before != sdxl
    alice.set_options({"sd_model_checkpoint": before})


def test_progress_and_interrupt(url: str) -> None:
    progress = client(url).get_progress()
    assert set(progress) >= {"progress", "eta_relative", "state", "current_image", "textinfo"}
    assert progress["state"]["job_count"] == 0 and progress["current_image"] is None
    assert call(url, "POST", "interrupt").status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"steps": "2"}, "steps"),
        ({"sampler_name": "No Such Sampler"}, "sampler_name"),
        ({"override_settings": {"sd_model_checkpoint": "nope"}}, "sd_model_checkpoint"),
    ],
)
def test_bad_txt2img_input_names_the_field(url: str, body: dict, field: str) -> None:
    resp = call(url, "POST", "txt2img", json={"prompt": "x", "width": 64, "height": 64, **body})
    assert 400 <= resp.status_code < 500, resp.text
    error = resp.json()
    assert set(error) == {"error", "detail", "body", "errors"} and field in error["detail"]


def test_bad_base64_names_the_field(url: str) -> None:
    resp = call(url, "POST", "img2img", json={"init_images": ["%%%"], **SMALL})
    assert resp.status_code == 422 and "init_images" in resp.json()["detail"]
    resp = call(url, "POST", "png-info", json={"image": base64.b64encode(b"nope").decode()})
    assert resp.status_code == 422 and "image" in resp.json()["detail"]


def test_interrupt_returns_what_finished(url: str) -> None:
    body = {"prompt": "a long one", "n_iter": 4, "width": 64, "height": 64, "steps": 100}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(call, url, "POST", "txt2img", json=body)
        while call(url, "GET", "progress").json()["state"]["job_count"] == 0:
            assert not pending.done(), pending.result().text
        progress = call(url, "GET", "progress").json()
        assert progress["state"]["job_count"] == 4 and 0 <= progress["progress"] < 1
        assert call(url, "GET", "progress", sub="bob").json()["state"]["job_count"] == 0
        assert call(url, "POST", "interrupt").status_code == 200
        resp = pending.result()
    assert resp.status_code == 200, resp.text
    info = json.loads(resp.json()["info"])
    assert info["interrupted"] is True and len(resp.json()["images"]) < 4


def test_inpaint_with_a_mask(url: str) -> None:
    start, mask = Image.new("RGB", (64, 64), (20, 90, 200)), Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    result = client(url).img2img(images=[start], mask_image=mask, prompt="a dot", seed=5,
                                 denoising_strength=0.75, **SMALL)  # fmt: skip
    assert result.image.size == (64, 64) and result.info["all_seeds"] == [5]
