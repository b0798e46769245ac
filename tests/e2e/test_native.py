"""The native /api dialect against a real server (uvicorn subprocess + worker process)."""

import io
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

BASE = {"prompt": "a photo of a red fox", "negative_prompt": "blurry", "width": 64,
        "height": 80, "steps": 3, "cfg_scale": 6.0, "seed": 42}  # fmt: skip


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> httpx.Client:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def _png(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(resp.content)))


def test_health_is_fast_and_ready(client: httpx.Client) -> None:
    assert client.get("/health").json()["status"] == "healthy"
    assert client.get("/ready").json()["ready"] is True


def test_generate_returns_png_of_requested_size(client: httpx.Client) -> None:
    resp = client.post("/api/generate", json=BASE)
    img = _png(resp)
    assert img.shape == (80, 64, 3)
    assert resp.headers["x-seed"] == "42"
    meta = Image.open(io.BytesIO(resp.content)).info
    assert "Seed: 42" in meta["parameters"] and "Steps: 3" in meta["parameters"]


def test_same_seed_same_image_other_seed_other_image(client: httpx.Client) -> None:
    a = _png(client.post("/api/generate", json=BASE))
    b = _png(client.post("/api/generate", json=BASE))
    c = _png(client.post("/api/generate", json={**BASE, "seed": 43}))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_seed_is_reported(client: httpx.Client) -> None:
    for seed in (0, -1, None):
        body = {**BASE, "seed": seed}
        resp = client.post("/api/generate", json=body)
        assert resp.status_code == 200
        assert int(resp.headers["x-seed"]) > 0


@pytest.mark.parametrize(("model", "arch"), [("demo-sd", "sd15"), ("demo-sdxl", "sdxl")])
def test_parity_with_direct_diffusers(
    client: httpx.Client, models_dir: Path, model: str, arch: str
) -> None:
    ours = _png(client.post("/api/generate", json={**BASE, "model": model}))
    folder = "sd15" if arch == "sd15" else "sdxl"
    pipe = DiffusionPipeline.from_pretrained(models_dir / folder / model, local_files_only=True)
    ref = pipe(
        BASE["prompt"],
        negative_prompt=BASE["negative_prompt"],
        width=BASE["width"],
        height=BASE["height"],
        num_inference_steps=BASE["steps"],
        guidance_scale=BASE["cfg_scale"],
        generator=torch.Generator("cpu").manual_seed(BASE["seed"]),
    ).images[0]
    assert np.abs(ours.astype(int) - np.asarray(ref).astype(int)).max() <= 1


def test_enqueue_poll_result(client: httpx.Client) -> None:
    job_id = client.post("/api/enqueue/generate", json={**BASE, "model": "demo-sdxl"}).json()[
        "job_id"
    ]
    body = wait_for_job(client, job_id)
    assert body["status"] == "completed"
    assert body["progress"] == 1.0 and body["denoise_step"] == body["denoise_total"] == 3
    assert body["gpus"] == ["cpu"] and body["error"] is None and body["seeds"] == [42]
    assert body["elapsed_s"] >= body["gpu_time_s"] > 0
    img = _png(client.get(f"/api/job/{job_id}/result"))
    assert img.shape == (80, 64, 3)


def test_result_is_202_while_running_then_200(client: httpx.Client) -> None:
    slow = {**BASE, "steps": 40, "width": 256, "height": 256}
    job_id = client.post("/api/enqueue/generate", json=slow).json()["job_id"]
    early = client.get(f"/api/job/{job_id}/result")
    assert early.status_code == 202 and early.json()["status"] in ("queued", "running")
    assert wait_for_job(client, job_id)["status"] == "completed"
    assert client.get(f"/api/job/{job_id}/result").status_code == 200


