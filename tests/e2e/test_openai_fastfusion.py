"""What existing clients send: FastFusion's OpenAI extension fields (through the official
`openai` SDK's `extra_body`) and A1111 sampler names with the schedule in the name."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from pixelpool.testing.server import ServerProcess

from .diffusion_server import decode, png_bytes, smooth_image

BASE = {"model": "demo-sd", "prompt": "a photo of a red fox", "size": "64x64"}
NATIVE = {"model": "demo-sd", "prompt": "a photo of a red fox", "width": 64, "height": 64}
LORA = [{"name": "style", "weight": 0.8}]


@pytest.fixture(scope="module")
def server(tuned_server: ServerProcess) -> ServerProcess:
    return tuned_server


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def pixels(resp: Any) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(resp.data[0].b64_json))))


def info(resp: Any) -> str:
    return Image.open(io.BytesIO(base64.b64decode(resp.data[0].b64_json))).info["parameters"]


def test_fastfusion_fields_are_honoured(client: openai.OpenAI, server: ServerProcess) -> None:
    """num_inference_steps, guidance_scale and lora_settings give what the native route
    gives with steps, cfg_scale and loras; style is accepted."""
    ff = {"num_inference_steps": 3, "guidance_scale": 6.0, "lora_settings": LORA, "seed": 5}
    resp = client.images.generate(**BASE, style="vivid", extra_body=ff)
    assert "Steps: 3," in info(resp) and "CFG scale: 6.0" in info(resp)
    assert "style: 0.8" in info(resp)
    native = httpx.post(
        f"{server.url}/api/generate", timeout=120,
        json={**NATIVE, "steps": 3, "cfg_scale": 6.0, "seed": 5, "loras": LORA},
    )  # fmt: skip
    assert np.array_equal(pixels(resp), decode(native))
    plain = client.images.generate(**BASE, extra_body={**ff, "lora_settings": []})
    assert not np.array_equal(pixels(resp), pixels(plain))
    # FastFusion's style is a free-form hint; pixelpool has no prompt styles: no effect.
    styled = client.images.generate(**BASE, extra_body={**ff, "style": "anime"})
    assert np.array_equal(pixels(resp), pixels(styled))


def test_edits_and_variations_take_them_as_form_fields(client: openai.OpenAI) -> None:
    """Multipart: FastFusion sends lora_settings as a JSON string."""
    image = png_bytes(smooth_image(64, 64))
    ff = {"num_inference_steps": 2, "guidance_scale": 5.0, "seed": 3, "strength": 0.6}
    edit = client.images.edit(
        image=("in.png", image, "image/png"), prompt="a fox", size="64x64", model="demo-sd",
        extra_body={**ff, "lora_settings": json.dumps(LORA)},
    )  # fmt: skip
    assert "Steps: 2," in info(edit) and "style: 0.8" in info(edit)
    same = client.images.edit(
        image=("in.png", image, "image/png"), prompt="a fox", size="64x64", model="demo-sd",
        extra_body={**ff, "steps": 2, "loras": json.dumps(LORA)},
    )  # fmt: skip
    assert np.array_equal(pixels(edit), pixels(same))
    variation = client.images.create_variation(
        image=("in.png", image, "image/png"), size="64x64", model="demo-sd",
        extra_body={**ff, "lora_settings": json.dumps(LORA)},
    )  # fmt: skip
    assert "Steps: 2," in info(variation) and "style: 0.8" in info(variation)


BAD = [
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"num_inference_steps": "many"}, "num_inference_steps"),
    ({"num_inference_steps": 3, "steps": 4}, "num_inference_steps"),
    ({"guidance_scale": "high"}, "guidance_scale"),
    ({"guidance_scale": 500}, "guidance_scale"),
    ({"lora_settings": [{"name": "style", "weight": 99}]}, "lora_settings"),
    ({"lora_settings": [{"weight": 1}]}, "lora_settings"),
    ({"lora_settings": "style"}, "lora_settings"),
    ({"style": 5}, "style"),
    ({"sampler": "DPM++ 9M Karras"}, "sampler"),
    ({"sampler": "DPM++ 2M Karras", "scheduler": "Exponential"}, "scheduler"),
]


@pytest.mark.parametrize(("extra", "param"), BAD)
def test_bad_values_are_400_naming_the_field(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(**BASE, extra_body={"num_inference_steps": 2, **extra})
    assert str(err.value.param).split(".")[0] == param, err.value.body  # or lora_settings.0.weight
    assert param in err.value.message


def test_unknown_lora_is_404_naming_lora_settings(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.images.generate(**BASE, extra_body={"lora_settings": [{"name": "nope"}]})
    assert err.value.param == "lora_settings" and "nope" in err.value.message


def test_a1111_sampler_names(client: openai.OpenAI, server: ServerProcess) -> None:
    """'DPM++ 2M Karras' is 'DPM++ 2M' + Karras on the native route and on /v1, and it
    replaces a model's default sampler (demo-sd-tuned's manifest says 'Euler a')."""
    body = {**NATIVE, "steps": 2, "seed": 9}
    named = httpx.post(
        f"{server.url}/api/generate", json={**body, "sampler": "DPM++ 2M Karras"}, timeout=120
    )
    assert named.status_code == 200, named.text
    split = {**body, "sampler": "DPM++ 2M", "scheduler": "Karras"}
    assert np.array_equal(decode(named), decode(httpx.post(f"{server.url}/api/generate",
                                                          json=split, timeout=120)))  # fmt: skip
    assert (
        "Sampler: DPM++ 2M, Schedule type: Karras"
        in Image.open(io.BytesIO(named.content)).info["parameters"]
    )
    v1 = client.images.generate(
        **BASE, extra_body={"num_inference_steps": 2, "seed": 9, "sampler": "dpm++ 2m karras"}
    )
    assert np.array_equal(pixels(v1), decode(named))
    tuned = httpx.post(
        f"{server.url}/api/generate", timeout=120,
        json={**body, "model": "demo-sd-tuned", "sampler": "DPM++ SDE Karras"},
    )  # fmt: skip
    assert tuned.status_code == 200, tuned.text
    assert (
        "Sampler: DPM++ SDE, Schedule type: Karras"
        in Image.open(io.BytesIO(tuned.content)).info["parameters"]
    )


def test_native_unknown_sampler_lists_names_and_schedules(server: ServerProcess) -> None:
    resp = httpx.post(f"{server.url}/api/generate", json={**NATIVE, "sampler": "Warp Karras"})
    assert resp.status_code == 422
    assert "sampler" in resp.text and "DPM++ 2M" in resp.text and "Exponential" in resp.text
