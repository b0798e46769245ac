"""The OpenAI Images API, driven by the official `openai` SDK (sync and async)."""

from __future__ import annotations

import asyncio
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
from websockets.sync.client import connect

from pixelpool.testing.server import ServerProcess

FAST = {"steps": 2}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


def decode(b64: str | None) -> Image.Image:
    assert b64
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_b64_json_n2_seeds_and_size(client: openai.OpenAI) -> None:
    resp = client.images.generate(
        prompt="a red fox", n=2, size="64x80", response_format="b64_json",
        extra_body={**FAST, "seed": 42},
    )  # fmt: skip
    assert resp.size == "64x80" and resp.output_format == "png" and resp.created > 0
    images = [decode(d.b64_json) for d in resp.data or []]
    assert [im.size for im in images] == [(64, 80), (64, 80)]
    assert [d.model_extra["seed"] for d in resp.data or []] == [42, 43]
    assert "Seed: 42" in images[0].info["parameters"]


def test_same_image_as_the_native_route(client: openai.OpenAI, server: ServerProcess) -> None:
    """A thin translation: the same parameters give the same pixels as /api/generate."""
    extra = {"seed": 7, "steps": 3, "guidance_scale": 6.0, "negative_prompt": "blurry"}
    resp = client.images.generate(prompt="a fox", size="64x64", extra_body=extra)
    ours = np.asarray(decode(resp.data[0].b64_json))  # type: ignore[index]
    native = httpx.post(
        f"{server.url}/api/generate", timeout=120,
        json={"prompt": "a fox", "width": 64, "height": 64, "seed": 7, "steps": 3,
              "cfg_scale": 6.0, "negative_prompt": "blurry"},
    )  # fmt: skip
    assert np.array_equal(ours, np.asarray(Image.open(io.BytesIO(native.content))))


def test_url_results_and_output_formats(client: openai.OpenAI) -> None:
    resp = client.images.generate(
        prompt="a fox", n=2, size="64x64", response_format="url", extra_body=FAST
    )
    for item in resp.data or []:
        assert item.url and item.url.endswith(".png") and item.b64_json is None
        got = httpx.get(item.url)
        assert got.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(got.content)).size == (64, 64)
    sizes = {}
    for quality in (10, 95):
        resp = client.images.generate(
            prompt="a fox", size="128x128", response_format="url", output_format="jpeg",
            output_compression=quality, extra_body={**FAST, "seed": 1},
        )  # fmt: skip
        got = httpx.get(resp.data[0].url)  # type: ignore[arg-type, index]
        assert got.headers["content-type"] == "image/jpeg"
        sizes[quality] = len(got.content)
    assert sizes[10] < sizes[95]
    webp = client.images.generate(
        prompt="a fox", size="64x64", output_format="webp", extra_body=FAST
    )
    assert decode(webp.data[0].b64_json).format == "WEBP"  # type: ignore[index]


def test_expired_or_unknown_url_is_404(client: openai.OpenAI, server: ServerProcess) -> None:
    resp = httpx.get(f"{server.url}/v1/images/data/{'0' * 32}.png")
    assert resp.status_code == 404 and resp.json()["error"]["type"] == "invalid_request_error"


PRESETS = [("low", 12), ("standard", 20), ("hd", 40), ("xhigh", 40), ("auto", 25)]


@pytest.mark.parametrize(("quality", "steps"), PRESETS)
def test_quality_presets_set_steps(client: openai.OpenAI, quality: Any, steps: int) -> None:
    resp = client.images.generate(prompt="a fox", size="64x64", quality=quality)
    assert f"Steps: {steps}," in decode(resp.data[0].b64_json).info["parameters"]  # type: ignore[index]
    assert resp.quality == quality


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["demo-sd", "demo-sdxl"]
    model = client.models.retrieve("demo-sd")
    assert model.object == "model" and model.owned_by == "pixelpool" and len(model.id) == 64
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


def test_openai_model_names_mean_the_default_model(client: openai.OpenAI) -> None:
    resp = client.images.generate(prompt="a fox", model="dall-e-3", size="64x64", extra_body=FAST)
    assert "Model: demo-sd" in decode(resp.data[0].b64_json).info["parameters"]  # type: ignore[index]
    resp = client.images.generate(prompt="a fox", model="demo-sdxl", size="64x64", extra_body=FAST)
    assert "Model: demo-sdxl" in decode(resp.data[0].b64_json).info["parameters"]  # type: ignore[index]