def test_cancel_running_job(client: httpx.Client) -> None:
    slow = {**BASE, "steps": 150, "width": 256, "height": 256}
    job_id = client.post("/api/enqueue/generate", json=slow).json()["job_id"]
    while client.get(f"/api/job/{job_id}").json()["denoise_step"] < 1:
        time.sleep(0.05)
    assert client.post(f"/api/job/{job_id}/cancel").json()["status"] in ("cancelling", "cancelled")
    body = wait_for_job(client, job_id)
    assert body["status"] == "cancelled" and body["denoise_step"] < 150
    assert client.get(f"/api/job/{job_id}/result").status_code == 409
    assert client.post(f"/api/job/{job_id}/cancel").json()["status"] == "cancelled"


def test_status_and_model_list(client: httpx.Client) -> None:
    status = client.get("/api/status").json()
    assert status["ready"] and status["queue_depth"] == 0
    (device,) = status["devices"]
    assert device["id"] == "cpu" and "cache" in device and device["total_memory_bytes"] > 0
    models = {m["name"]: m for m in client.get("/api/model-list").json()}
    assert models["demo-sd"]["type"] == "sd15" and models["demo-sdxl"]["type"] == "sdxl"
    fingerprint = models["demo-sd"]["id"]
    assert fingerprint and len(fingerprint) == 64
    by_id = client.post("/api/generate", json={**BASE, "model": fingerprint})
    assert by_id.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({**BASE, "model": "no-such-model"}, 404, "no-such-model"),
        ({**BASE, "width": 65}, 422, "width"),
        ({**BASE, "height": 4096}, 422, "height"),
        ({**BASE, "width": 32}, 422, "width"),
        ({**BASE, "width": 0}, 422, "width"),
        ({**BASE, "steps": 0}, 422, "steps"),
        ({**BASE, "steps": 151}, 422, "steps"),
        ({**BASE, "steps": "many"}, 422, "steps"),
        ({**BASE, "cfg_scale": 0.5}, 422, "cfg_scale"),
        ({**BASE, "cfg_scale": 31}, 422, "cfg_scale"),
        ({k: v for k, v in BASE.items() if k != "prompt"}, 422, "prompt"),
        ({**BASE, "prompt": 5}, 422, "prompt"),
        ({**BASE, "stepz": 3}, 422, "stepz"),
        ({**BASE, "sampler": "Warp Drive"}, 422, "sampler"),
        ({**BASE, "priority": 0}, 422, "priority"),
        ({**BASE, "output_format": "gif"}, 422, "output_format"),
        ({**BASE, "seed": 2**70}, 422, "seed"),
        ({**BASE, "prompt": "x" * 20_000}, 422, "prompt"),
        ([1, 2], 422, "body"),
    ],
)
def test_bad_input_names_the_field(
    client: httpx.Client, body: Any, status: int, field: str
) -> None:
    for path in ("/api/generate", "/api/enqueue/generate"):
        resp = client.post(path, json=body)
        assert resp.status_code == status, resp.text[:300]
        assert field in resp.json()["error"]


def test_malformed_json_and_unknown_routes(client: httpx.Client) -> None:
    resp = client.post(
        "/api/generate", content=b'{"prompt": ', headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400 and "malformed JSON" in resp.json()["error"]
    assert client.get("/api/job/does-not-exist").status_code == 404
    assert client.get("/api/job/does-not-exist/result").status_code == 404
    assert client.post("/api/job/does-not-exist/cancel").status_code == 404
    resp = client.post("/api/enqueue/teleport", json=BASE)
    assert resp.status_code == 404 and "teleport" in resp.json()["error"]
    assert client.get("/api/nothing-here").status_code == 404


def test_bad_input_never_reached_a_worker(client: httpx.Client) -> None:
    before = client.get("/api/status").json()["devices"][0]["cache"]
    client.post("/api/generate", json={**BASE, "width": 65})
    client.post("/api/generate", json={**BASE, "model": "nope"})
    after = client.get("/api/status").json()["devices"][0]["cache"]
    assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])


def test_idempotency_key_returns_same_job(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "abc-123"}
    a = client.post("/api/enqueue/generate", json=BASE, headers=headers).json()["job_id"]
    b = client.post("/api/enqueue/generate", json=BASE, headers=headers).json()["job_id"]
    assert a == b
    wait_for_job(client, a)
