"""The inference dialect (`/v1/infer`, `/v1/models/{fingerprint}`, service info) with httpx."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from pixelpool.testing.server import ServerProcess


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def fingerprint(client: httpx.Client) -> str:
    models = client.get("/v1/models").json()["models"]
    return next(m["id"] for m in models if m["name"] == "demo-sd")


def request(model_id: str, **fields: Any) -> dict[str, Any]:
    body = {"id": "req-1", "model_id": model_id, "prompt": "a lake", "width": 256,
            "height": 256, "num_inference_steps": 2, "seed": 42}  # fmt: skip
    return {**body, **fields}


def test_service_info_and_health(client: httpx.Client) -> None:
    root = client.get("/").json()
    assert root["latest"] == "/v1" and root["links"]["infer"] == "/v1/infer"
    assert client.get("/v1").json()["links"]["models"] == "/v1/models"
    health = client.get("/v1/health").json()
    assert health["status"] == "healthy" and health["available_models"] == ["demo-sd", "demo-sdxl"]


def test_models_list_both_shapes(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and body["count"] == 2 == len(body["data"])
    (sd,) = [m for m in body["models"] if m["name"] == "demo-sd"]
    assert len(sd["id"]) == 64 and sd["path"] == "sd15/demo-sd" and sd["size"] > 0
    assert sd["extension"] == ""  # a diffusers folder


def test_model_by_fingerprint_or_prefix(client: httpx.Client, fingerprint: str) -> None:
    for key in (fingerprint, fingerprint[:12], "sha256:" + fingerprint):
        body = client.get(f"/v1/models/{key}").json()
        assert body["id"] == fingerprint and body["name"] == "demo-sd"
        assert {"size", "path", "extension"} <= set(body)
    resp = client.get("/v1/models/" + "f" * 64)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("path", ["/v1/infer", "/infer"])
def test_infer_two_images(client: httpx.Client, fingerprint: str, path: str) -> None:
    resp = client.post(path, json=request(fingerprint, num_images=2, negative_prompt="fog"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"] == "req-1" and body["model_id"] == fingerprint
    assert body["prompt"] == "a lake" and body["negative_prompt"] == "fog"
    assert body["num_inference_steps"] == 2 and body["guidance_scale"] == 7.5
    assert body["processing_time"] > 0
    assert [(i["seed"], i["width"], i["height"]) for i in body["images"]] == [
        (42, 256, 256), (43, 256, 256)
    ]  # fmt: skip
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0]["base64"])))
    assert image.format == "PNG" and image.size == (256, 256)


def test_defaults_native_size_and_random_seed(client: httpx.Client, fingerprint: str) -> None:
    body = {"id": "x", "model_id": fingerprint, "prompt": "a lake", "num_inference_steps": 1}
    resp = client.post("/v1/infer", json=body).json()
    (image,) = resp["images"]
    assert (image["width"], image["height"]) == (512, 512) and image["seed"] > 0
    assert resp["guidance_scale"] == 7.5 and resp["negative_prompt"] is None


BAD = [
    ({"num_images": 5}, "num_images"),
    ({"num_images": 0}, "num_images"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"num_inference_steps": 151}, "num_inference_steps"),
    ({"guidance_scale": 0.5}, "guidance_scale"),
    ({"guidance_scale": 21}, "guidance_scale"),
    ({"width": 128}, "width"),
    ({"height": 2048}, "height"),
    ({"width": 260}, "width"),
    ({"prompt": "x" * 1001}, "prompt"),
    ({"prompt": ""}, "prompt"),
    ({"id": None}, "id"),
    ({"seed": 2**70}, "seed"),
    ({"sampler": "Euler"}, "sampler"),
]


@pytest.mark.parametrize(("fields", "param"), BAD)
def test_bounds(client: httpx.Client, fingerprint: str, fields: dict[str, Any], param: str) -> None:
    resp = client.post("/v1/infer", json=request(fingerprint, **fields))
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
    native = client.post("/infer", json=request(fingerprint, **fields))
    assert native.status_code == 422 and param in native.json()["error"]


def test_unknown_model(client: httpx.Client) -> None:
    resp = client.post("/v1/infer", json=request("0123456789abcdef"))
    assert resp.status_code == 404 and resp.json()["error"]["param"] == "model_id"
    assert client.post("/infer", json=request("nope")).status_code == 404
