"""The ControlNet extension's API (units in `alwayson_scripts`, /controlnet listings) over
one real server, driven by `webuiapi`: a unit equals our native `controlnets` entry (or
`ip_adapter`) for the same seed, control images are fitted as the extension fits them,
and bad units are a 4xx in A1111's envelope naming the unit's field."""

from __future__ import annotations

import base64
import io
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image

from pixelpool.testing.server import ServerProcess

from .auth_helpers import token
from .diffusion_server import decode, png_bytes, smooth_image

JOB = {"prompt": "a red fox", "seed": 9, "width": 64, "height": 64, "steps": 2,
       "cfg_scale": 6.0, "sampler_name": "Euler a"}  # fmt: skip
CONTROL = smooth_image(64, 64, seed=5)
FIELD = "alwayson_scripts.controlnet.args"


@pytest.fixture(scope="module")
def url(jwt_server: ServerProcess) -> str:
    return jwt_server.url


@pytest.fixture(scope="module")
def api(url: str) -> webuiapi.WebUIApi:
    host, port = url.removeprefix("http://").split(":")
    client = webuiapi.WebUIApi(host=host, port=int(port))
    client.session.headers["Authorization"] = f"Bearer {token('alice')}"
    return client


@pytest.fixture(scope="module")
def titles(api: webuiapi.WebUIApi) -> dict[str, str]:
    """Model titles as the extension lists them, `name [hash]`, by name."""
    return {t.rsplit(" [", 1)[0]: t for t in api.controlnet_model_list()}


def post_native(url: str, body: dict[str, Any]) -> httpx.Response:
    """/api/generate with JOB's settings (our `sampler` for A1111's `sampler_name`)."""
    job = {**JOB, "sampler": JOB["sampler_name"]}
    job.pop("sampler_name")
    headers = {"Authorization": f"Bearer {token('alice')}"}
    return httpx.post(f"{url}/api/generate", json={**job, **body}, headers=headers, timeout=120)


def native(url: str, body: dict[str, Any]) -> np.ndarray:
    return decode(post_native(url, body))