def check_stream(events: list[Any], partials: int, size: tuple[int, int]) -> None:
    kinds = [e.type for e in events]
    assert kinds == ["image_generation.partial_image"] * partials + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:-1]] == list(range(partials))
    for event in events:
        assert decode(event.b64_json).size == size and event.size == f"{size[0]}x{size[1]}"
    assert events[-1].usage.total_tokens == 0 and events[-1].output_format == "png"


def test_stream_partial_images(client: openai.OpenAI) -> None:
    stream = client.images.generate(
        prompt="a fox", size="64x64", stream=True, partial_images=2, extra_body={"steps": 6}
    )
    check_stream(list(stream), 2, (64, 64))
    none = client.images.generate(prompt="a fox", size="64x64", stream=True, extra_body=FAST)
    check_stream(list(none), 0, (64, 64))


def test_async_client_generate_and_stream(server: ServerProcess) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x") as client:
            resp, stream = await asyncio.gather(
                client.images.generate(prompt="a fox", size="64x64", n=2, extra_body=FAST),
                client.images.generate(
                    prompt="a fox", size="64x64", stream=True, partial_images=3,
                    extra_body={"steps": 8},
                ),
            )  # fmt: skip
            assert len(resp.data or []) == 2
            check_stream([e async for e in stream], 3, (64, 64))
            with pytest.raises(openai.BadRequestError):
                await client.images.generate(prompt="a fox", size="1x1")

    asyncio.run(main())


BAD = [
    ({"size": "65x64"}, "size"),
    ({"size": "big"}, "size"),
    ({"size": "8192x8192"}, "size"),
    ({"n": 5}, "n"),
    ({"n": 0}, "n"),
    ({"quality": "ultra"}, "quality"),
    ({"background": "transparent"}, "background"),
    ({"output_format": "gif"}, "output_format"),
    ({"output_compression": 101}, "output_compression"),
    ({"partial_images": 4, "stream": True}, "partial_images"),
    ({"n": 2, "stream": True}, "n"),
    ({"extra_body": {"steps": 0}}, "steps"),
    ({"extra_body": {"guidance_scale": 99}}, "guidance_scale"),
    ({"extra_body": {"sampler": "Warp Drive"}}, "sampler"),
    ({"extra_body": {"seed": 2**70}}, "seed"),
    ({"extra_body": {"stepz": 3}}, "stepz"),
    ({"prompt": ""}, "prompt"),
    ({"prompt": "x" * 20_000}, "prompt"),
]


