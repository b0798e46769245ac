"""The Vision Models API dialect on a real server with tiny vision models: each
`/inference/*` route equals the `transformers` model + processor called directly,
RLE decodes with pycocotools to the dense mask, the seed's job routes work per key,
models load and unload, and bad input is a 4xx naming the field in `{"detail"}`."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForDepthEstimation,
    AutoModelForZeroShotObjectDetection,
    AutoProcessor,
    Sam3Model,
    Sam3Processor,
)

from pixelpool.api.vision.encode import npy_to_array
from pixelpool.testing.server import ServerProcess
from pixelpool.testing.tiny_vision import write_vision_models

from ..pipelines.vision_helpers import picture
from .auth_helpers import stored_key

MODELS = ["tiny-sam3", "tiny-gdino", "tiny-depth", "tiny-dinov3"]


class Api:
    def __init__(self, url: str, key: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=120,
                                   headers={"Authorization": f"Bearer {key}"})  # fmt: skip

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        # ASCII JSON (\u escapes), so a test can send an unpaired surrogate
        data = json.dumps(body or {})
        return self.client.post(path, content=data, headers={"Content-Type": "application/json"})

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params)

    def ok(self, resp: httpx.Response) -> dict[str, Any]:
        assert resp.status_code == 200, resp.text
        return resp.json()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vision-api") / "models"
    write_vision_models(root, MODELS)
    return root / "vision"


@pytest.fixture(scope="module")
def keys(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Api]]:
    data = tmp_path_factory.mktemp("data")
    names = {"alice": stored_key(data, "alice"), "bob": stored_key(data, "bob"),
             "ops": stored_key(data, "ops", ("admin",))}  # fmt: skip
    env = {"PIXELPOOL_LIMITS__FETCH_URLS": "true"}
    with ServerProcess(models.parent, data, env=env) as server:
        yield {name: Api(server.url, key) for name, key in names.items()}


@pytest.fixture(scope="module")
def alice(keys: dict[str, Api]) -> Api:
    return keys["alice"]


@pytest.fixture(scope="module")
def pic(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Image.Image]:
    path, image = picture(tmp_path_factory.mktemp("pics"), 40, 56, seed=3)
    return base64.b64encode(Path(path).read_bytes()).decode(), image


def direct_sam3(path: Path, image: Image.Image, prompt: str) -> dict[str, Any]:
    processor = Sam3Processor.from_pretrained(str(path), local_files_only=True)
    model = Sam3Model.from_pretrained(str(path), local_files_only=True).eval()
    with torch.inference_mode():
        out = model(**processor(images=image, text=prompt, return_tensors="pt"))
    return processor.post_process_instance_segmentation(
        out, threshold=0.0, mask_threshold=0.5, target_sizes=[(image.height, image.width)]
    )[0]


def test_sam3_equals_transformers_and_rle_decodes_to_the_mask(
    alice: Api, pic: tuple[str, Image.Image], models: Path
) -> None:
    b64, image = pic
    body = {"images": [b64], "prompts": ["person", "car"], "threshold": 0.0,
            "output_format": "dense"}  # fmt: skip
    dense = alice.ok(alice.post("/inference/sam3", body))
    assert dense["model_type"] == "sam3" and dense["model"] == "tiny-sam3"
    (result,) = dense["results"]
    assert (result["width"], result["height"]) == (56, 40)
    rle = alice.ok(alice.post("/inference/sam3", {**body, "output_format": "rle"}))
    for q, entry in enumerate(result["prompts"]):
        expected = direct_sam3(models / "tiny-sam3", image, entry["prompt"])
        masks = np.asarray(entry["masks"], dtype=bool)
        assert masks.shape[0] == len(entry["instances"]) > 0
        np.testing.assert_array_equal(masks, expected["masks"].numpy().astype(bool))
        boxes = [inst["box"] for inst in entry["instances"]]
        scores = [inst["score"] for inst in entry["instances"]]
        np.testing.assert_allclose(boxes, expected["boxes"].numpy().reshape(-1, 4), atol=1e-4)
        np.testing.assert_allclose(scores, expected["scores"].numpy(), atol=1e-4)
        encoded = rle["results"][0]["prompts"][q]["masks"]
        decoded = [coco_mask.decode({"size": r["size"], "counts": r["counts"].encode()})
                   for r in encoded]  # fmt: skip
        np.testing.assert_array_equal(np.asarray(decoded, dtype=bool), masks)


def test_grounding_dino_takes_box_threshold_and_equals_transformers(
    alice: Api, pic: tuple[str, Image.Image], models: Path
) -> None:
    b64, image = pic
    prompts = ["a cat", "red car"]
    path = str(models / "tiny-gdino")
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(path, local_files_only=True)
    enc = processor(images=image, text=[prompts], return_tensors="pt")
    with torch.inference_mode():
        out = model.eval()(**enc)

    def post(threshold: float) -> dict[str, Any]:
        return processor.post_process_grounded_object_detection(
            out, enc["input_ids"], threshold=threshold, text_threshold=0.2,
            target_sizes=[(image.height, image.width)],
        )[0]  # fmt: skip

    threshold = float(np.median(post(0.0)["scores"].numpy()))
    expected = post(threshold)
    body = {"images": [b64], "prompts": prompts, "box_threshold": threshold,
            "text_threshold": 0.2}  # fmt: skip
    (found,) = alice.ok(alice.post("/inference/grounding-dino", body))["results"]
    assert len(found["boxes"]) == len(expected["boxes"]) > 0
    np.testing.assert_allclose(found["boxes"], expected["boxes"].numpy(), atol=1e-4)
    np.testing.assert_allclose(found["scores"], expected["scores"].numpy(), atol=1e-4)
    assert found["labels"] == list(expected["text_labels"])


def test_depth_equals_transformers_as_array_and_png16(
    alice: Api, pic: tuple[str, Image.Image], models: Path
) -> None:
    b64, image = pic
    path = str(models / "tiny-depth")
    processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    model = AutoModelForDepthEstimation.from_pretrained(path, local_files_only=True).eval()
    with torch.inference_mode():
        out = model(**processor(images=image, return_tensors="pt"))
    expected = processor.post_process_depth_estimation(
        out, target_sizes=[(image.height, image.width)]
    )[0]["predicted_depth"].numpy()
    body = {"images": [b64, b64], "array_format": "npy"}
    results = alice.ok(alice.post("/inference/depth-anything", body))["results"]
    for found in results:
        depth = npy_to_array(found["depth"])
        assert depth.dtype == np.float32 and depth.shape == (40, 56)
        np.testing.assert_allclose(depth, expected, atol=1e-4, rtol=0)
    png = alice.ok(alice.post("/inference/depth-anything", {"images": [b64],
                                                             "depth_format": "png16"}))  # fmt: skip
    grey = Image.open(io.BytesIO(base64.b64decode(png["results"][0]["depth"]["base64"])))
    assert grey.size == (56, 40) and np.asarray(grey).max() == 65535
    color = alice.post("/inference/depth-anything", {"images": [b64], "depth_format": "color"})
    preview = alice.ok(color)["results"][0]["depth"]
    assert Image.open(io.BytesIO(base64.b64decode(preview["base64"]))).mode == "RGB"


def test_dinov3_features_equal_transformers_and_come_by_artifact(
    alice: Api, pic: tuple[str, Image.Image], models: Path
) -> None:
    b64, image = pic
    path = str(models / "tiny-dinov3")
    processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    with torch.inference_mode():
        out = model(**processor(images=image, return_tensors="pt"))
    body = {"images": [b64], "patch_features": True}
    (found,) = alice.ok(alice.post("/inference/dinov3", body))["results"]
    pooled = out.pooler_output[0].numpy()
    np.testing.assert_allclose(found["embedding"], pooled, atol=1e-4, rtol=0)
    assert found["dim"] == len(found["embedding"])
    assert np.asarray(found["patches"]).shape[1] == found["dim"]
    ref = alice.ok(alice.post("/inference/dinov3", {**body, "return": "artifact"}))["results"][0]
    data = alice.client.get(ref["embedding"]["url"])
    assert data.status_code == 200 and data.headers["content-type"] == "application/x-npy"
    np.testing.assert_allclose(np.load(io.BytesIO(data.content)), pooled, atol=1e-4, rtol=0)


def wait_done(api: Api, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = api.ok(api.get(f"/jobs/{job_id}"))
        if job["status"] not in ("pending", "running"):
            return job
        time.sleep(0.1)
    raise TimeoutError(job_id)


def test_job_routes_submit_poll_list_delete_per_key(
    keys: dict[str, Api], pic: tuple[str, Image.Image]
) -> None:
    alice, bob = keys["alice"], keys["bob"]
    b64, _ = pic
    body = {"images": [b64], "prompts": ["car"], "threshold": 0.0, "output_format": "rle"}
    submitted = alice.ok(alice.post("/jobs/submit/sam3", body))
    assert submitted["status"] in ("pending", "running", "completed")
    job_id = submitted["job_id"]
    job = wait_done(alice, job_id)
    assert job["status"] == "completed" and job["model_type"] == "sam3", job
    masks = job["result"]["results"][0]["prompts"][0]["masks"]
    assert all(set(m) == {"size", "counts"} for m in masks)  # the submit's output_format
    polygons = alice.ok(alice.get(f"/jobs/{job_id}", output_format="polygons"))
    assert isinstance(polygons["result"]["results"][0]["prompts"][0]["masks"][0], list)
    listed = alice.ok(alice.get("/jobs"))
    assert job_id in [j["job_id"] for j in listed["jobs"]]
    assert job_id not in [j["job_id"] for j in bob.ok(bob.get("/jobs"))["jobs"]]
    for call in (bob.get(f"/jobs/{job_id}"), bob.client.delete(f"/jobs/{job_id}")):
        assert call.status_code == 404 and "not found" in call.json()["detail"]
    deleted = alice.ok(alice.client.delete(f"/jobs/{job_id}"))
    assert deleted == {"job_id": job_id, "status": "completed", "deleted": True}
    assert alice.get(f"/jobs/{job_id}").status_code == 404
    assert alice.client.delete(f"/jobs/{job_id}").status_code == 404


def test_models_status_load_and_unload(keys: dict[str, Api]) -> None:
    alice, ops = keys["alice"], keys["ops"]
    status = alice.ok(alice.get("/models/status"))["models"]
    assert set(status) == {"sam3", "grounding-dino", "depth-anything", "dinov3"}
    assert status["dinov3"]["model"] == "tiny-dinov3"
    denied = alice.post("/models/load", {"model_type": "dinov3"})
    assert denied.status_code == 403 and "admin" in denied.json()["detail"]
    loaded = ops.ok(ops.post("/models/load", {"model_type": "dinov3", "device": "cpu"}))
    assert loaded["status"] == "loaded" and loaded["devices"][0]["device"] == "cpu"
    status = alice.ok(alice.get("/models/status"))["models"]["dinov3"]
    assert status["loaded"] and status["device"] == "cpu" and status["memory_bytes"] > 0
    ops.ok(ops.post("/models/unload", {"model_type": "dinov3"}))
    assert not alice.ok(alice.get("/models/status"))["models"]["dinov3"]["loaded"]
    ops.ok(ops.post("/models/load", {"model_type": "depth-anything"}))
    assert "tiny-depth" in ops.ok(ops.post("/models/unload-all"))["unloaded"]
    missing = ops.post("/models/load", {"model_type": "clip"})
    assert missing.status_code == 404 and "model_type" in missing.json()["detail"]
    assert ops.post("/models/load", {"model_type": "sam3", "device": "tpu"}).status_code == 404
    info = alice.ok(alice.get("/"))
    assert info["models"]["sam3"] == "tiny-sam3" and "/models/status" in str(info["endpoints"])
    health = alice.ok(alice.get("/health"))
    assert {"status", "cuda_available", "gpu_name", "devices"} <= set(health)


PNG_OF = {"image": "iVBORw0KGgo="}  # a PNG signature, then nothing


@pytest.mark.parametrize(
    ("path", "change", "status", "field"),
    [
        ("/inference/sam3", {"images": [base64.b64encode(b"hello").decode()]}, 422, "images[0]"),
        ("/inference/sam3", {"images": ["not base64 !!"]}, 422, "images[0]"),
        ("/inference/sam3", {"images": [PNG_OF["image"]]}, 422, "images[0]"),
        ("/inference/sam4", {}, 404, "model_type"),
        ("/jobs/submit/sam4", {}, 404, "model_type"),
        ("/inference/sam3", {"prompts": [" "]}, 422, "prompts"),
        ("/inference/sam3", {"threshold": 1.5}, 422, "threshold"),
        ("/inference/grounding-dino", {"box_threshold": -1}, 422, "box_threshold"),
        ("/inference/grounding-dino", {"threshold": 2}, 422, "threshold"),
        ("/inference/sam3", {"images": ["x"] * 65}, 422, "images"),
        ("/inference/sam3", {"images": []}, 422, "images"),
        ("/inference/sam3", {"images": [5]}, 422, "images[0]"),
        ("/inference/sam3", {"prompts": ["a\ud800"]}, 422, "prompts"),
        ("/inference/sam3", {"output_format": "png"}, 422, "output_format"),
        ("/inference/sam3", {"model": "tiny-depth"}, 422, "model"),
        ("/inference/sam3", {"model": "nope"}, 404, "model"),
        ("/inference/sam3", {"images": ["http://127.0.0.1:9/a.png"]}, 403, "images[0]"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    alice: Api, pic: tuple[str, Image.Image], path: str, change: dict, status: int, field: str
) -> None:
    body = {"images": [pic[0]], "prompts": ["car"], **change}
    resp = alice.post(path, body)
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and detail.startswith(field), detail
