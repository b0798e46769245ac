"""Chaining by id through HTTP, with auth on: detect -> segment (`boxes_from`) ->
inpaint (`mask_id`) -> upscale (`image_id`), and OpenAI edits with `mask_id`.

The tiny models' outputs are noise, so each step checks structure, determinism, and
that the by-id input equals the same input sent as a file. Another key's ids are 404.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

from .auth_helpers import CHAIN_KEYS
from .diffusion_server import png_bytes, smooth_image
from .vision_server import b64, error_of, multipart

KEYS = CHAIN_KEYS
OTHER = {"Authorization": "Bearer key-two"}
DETECT = {"model": "tiny-gdino", "prompts": ["a cat"], "threshold": 0.0, "text_threshold": 0.0}
IMAGE = png_bytes(smooth_image(64, 64, seed=5))  # inpaint takes sides of 64 or more
INPAINT = {"model": "demo-sd", "prompt": "a cat", "steps": 2, "seed": 5, "strength": 1.0}


@pytest.fixture(scope="module")
def client(keyed_server: ServerProcess) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEYS[0]}"}
    with httpx.Client(base_url=keyed_server.url, timeout=120, headers=headers) as c:
        yield c


def _enqueue(client: httpx.Client, path: str, resp: httpx.Response | None = None) -> str:
    assert resp is not None and resp.status_code == 200, resp.text if resp else path
    job_id = resp.json()["job_id"]
    assert wait_for_job(client, job_id)["status"] == "completed"
    return job_id


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.fixture(scope="module")
def chain(client: httpx.Client) -> dict[str, Any]:
    """detect, then segment with boxes_from: the ids and responses of both."""
    queued = client.post("/api/enqueue/detect", json={**DETECT, "images": [b64(IMAGE)]})
    detect = _enqueue(client, "detect", queued)
    boxes = client.get(f"/api/job/{detect}/result").json()["results"][0]
    resp = client.post("/api/segment", json={"boxes_from": detect, "threshold": 0.0})
    assert resp.status_code == 200, resp.text
    return {"detect": detect, "boxes": boxes, "segment": resp.json()}


def test_boxes_from_equals_the_same_boxes_sent(client: httpx.Client, chain: dict[str, Any]) -> None:
    seg = chain["segment"]
    (image,) = seg["results"]
    assert (image["width"], image["height"]) == (64, 64)  # the detect job's own image
    (query,) = image["prompts"]  # boxes alone: one visual query
    assert len(query["masks"]) == len(query["instances"]) > 0
    assert np.asarray(query["masks"][0]).shape == (64, 64)
    by_hand = client.post("/api/segment", json={
        "images": [b64(IMAGE)], "boxes": [chain["boxes"]["boxes"]], "threshold": 0.0})  # fmt: skip
    assert by_hand.status_code == 200, by_hand.text
    assert by_hand.json()["results"] == seg["results"]
    again = client.post("/api/segment", json={"boxes_from": chain["detect"], "threshold": 0.0})
    assert again.json()["results"] == seg["results"]  # deterministic
    some = {"id": chain["detect"], "min_score": max(chain["boxes"]["scores"])}  # the best box
    only = client.post("/api/segment", json={"boxes_from": some, "threshold": 0.0})
    assert only.status_code == 200, only.text
    best = chain["boxes"]["boxes"][int(np.argmax(chain["boxes"]["scores"]))]
    one_box = client.post("/api/segment", json={"images": [b64(IMAGE)], "threshold": 0.0,
                                                "boxes": [[best]]})  # fmt: skip
    assert only.json()["results"] == one_box.json()["results"]


def _instance(query: dict[str, Any]) -> tuple[int, np.ndarray]:
    """The first instance whose mask is not empty, and that mask."""
    for k, mask in enumerate(query["masks"]):
        if np.asarray(mask).any():
            return k, np.asarray(mask, bool)
    raise AssertionError("every mask is empty")


def test_detect_segment_inpaint_upscale_by_ids(client: httpx.Client, chain: dict[str, Any]) -> None:
    seg = chain["segment"]
    k, mask = _instance(seg["results"][0]["prompts"][0])
    mask_png = png_bytes(np.where(mask, 255, 0).astype(np.uint8))
    # inpaint with the mask by id equals inpaint with that mask uploaded
    by_id = _enqueue(client, "inpaint", multipart(client, "/api/enqueue/inpaint",
                     {**INPAINT, "mask_id": f"{seg['job_id']}:0:0:{k}"}, image=IMAGE))  # fmt: skip
    by_file = multipart(client, "/api/inpaint", INPAINT, image=IMAGE, mask=mask_png)
    inpainted = client.get(f"/api/job/{by_id}/result")
    assert inpainted.status_code == 200 and by_file.status_code == 200, by_file.text
    assert np.array_equal(_pixels(inpainted.content), _pixels(by_file.content))
    assert _pixels(inpainted.content).shape == (64, 64, 3)
    # the union of all instances: the mask_id without the instance
    union = np.any([np.asarray(m, bool) for m in seg["results"][0]["prompts"][0]["masks"]], 0)
    all_file = multipart(client, "/api/inpaint", INPAINT, image=IMAGE,
                         mask=png_bytes(np.where(union, 255, 0).astype(np.uint8)))  # fmt: skip
    all_id = multipart(client, "/api/inpaint", {**INPAINT, "mask_id": seg["job_id"]}, image=IMAGE)
    assert np.array_equal(_pixels(all_id.content), _pixels(all_file.content))
    # upscale the inpainted image by its job id; equals upscaling the bytes
    up_id = client.post("/api/upscale", params={"image_id": by_id, "model": "tiny-esrgan"})
    up_file = client.post("/api/upscale", params={"model": "tiny-esrgan"},
                          content=inpainted.content)  # fmt: skip
    assert up_id.status_code == 200, up_id.text
    assert np.array_equal(_pixels(up_id.content), _pixels(up_file.content))
    assert _pixels(up_id.content).shape[:2] == (64 * 4, 64 * 4)


def test_mask_by_artifact_id_and_openai_edits(client: httpx.Client, chain: dict[str, Any]) -> None:
    seg = client.post("/api/segment", json={"boxes_from": chain["detect"], "threshold": 0.0,
                                            "return": "artifact"})  # fmt: skip
    ref = seg.json()["results"][0]["prompts"][0]["masks"]
    assert ref["media_type"] == "application/x-npy"
    union = np.load(io.BytesIO(client.get(f"/api/artifacts/{ref['artifact_id']}").content)).any(0)
    edit = {"prompt": "a cat", "model": "demo-sd", "seed": "5", "steps": "2",
            "response_format": "b64_json"}  # fmt: skip
    with_id = client.post("/v1/images/edits", data={**edit, "mask_id": ref["artifact_id"]},
                          files={"image": ("i.png", IMAGE, "image/png")})  # fmt: skip
    mask_file = png_bytes(np.where(union, 255, 0).astype(np.uint8))
    files = {"image": ("i.png", IMAGE, "image/png"), "mask": ("m.png", mask_file, "image/png")}
    with_file = client.post("/v1/images/edits", data=edit, files=files)
    assert with_id.status_code == 200, with_id.text
    assert with_file.status_code == 200, with_file.text
    decoded = [base64.b64decode(r.json()["data"][0]["b64_json"]) for r in (with_id, with_file)]
    assert np.array_equal(_pixels(decoded[0]), _pixels(decoded[1]))


def test_ids_of_another_key_and_bad_ids(client: httpx.Client, chain: dict[str, Any]) -> None:
    seg_id, det_id = chain["segment"]["job_id"], chain["detect"]
    other = httpx.Client(base_url=str(client.base_url), headers=OTHER, timeout=120)
    error_of(other.post("/api/segment", json={"boxes_from": det_id}), 404, "boxes_from")
    error_of(multipart(other, "/api/inpaint", {**INPAINT, "mask_id": seg_id}, image=IMAGE), 404,
             "mask_id")  # fmt: skip
    error_of(other.post("/api/upscale", params={"image_id": seg_id}, content=b""), 404, "image_id")
    resp = other.post("/v1/images/edits", data={"prompt": "a", "mask_id": seg_id},
                      files={"image": ("i.png", IMAGE, "image/png")})  # fmt: skip
    assert resp.status_code == 404 and "mask_id" in resp.json()["error"]["message"], resp.text
    # own ids, wrong use
    bad = [({"mask_id": det_id}, 422), ({"mask_id": f"{seg_id}:7"}, 404),
           ({"mask_id": f"{seg_id}:0:9"}, 404), ({"mask_id": "not/an id"}, 404),
           ({"mask_id": f"{seg_id}:x"}, 422), ({"mask_id": "0" * 32}, 404)]  # fmt: skip
    for extra, status in bad:
        error_of(multipart(client, "/api/inpaint", {**INPAINT, **extra}, image=IMAGE), status,
                 "mask_id")  # fmt: skip
    both = multipart(client, "/api/inpaint", {**INPAINT, "mask_id": seg_id}, image=IMAGE,
                     mask=IMAGE)  # fmt: skip
    error_of(both, 422, "mask_id")
    error_of(multipart(client, "/api/img2img", {**INPAINT, "mask_id": seg_id}, image=IMAGE), 422,
             "mask")  # fmt: skip
    error_of(client.post("/api/upscale", params={"image_id": det_id}), 404, "image_id")  # no image
    error_of(client.post("/api/upscale", params={"image_id": seg_id}, content=IMAGE), 422,
             "image_id")  # fmt: skip
    error_of(client.post("/api/segment", json={"boxes_from": seg_id}), 422, "boxes_from")