@pytest.mark.parametrize(("args", "param"), BAD)
def test_bad_input_is_bad_request_naming_the_param(
    client: openai.OpenAI, args: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(**{"prompt": "a fox", **args})
    assert info.value.param == param, info.value.body
    assert info.value.type == "invalid_request_error" and param in info.value.message


def test_transparent_background_says_why(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="background-removal model"):
        client.images.generate(prompt="a fox", background="transparent")


def test_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.images.generate(prompt="a fox", model="no-such-model")
    assert info.value.code == "model_not_found" and info.value.param == "model"
    with pytest.raises(openai.NotFoundError) as info:
        client.images.generate(prompt="a fox", extra_body={"loras": [{"name": "no-such-lora"}]})
    assert info.value.param == "loras" and "no-such-lora" in info.value.message


def test_envelope_for_malformed_json_and_unknown_routes(server: ServerProcess) -> None:
    resp = httpx.post(
        f"{server.url}/v1/images/generations", content=b'{"prompt": ',
        headers={"content-type": "application/json"},
    )  # fmt: skip
    assert resp.status_code == 400
    assert resp.json()["error"]["message"] == "malformed JSON body"
    resp = httpx.get(f"{server.url}/v1/nothing-here")
    assert resp.status_code == 404 and set(resp.json()["error"]) == {
        "message", "type", "param", "code"
    }  # fmt: skip
    resp = httpx.post(f"{server.url}/v1/images/generations", json=[1, 2])
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def png(mode: str = "RGB", size: tuple[int, int] = (64, 64), hole: bool = False) -> bytes:
    """A test input: a gradient image, or (RGBA, hole) a mask transparent in the middle."""
    w, h = size
    ramp = np.linspace(0, 255, w * h * len(mode), dtype=np.uint8).reshape(h, w, len(mode))
    if hole:
        ramp[..., 3] = 255
        ramp[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4, 3] = 0
    buf = io.BytesIO()
    Image.fromarray(ramp, mode).save(buf, format="PNG")
    return buf.getvalue()


EDIT = {"seed": 11, "steps": 4, "strength": 0.5}


@pytest.mark.parametrize(("masked", "native"), [(True, "/api/inpaint"), (False, "/api/img2img")])
def test_edit_matches_the_native_route(
    client: openai.OpenAI, server: ServerProcess, masked: bool, native: str
) -> None:
    image, mask = png(), png("RGBA", hole=True)
    kwargs: dict[str, Any] = {"mask": ("mask.png", mask, "image/png")} if masked else {}
    resp = client.images.edit(
        image=("in.png", image, "image/png"), prompt="a boat", n=2, extra_body=EDIT, **kwargs
    )
    outs = [decode(d.b64_json) for d in resp.data or []]
    assert [o.size for o in outs] == [(64, 64)] * 2 and resp.size == "64x64"
    files = [("image", ("in.png", image, "image/png"))]
    files += [("mask", ("mask.png", mask, "image/png"))] if masked else []
    params = {"prompt": "a boat", "seed": 11, "steps": 4, "strength": 0.5}
    ref = httpx.post(
        server.url + native, files=files, data={"params": json.dumps(params)}, timeout=120
    )
    assert ref.status_code == 200, ref.text
    theirs = np.asarray(Image.open(io.BytesIO(ref.content))).astype(int)
    diff = np.abs(np.asarray(outs[0]).astype(int) - theirs)
    assert diff.max() <= 1, (diff.max(), (diff > 0).mean())  # batched with n=2: float noise


def test_edit_stream_and_variation_url(client: openai.OpenAI) -> None:
    stream = client.images.edit(
        image=("in.png", png(), "image/png"), prompt="a boat", stream=True, partial_images=1,
        extra_body={"steps": 6, "strength": 1.0},
    )  # fmt: skip
    events = list(stream)
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    resp = client.images.create_variation(
        image=("in.png", png(size=(80, 64)), "image/png"), response_format="url", size="64x64",
        extra_body={"steps": 4, "prompt": "a painting"},
    )  # fmt: skip
    got = httpx.get(resp.data[0].url)  # type: ignore[arg-type, index]
    assert Image.open(io.BytesIO(got.content)).size == (64, 64)
    default = client.images.create_variation(image=png(size=(80, 64)), extra_body={"steps": 4})
    assert decode(default.data[0].b64_json).size == (80, 64)  # type: ignore[index]


def test_async_edit(server: ServerProcess) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="x") as client:
            resp = await client.images.edit(
                image=("in.png", png(), "image/png"), mask=("m.png", png("RGBA", hole=True)),
                prompt="a boat", extra_body={"steps": 4},
            )  # fmt: skip
            assert decode(resp.data[0].b64_json).size == (64, 64)  # type: ignore[index]

    asyncio.run(main())


def test_bad_edits_and_variations(client: openai.OpenAI, server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(image=("x.png", b"not an image", "image/png"), prompt="a")
    assert info.value.param == "image"
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(image=[("a.png", png()), ("b.png", png())], prompt="a")
    assert info.value.param == "image" and "exactly one" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.images.edit(image=png(), prompt="a", n=9)
    assert info.value.param == "n"
    with pytest.raises(openai.NotFoundError):
        client.images.create_variation(image=png(), model="no-such-model")
    with pytest.raises(openai.BadRequestError) as info:
        client.images.create_variation(image=png(), extra_body={"strength": 2})
    assert info.value.param == "strength"
    resp = httpx.post(f"{server.url}/v1/images/edits", json={"prompt": "a"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "image"
    resp = httpx.post(
        f"{server.url}/v1/images/variations",
        files={"image": ("a.png", png())}, data={"colour": "red"},
    )  # fmt: skip
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "colour"


def test_hanging_up_on_a_stream_cancels_its_job(server: ServerProcess) -> None:
    body = {"prompt": "a fox", "size": "128x128", "stream": True, "partial_images": 3,
            "steps": 150}  # fmt: skip
    with connect(server.url.replace("http://", "ws://") + "/api/ws") as ws:
        with httpx.stream(
            "POST", f"{server.url}/v1/images/generations", json=body, timeout=120
        ) as resp:
            assert resp.status_code == 200
            job_id = None
            while job_id is None:  # the job is running: hang up
                event = json.loads(ws.recv(timeout=120))
                if event.get("type") == "progress":
                    job_id = event["job_id"]
        while event.get("type") not in ("completed", "failed", "cancelled"):
            event = json.loads(ws.recv(timeout=120))
            event = event if event.get("job_id") == job_id else {}
    assert event["type"] == "cancelled"