def b64(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode()


def pixels(result: webuiapi.WebUIApiResult) -> np.ndarray:
    return np.asarray(result.image.convert("RGB"))


def test_listings(api: webuiapi.WebUIApi, url: str, titles: dict[str, str]) -> None:
    assert api.controlnet_version() == 3
    assert set(titles) == {"cn-sd", "cn-union", "ipa-sd15"}
    assert all(len(t.rsplit(" [", 1)[1]) == 9 for t in titles.values())  # 8 hex + "]"
    modules = api.controlnet_module_list()
    assert modules[0] == "none" and {"canny", "depth_anything", "ip-adapter_clip_sd15"} <= set(
        modules
    )
    detail = api.custom_get("controlnet/module_list")["module_detail"]
    assert [s["name"] for s in detail["canny"]["sliders"]] == [
        "Resolution", "Low Threshold", "High Threshold"]  # fmt: skip
    labels = httpx.get(f"{url}/controlnet/module_list?alias_names=true",
                       headers={"Authorization": f"Bearer {token('alice')}"}).json()  # fmt: skip
    assert "depth_midas" in labels["module_list"] and "ip-adapter_clip_h" in labels["module_detail"]
    anonymous = httpx.get(f"{url}/controlnet/model_list")
    assert anonymous.status_code == 401
    assert set(anonymous.json()) == {"error", "detail", "body", "errors"}


def test_unit_equals_native_controlnet(
    api: webuiapi.WebUIApi, url: str, titles: dict[str, str]
) -> None:
    unit = webuiapi.ControlNetUnit(image=Image.fromarray(CONTROL), model=titles["cn-sd"],
                                   weight=0.8, guidance_end=0.7)  # fmt: skip
    ours = pixels(api.txt2img(controlnet_units=[unit], **JOB))
    entry = {"model": "cn-sd", "image": b64(CONTROL), "conditioning_scale": 0.8,
             "guidance_end": 0.7}  # fmt: skip
    assert np.array_equal(ours, native(url, {"controlnets": [entry]}))


def test_control_image_is_cropped_and_resized_as_the_extension_does(
    api: webuiapi.WebUIApi, url: str, titles: dict[str, str]
) -> None:
    """A 128x96 image for a 64x64 output, "Crop and Resize" (the default; the other modes
    are tested in-process): the extension scales it by max(64/96, 64/128) to 85x64 (area
    interpolation when shrinking) and crops the centre."""
    big = smooth_image(128, 96, seed=6)
    unit = webuiapi.ControlNetUnit(image=Image.fromarray(big), model=titles["cn-sd"],
                                   resize_mode="Crop and Resize")  # fmt: skip
    ours = pixels(api.txt2img(controlnet_units=[unit], **JOB))
    fitted = cv2.resize(big, (85, 64), interpolation=cv2.INTER_AREA)[:, 10:74]
    theirs = native(url, {"controlnets": [{"model": "cn-sd", "image": b64(fitted)}]})
    assert np.array_equal(ours, theirs)


def test_union_controlnet_unit_equals_native_control_mode(
    api: webuiapi.WebUIApi, url: str, titles: dict[str, str]
) -> None:
    """A union ControlNet: the extension's `union_control_type` is our `control_mode`."""
    unit = {**webuiapi.ControlNetUnit(image=Image.fromarray(CONTROL),
                                      model=titles["cn-union"]).to_dict(),
            "union_control_type": "Hard Edge"}  # fmt: skip
    body = {**JOB, "override_settings": {"sd_model_checkpoint": "demo-sdxl"},
            "alwayson_scripts": {"ControlNet": {"args": [unit]}}}  # fmt: skip
    resp = httpx.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {token('alice')}"})  # fmt: skip
    assert resp.status_code == 200, resp.text
    ours = np.asarray(Image.open(io.BytesIO(base64.b64decode(resp.json()["images"][0]))))
    entry = {"model": "cn-union", "image": b64(CONTROL), "control_mode": 3}
    assert np.array_equal(ours, native(url, {"model": "demo-sdxl", "controlnets": [entry]}))
    cn_sd = {"model": "cn-sd", "image": b64(CONTROL), "control_mode": 3}
    for model, bad in (("demo-sdxl", {**entry, "control_mode": "pose"}),
                       ("demo-sdxl", {**entry, "control_mode": 6}),  # the tiny one has 6 types
                       ("demo-sdxl", {"model": "cn-union", "image": b64(CONTROL)}),
                       ("demo-sd", cn_sd)):  # fmt: skip
        resp = post_native(url, {"model": model, "controlnets": [bad]})
        assert resp.status_code == 422, resp.text
        assert resp.json()["detail"][0]["field"] == "controlnets[0].control_mode", resp.text


def test_ip_adapter_unit_equals_native_reference(
    api: webuiapi.WebUIApi, url: str, titles: dict[str, str]
) -> None:
    reference = smooth_image(48, 40, seed=4)
    unit = webuiapi.ControlNetUnit(
        image=Image.fromarray(reference), weight=0.6, module="ip-adapter_clip_sd15",
        model=titles["ipa-sd15"],
    )  # fmt: skip
    ours = pixels(api.txt2img(controlnet_units=[unit], **JOB))
    ref = {"name": "ipa-sd15", "scale": 0.6, "images": [b64(reference)]}
    assert np.array_equal(ours, native(url, {"ip_adapter": ref}))


def test_img2img_unit_without_image_takes_the_init_image(
    api: webuiapi.WebUIApi, titles: dict[str, str]
) -> None:
    start = Image.fromarray(smooth_image(64, 64, seed=7))
    args = {**JOB, "images": [start], "denoising_strength": 0.6}
    bare = webuiapi.ControlNetUnit(model=titles["cn-sd"])
    given = webuiapi.ControlNetUnit(image=start, model=titles["cn-sd"])
    ours = pixels(api.img2img(controlnet_units=[bare], **args))
    assert np.array_equal(ours, pixels(api.img2img(controlnet_units=[given], **args)))


def _unit(**kw: Any) -> dict[str, Any]:
    unit = webuiapi.ControlNetUnit(image=Image.fromarray(CONTROL), model="cn-sd").to_dict()
    return {**unit, **kw}


@pytest.mark.parametrize(
    ("unit", "status", "field"),
    [
        (_unit(module="openpose"), 422, "[1].module"),
        (_unit(module="depth_anything"), 422, "[1].module"),  # no depth model installed
        (_unit(model="nope [0123abcd]"), 404, "[1].model"),
        (_unit(model="None"), 422, "[1].model"),
        (_unit(image=""), 422, "[1].image"),
        (_unit(image="%%%"), 422, "[1].image"),
        (_unit(weight="strong"), 422, "[1].weight"),
        (_unit(weight=12), 422, "[1].weight"),
        (_unit(guidance_start=0.9, guidance_end=0.2), 422, "[1].guidance_start"),
        (_unit(resize_mode="Stretch"), 422, "[1].resize_mode"),
        (_unit(module="ip-adapter_clip_sd15", model="cn-sd"), 404, "[1].model"),
    ],
)  # fmt: skip
def test_bad_unit_names_its_field(url: str, unit: dict[str, Any], status: int, field: str) -> None:
    disabled = {"enabled": False, "module": "no such module"}  # ignored, as the extension does
    body = {**JOB, "alwayson_scripts": {"ControlNet": {"args": [disabled, unit]}}}
    resp = httpx.post(f"{url}/sdapi/v1/txt2img", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {token('alice')}"})  # fmt: skip
    assert resp.status_code == status, resp.text
    error = resp.json()
    assert set(error) == {"error", "detail", "body", "errors"}
    assert error["detail"].startswith(FIELD + field), error["detail"]
