"""The native vision routes through HTTP: /api/segment|detect|depth|embed (JSON and
multipart), /api/enqueue/<op> with GET /api/job/{id}/result, and bad input answered
with a 4xx naming the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

from .vision_server import IMAGE, IMAGE2, b64, error_of, multipart

DETECT = {"model": "tiny-gdino", "prompts": ["a cat", "a dog"], "threshold": 0.0,
          "text_threshold": 0.0}  # fmt: skip
SEGMENT = {"model": "tiny-sam3", "prompts": ["a cat"], "threshold": 0.0}


@pytest.fixture(scope="module")
def client(extras_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=extras_server.url, timeout=120) as c:
        yield c


def _stable(body: dict[str, Any]) -> dict[str, Any]:
    """A response without what differs between two runs of the same job."""
    return {k: v for k, v in body.items() if k not in ("job_id", "inference_time_ms")}


def test_detect_json_and_multipart_agree(client: httpx.Client) -> None:
    resp = client.post("/api/detect", json={**DETECT, "images": [b64(IMAGE), b64(IMAGE2)]})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["task"] == "detect" and body["model"] == "tiny-gdino"
    first, second = body["results"]
    assert (first["width"], first["height"], second["width"], second["height"]) == (64, 48, 48, 64)
    assert len(first["boxes"]) == len(first["scores"]) == len(first["labels"]) > 0
    assert all(len(box) == 4 for box in first["boxes"])
    again = multipart(client, "/api/detect", DETECT, image=[IMAGE, IMAGE2])
    assert again.status_code == 200, again.text
    assert _stable(again.json()) == _stable(body)


def test_enqueue_then_result_renders_with_query_options(client: httpx.Client) -> None:
    sync = client.post("/api/segment", json={**SEGMENT, "images": [b64(IMAGE)],
                                             "output_format": "rle"})  # fmt: skip
    assert sync.status_code == 200, sync.text
    queued = client.post("/api/enqueue/segment", json={**SEGMENT, "images": [b64(IMAGE)]})
    assert queued.status_code == 200, queued.text
    job_id = queued.json()["job_id"]
    assert wait_for_job(client, job_id)["status"] == "completed"
    resp = client.get(f"/api/job/{job_id}/result", params={"output_format": "rle"})
    assert resp.status_code == 200, resp.text
    assert _stable(resp.json()) == _stable(sync.json())
    (image,) = resp.json()["results"]
    (prompt,) = image["prompts"]
    assert prompt["prompt"] == "a cat" and len(prompt["masks"]) == len(prompt["instances"])
    for rle in prompt["masks"]:
        assert coco_mask.decode({**rle, "counts": rle["counts"].encode()}).shape == (48, 64)
    dense = client.get(f"/api/job/{job_id}/result").json()["results"][0]["prompts"][0]["masks"]
    for rle, mask in zip(prompt["masks"], dense, strict=True):
        decoded = coco_mask.decode({**rle, "counts": rle["counts"].encode()})
        assert np.array_equal(decoded, np.asarray(mask, np.uint8))
    error_of(client.get(f"/api/job/{job_id}/result", params={"output_format": "x"}), 422,
             "output_format")  # fmt: skip


def test_depth_and_embed_shapes(client: httpx.Client) -> None:
    resp = multipart(client, "/api/depth", {"model": "tiny-depth", "array_format": "npy"},
                     image=IMAGE)  # fmt: skip
    assert resp.status_code == 200, resp.text
    (depth,) = resp.json()["results"]
    assert depth["depth"]["shape"] == [48, 64] and depth["depth"]["dtype"] == "float32"
    resp = client.post("/api/embed", json={"images": [b64(IMAGE), b64(IMAGE2)],
                                           "patch_features": True, "normalize": True})  # fmt: skip
    assert resp.status_code == 200, resp.text
    assert resp.json()["model"] == "tiny-dinov2"  # the installed model of that task
    for result in resp.json()["results"]:
        assert abs(np.linalg.norm(result["embedding"]) - 1) < 1e-4
        assert len(np.asarray(result["patches"]).shape) == 2


def test_return_artifact_gives_fetchable_arrays(client: httpx.Client) -> None:
    resp = client.post("/api/depth", json={"images": [b64(IMAGE)], "return": "artifact"})
    assert resp.status_code == 200, resp.text
    ref = resp.json()["results"][0]["depth"]
    data = client.get(f"/api/artifacts/{ref['artifact_id']}")
    assert data.status_code == 200 and data.headers["content-type"] == "application/x-npy"


NOT_IMAGE = b64(b"this is not an image at all")


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/api/detect", {**DETECT, "images": [NOT_IMAGE]}, 422, "images[0]"),
        ("/api/detect", {**DETECT, "images": []}, 422, "images"),
        ("/api/detect", {**DETECT, "model": "no-such-model"}, 404, "model"),
        ("/api/detect", {**DETECT, "model": "demo-sd"}, 422, "model"),  # a diffusion model
        ("/api/segment", {**SEGMENT, "model": "tiny-depth"}, 422, "model"),  # another task
        ("/api/detect", {**DETECT, "prompts": []}, 422, "prompts"),
        ("/api/detect", {**DETECT, "prompts": ["  "]}, 422, "prompts"),
        ("/api/segment", {**SEGMENT, "prompts": []}, 422, "prompts"),
        ("/api/segment", {**SEGMENT, "threshold": 1.5}, 422, "threshold"),
        ("/api/segment", {**SEGMENT, "mask_threshold": -1}, 422, "mask_threshold"),
        ("/api/detect", {**DETECT, "priority": 0}, 422, "priority"),
        ("/api/detect", {**DETECT, "boxes_from": "abc"}, 422, "boxes_from"),  # not a segment field
        ("/api/segment", {**SEGMENT, "boxes_from": "0" * 32}, 404, "boxes_from"),
        ("/api/segment", {**SEGMENT, "boxes_from": "../etc"}, 404, "boxes_from"),
        (
            "/api/segment",
            {**SEGMENT, "boxes_from": {"id": "0" * 32, "min_score": 3}},
            422,
            "boxes_from",
        ),
        ("/api/segment", {**SEGMENT, "output_format": "svg"}, 422, "output_format"),
        ("/api/enqueue/segment", {**SEGMENT, "output_format": "rle"}, 422, "output_format"),
        ("/api/embed", {"pooling": "max"}, 422, "pooling"),
    ],
)
def test_bad_input_names_the_field(
    client: httpx.Client, path: str, body: dict[str, Any], status: int, field: str
) -> None:
    body = {"images": [b64(IMAGE)], **body}
    error_of(client.post(path, json=body), status, field)


def test_bad_multipart_names_the_field(client: httpx.Client) -> None:
    error_of(multipart(client, "/api/detect", DETECT, image=b"not an image"), 422, "image")
    only_params = client.post("/api/detect", files={"params": (None, json.dumps(DETECT))})
    error_of(only_params, 422, "image")
    error_of(multipart(client, "/api/detect", {**DETECT, "images": [b64(IMAGE)]}, image=IMAGE),
             422, "images")  # fmt: skip
    error_of(multipart(client, "/api/detect", DETECT, image=IMAGE, mask=IMAGE), 422, "mask")
    resp = client.post("/api/detect", content=b"{not json", headers={"content-type": "text/json"})
    assert resp.status_code == 400 and "error" in resp.json()


def test_boxes_from_must_be_a_completed_detect_job(client: httpx.Client) -> None:
    depth = client.post("/api/enqueue/depth", json={"images": [b64(IMAGE)]}).json()["job_id"]
    wait_for_job(client, depth)
    msg = error_of(client.post("/api/segment", json={"boxes_from": depth}), 422, "boxes_from")
    assert "not detect" in msg
    detect = client.post("/api/enqueue/detect", json={**DETECT, "images": [b64(IMAGE)]})
    job = detect.json()["job_id"]
    wait_for_job(client, job)
    two = {"boxes_from": job, "images": [b64(IMAGE), b64(IMAGE2)]}
    error_of(client.post("/api/segment", json=two), 422, "boxes_from")  # 1 image vs 2
    error_of(client.post("/api/segment", json={"boxes_from": {"id": job, "labels": ["zebra"]}}),
             422, "boxes_from")  # everything filtered out  # fmt: skip
    error_of(client.post("/api/segment", json={"boxes_from": job, "boxes": [[[0, 0, 4, 4]]]}),
             422, "boxes_from")  # fmt: skip
