"""The self-hosted desktop client's contract, as that client calls it (httpx)."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from pixelpool.testing.server import ServerProcess

JOB = {"prompt": "1girl, solo", "width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def client(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A server whose models dir also holds `spare`, which a test deletes under it."""
    models = tmp_path_factory.mktemp("models")
    shutil.copytree(models_dir, models, dirs_exist_ok=True)
    shutil.copytree(models / "sd15" / "demo-sd", models / "sd15" / "spare")
    with (
        ServerProcess(models, tmp_path_factory.mktemp("data")) as server,
        httpx.Client(base_url=server.url, timeout=120) as c,
    ):
        yield c


def test_health_has_what_the_client_reads(client: httpx.Client) -> None:
    health = client.get("/health", timeout=5).json()
    assert health["status"] == "healthy"
    assert health["available_models"] == ["demo-sd", "spare", "demo-sdxl"]
    assert health["current_model"] == "demo-sd"
    assert health["cuda_available"] is False and health["gpu_name"] is None
    assert health["vram_allocated_gb"] == 0 and health["ip_adapter_loaded"] is False


def test_generate_returns_image_seed_parameters(client: httpx.Client) -> None:
    seed = 2**64 - 1  # the client reads an unsigned 64-bit seed
    body = client.post("/generate", json={**JOB, "seed": seed, "cfg_scale": 5.0}).json()
    assert body["seed"] == seed
    image = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert image.format == "PNG" and image.size == (64, 64)
    params = body["parameters"]
    assert params["model"] == "demo-sd" and params["cfg_scale"] == 5.0 and params["steps"] == 2
    assert params["seed"] == seed and params["prompt"] == "1girl, solo"
    random = client.post("/generate", json=JOB).json()
    assert 0 < random["seed"] < 2**64


def test_models_and_loras(client: httpx.Client) -> None:
    client.post("/generate", json=JOB)
    body = client.get("/models").json()
    assert body["current"] == "demo-sd"
    sd = body["models"]["demo-sd"]
    assert sd["downloaded"] is True and sd["loaded"] is True
    assert sd["default_cfg"] == 7.0 and sd["default_steps"] == 25 and sd["description"]
    assert body["models"]["demo-sdxl"]["loaded"] is False
    assert client.get("/loras").json() == {"loras": []}


def test_reference_image_without_ip_adapter_is_422(client: httpx.Client) -> None:
    ref = base64.b64encode(b"\x89PNG fake").decode()
    resp = client.post("/generate", json={**JOB, "reference_image": ref, "ip_adapter_scale": 0.7})
    assert resp.status_code == 422 and "IP-Adapter" in resp.json()["detail"]


@pytest.mark.parametrize(
    ("fields", "status", "word"),
    [({"model": "nope"}, 404, "nope"), ({"width": 65}, 422, "width"),
     ({"steps": 0}, 422, "steps"), ({"prompt": None}, 422, "prompt"),
     ({"lora_name": "no-such-lora"}, 404, "no-such-lora")],
)  # fmt: skip
def test_errors_are_detail_strings(
    client: httpx.Client, fields: dict[str, object], status: int, word: str
) -> None:
    resp = client.post("/generate", json={**JOB, **fields})
    assert resp.status_code == status
    assert isinstance(resp.json()["detail"], str) and word in resp.json()["detail"]


def test_switch_model(client: httpx.Client) -> None:
    resp = client.post("/switch-model", json={"model": "nope"})
    assert resp.status_code == 400 and "nope" in resp.json()["detail"]
    assert client.post("/switch-model", json={"model": "demo-sdxl"}).json() == {
        "status": "ok", "model": "demo-sdxl", "applies_to": "server"  # auth off: anyone is admin
    }  # fmt: skip
    try:
        assert client.get("/health").json()["current_model"] == "demo-sdxl"
        assert client.get("/models").json()["current"] == "demo-sdxl"
        assert client.post("/generate", json=JOB).json()["parameters"]["model"] == "demo-sdxl"
    finally:
        client.post("/switch-model", json={"model": "demo-sd"})


def test_switch_to_a_model_whose_files_are_gone_is_503(client: httpx.Client) -> None:
    spare = next(
        Path(m["path"]) for m in client.get("/api/model-list").json() if m["name"] == "spare"
    )
    shutil.rmtree(spare)
    resp = client.post("/switch-model", json={"model": "spare"})
    assert resp.status_code == 503 and "missing" in resp.json()["detail"]
