"""Every family through HTTP: model lists with all four families, and /api/upscale,
/api/bgremove, /api/tag returning what the pipeline returns when called directly."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from pixelpool.pipelines import get_family
from pixelpool.pipelines.base import WorkItem
from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess
from pixelpool.testing.tiny_families import FAMILY_MODELS


@pytest.fixture(scope="module")
def tree(extras_dir: Path) -> Path:
    return extras_dir


@pytest.fixture(scope="module")
def client(extras_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=extras_server.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, Path]:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("in") / "in.png"
    Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(path)
    return path.read_bytes(), path


def direct(tree: Path, family: str, name: str, op: str, image: Path, **params: Any) -> Any:
    """The pipeline called in this process, as the worker calls it."""
    path = next((tree / FOLDERS[family]).rglob(f"{Path(name).name}.*"))
    impl = get_family(family)
    loaded = impl.load({"path": str(path), "architecture": None}, "cpu", "auto")
    (result,) = impl.run(loaded, [WorkItem("x", op, {"image": str(image), **params})],
                         lambda *a: None, lambda: False)  # fmt: skip
    return result


FOLDERS = {"upscale": "upscale", "bgremove": "bgremove", "tag": "tagger"}


def _png(resp: httpx.Response) -> np.ndarray:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(resp.content)))


def test_every_model_list_answers_with_every_family(client: httpx.Client) -> None:
    listed = {m["name"]: m for m in client.get("/api/model-list").json()}
    for name, (family, arch) in FAMILY_MODELS.items():
        assert listed[name]["family"] == family
        assert listed[name]["architecture"] == arch
    assert listed["demo-sd"]["samplers"]  # diffusion keeps its own fields
    for route in ("/models", "/v1/models", "/health", "/api/status"):
        assert client.get(route).status_code == 200, route
    ids = [m["id"] or m["name"] for m in client.get("/v1/models").json()["models"]]
    for model_id in ids:
        assert client.get(f"/v1/models/{model_id}").status_code == 200


def test_upscale_equals_the_pipeline(client: httpx.Client, tree: Path, picture) -> None:
    data, path = picture
    resp = client.post("/api/upscale", content=data, params={"model": "tiny-compact"})
    got = _png(resp)
    want = direct(tree, "upscale", "tiny-compact", "upscale", path).images[0]
    assert got.shape == (96, 80, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_bgremove_multipart_equals_the_pipeline(client: httpx.Client, tree: Path, picture) -> None:
    data, path = picture
    params = {"model": "tiny-seg", "mask_only": True}
    resp = client.post("/api/bgremove", files={"image": ("in.png", data, "image/png")},
                       data={"params": json.dumps(params)})  # fmt: skip
    got = _png(resp)
    want = direct(tree, "bgremove", "tiny-seg", "bgremove", path, mask_only=True).images[0]
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_tag_returns_the_pipeline_scores(client: httpx.Client, tree: Path, picture) -> None:
    data, path = picture
    resp = client.post("/api/tag", content=data,
                       params={"model": "wd-tiny/model", "general_threshold": "0.2"})  # fmt: skip
    assert resp.status_code == 200, resp.text
    got = resp.json()
    want = direct(tree, "tag", "wd-tiny/model", "tag", path, general_threshold=0.2).info
    assert set(got["tags"]) == set(want["tags"])
    for tag, score in want["tags"].items():
        assert got["tags"][tag] == pytest.approx(score, abs=1e-5)


def test_enqueue_then_fetch_the_result(client: httpx.Client, picture) -> None:
    data, _ = picture
    resp = client.post("/api/enqueue/tag", content=data, params={"model": "jtp/JTP_tiny"})
    assert resp.status_code == 200, resp.text
    job_id = resp.json()["job_id"]
    assert wait_for_job(client, job_id)["status"] == "completed"
    result = client.get(f"/api/job/{job_id}/result")
    assert result.status_code == 200 and "tags" in result.json()


@pytest.mark.parametrize(
    ("route", "body", "params", "status", "field"),
    [
        ("/api/upscale", b"not an image", {"model": "tiny-esrgan"}, 422, "image"),
        ("/api/upscale", None, {"model": "no-such-model"}, 404, "model"),
        ("/api/upscale", None, {"model": "demo-sd"}, 422, "model"),
        ("/api/tag", None, {"model": "tiny-seg"}, 422, "model"),
        ("/api/upscale", None, {"model": "tiny-esrgan", "scale": "x"}, 422, "scale"),
        ("/api/bgremove", None, {"model": "tiny-seg", "image": "/etc/passwd"}, 422, "image"),
        ("/api/bgremove", None, {"model": "tiny-seg", "colour": "red"}, 422, "colour"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    client: httpx.Client, picture, route: str, body: bytes | None, params: dict, status: int,
    field: str,
) -> None:  # fmt: skip
    resp = client.post(route, content=body if body is not None else picture[0], params=params)
    assert resp.status_code == status, resp.text
    assert field in resp.text


def test_too_many_pixels_is_a_413(client: httpx.Client) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8000, 8000)).save(buf, format="PNG")
    resp = client.post("/api/upscale", content=buf.getvalue(), params={"model": "tiny-esrgan"})
    assert resp.status_code == 413 and "image" in resp.text
