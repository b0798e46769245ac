"""FoxBurrow's client round-trip caches through a real server and real WebSockets:
`clip_embeddings` / `latent_cache` to the job's owner only, sent back they reproduce the
image; entries from another architecture fall back to the prompt; malformed ones are a
422 naming the entry. And the A1111 `parameters` text pasted back as `infotext`."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.sync.client import ClientConnection, connect

from pixelpool.families.diffusion.latent_format import encode_latents
from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

from .auth_helpers import token
from .diffusion_server import decode

XL = {"prompt": "a red fox in snow", "negative_prompt": "blurry", "model": "demo-sdxl",
      "width": 64, "height": 64, "steps": 2, "cfg_scale": 6.0, "seed": 11}  # fmt: skip
SD = {**XL, "model": "demo-sd", "seed": 12}


@dataclass
class Server:
    url: str
    alice: dict[str, str]
    bob: dict[str, str]

    def ws(self, who: dict[str, str], query: str = "caches=1") -> ClientConnection:
        key = who["Authorization"].removeprefix("Bearer ")
        base = self.url.replace("http://", "ws://")
        ws = connect(f"{base}/api/ws?apikey={key}&{query}", max_size=None)
        ws.send(json.dumps({"type": "ping"}))  # answered once the socket is subscribed
        while json.loads(ws.recv(timeout=30))["type"] != "pong":
            pass
        return ws


@pytest.fixture(scope="module")
def server(jwt_server: ServerProcess) -> Server:
    auth = {name: {"Authorization": f"Bearer {token(name)}"} for name in ("alice", "bob")}
    return Server(jwt_server.url, auth["alice"], auth["bob"])


def _until_complete(ws: ClientConnection, job_id: str) -> dict[str, Any]:
    """The cache messages of `job_id` (and whose they were), up to its `complete`."""
    got: dict[str, Any] = {"others": []}
    while True:
        message = json.loads(ws.recv(timeout=120))
        kind = message.get("type")
        if kind in ("clip_embeddings", "latent_cache"):
            if message["job_id"] == job_id:
                got[kind] = message
            else:
                got["others"].append(message)
        if kind == "complete" and message["job_id"] == job_id:
            assert message["success"], message
            return got


def _enqueue(server: Server, who: dict[str, str], body: dict[str, Any]) -> str:
    resp = httpx.post(f"{server.url}/api/enqueue/generate", json=body, headers=who, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()["job_id"]


def _result(server: Server, who: dict[str, str], job_id: str) -> np.ndarray:
    assert wait_for_job(server.url, job_id, who)["status"] == "completed"
    return decode(httpx.get(f"{server.url}/api/job/{job_id}/result", headers=who, timeout=60))


def _generate(server: Server, who: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.url}/api/generate", json=body, headers=who, timeout=120)


@pytest.fixture(scope="module")
def xl_caches(server: Server) -> dict[str, Any]:
    """An SDXL job of alice's while she has a `?caches=1` socket open: what each key got."""
    with server.ws(server.alice) as alice, server.ws(server.bob) as bob:
        job = _enqueue(server, server.alice, XL)
        mine = _until_complete(alice, job)
        bobs_job = _enqueue(server, server.bob, {**XL, "seed": 3})
        theirs = _until_complete(bob, bobs_job)  # alice's caches would have come first
    return {"job": job, "alice": mine, "bob": theirs, "image": _result(server, server.alice, job)}


def test_caches_go_to_the_owner_only_in_foxburrows_shapes(xl_caches: dict[str, Any]) -> None:
    clip, latents = xl_caches["alice"]["clip_embeddings"], xl_caches["alice"]["latent_cache"]
    assert set(clip) == {"type", "job_id", "entries"}
    assert [(e["encoder_type"], e["polarity"]) for e in clip["entries"]] == [
        (enc, pol) for enc in ("clip_l", "clip_g", "clip_g_pooled")
        for pol in ("positive", "negative")
    ]  # fmt: skip
    assert all(e["dtype"] == "fp32" and e["dim0"] == 77 for e in clip["entries"][:4])
    assert clip["entries"][4]["dim1"] is None
    assert set(latents) == {"type", "job_id", "data", "dtype", "shape"}
    assert latents["shape"] == [1, 4, 8, 8] and latents["dtype"] == "fp32"
    assert len(base64.b64decode(latents["data"])) == 4 * 8 * 8 * 4
    # bob's connection also asked for caches: his own job's came, alice's did not
    assert xl_caches["bob"]["others"] == [] and xl_caches["alice"]["others"] == []
    assert "clip_embeddings" in xl_caches["bob"]  # his own job, his own socket


def test_embeddings_sent_back_give_the_same_image(
    server: Server, xl_caches: dict[str, Any]
) -> None:
    entries = xl_caches["alice"]["clip_embeddings"]["entries"]
    body = {**XL, "prompt": "ignored: the embeddings win", "clip_embeddings": entries}
    resp = _generate(server, server.alice, body)
    assert np.array_equal(decode(resp), xl_caches["image"])
    view = httpx.get(f"{server.url}/api/job/{resp.headers['x-job-id']}", headers=server.alice)
    assert view.json()["clip_embeddings"] == "used"
    plain = decode(_generate(server, server.alice, {**XL, "prompt": body["prompt"]}))
    assert not np.array_equal(plain, xl_caches["image"])  # the prompt alone differs


def test_sd1_entries_on_request_and_ignored_by_sdxl(
    server: Server, xl_caches: dict[str, Any]
) -> None:
    with server.ws(server.alice, "caches=0") as ws:  # no wish on the socket: the field asks
        job = _enqueue(server, server.alice, {**SD, "emit_caches": True})
        got = _until_complete(ws, job)
        plain = _enqueue(server, server.alice, SD)  # neither asks: no caches
        assert "clip_embeddings" not in _until_complete(ws, plain)
    entries = got["clip_embeddings"]["entries"]
    assert [(e["encoder_type"], e["polarity"]) for e in entries] == [
        ("clip_l", "positive"), ("clip_l", "negative")]  # fmt: skip
    sd_image = _result(server, server.alice, job)
    back = decode(
        _generate(server, server.alice, {**SD, "prompt": "x", "clip_embeddings": entries})
    )
    assert np.array_equal(back, sd_image)
    # SD 1.x embeddings sent to the SDXL model: ignored, the prompt is encoded as usual
    resp = _generate(server, server.alice, {**XL, "clip_embeddings": entries})
    assert np.array_equal(decode(resp), xl_caches["image"])
    view = httpx.get(f"{server.url}/api/job/{resp.headers['x-job-id']}", headers=server.alice)
    assert view.json()["clip_embeddings"].startswith("ignored: SD 1.x embeddings"), view.text


def _enhance(server: Server, params: dict[str, Any], **files: bytes) -> str:
    parts = {name: (name, data, "application/octet-stream") for name, data in files.items()}
    resp = httpx.post(f"{server.url}/api/enqueue/enhance", data={"params": json.dumps(params)},
                      files=parts, headers=server.alice, timeout=120)  # fmt: skip
    assert resp.status_code == 200, resp.text
    return resp.json()["job_id"]


def test_enhance_with_cached_latents_equals_the_latents_path(
    server: Server, xl_caches: dict[str, Any]
) -> None:
    cache = xl_caches["alice"]["latent_cache"]
    raw = base64.b64decode(cache["data"])
    params = {"prompt": XL["prompt"], "model": "demo-sdxl", "hires_steps": 2, "seed": 5,
              "denoising_strength": 0.5, "hires_width": 64, "hires_height": 64}  # fmt: skip
    meta = {"dtype": cache["dtype"], "shape": cache["shape"]}
    array = np.frombuffer(raw, np.float32).reshape(cache["shape"])
    half = array.astype(np.float16)  # as FoxBurrow sends them
    jobs = [  # queued together: they run as one batch
        _enhance(server, {**params, "cached_latents": meta}, latent_data=raw),
        _enhance(server, params, latent_data=encode_latents(array, {}, "safetensors")),
        _enhance(server, {**params, "cached_latents": {**meta, "dtype": "fp16"}},
                 latent_data=half.tobytes()),
        _enhance(server, params, latent_data=encode_latents(half.astype(np.float32), {},
                                                            "safetensors")),
    ]  # fmt: skip
    fox, ours, fox16, ours16 = (_result(server, server.alice, job) for job in jobs)
    assert fox.shape == (64, 64, 3) and np.array_equal(fox, ours)
    assert np.array_equal(fox16, ours16)


def _field(resp: httpx.Response) -> str:
    return resp.json()["detail"][0]["field"]


def test_malformed_entries_are_422_naming_the_entry(
    server: Server, xl_caches: dict[str, Any]
) -> None:
    good = xl_caches["alice"]["clip_embeddings"]["entries"]
    cases = [
        (2, {"data": "not base64!"}, "clip_embeddings[2].data"),
        (2, {"data": base64.b64encode(b"\0" * 12).decode()}, "clip_embeddings[2].data"),
        (0, {"encoder_type": "t5"}, "clip_embeddings[0].encoder_type"),
        (1, {"polarity": "neutral"}, "clip_embeddings[1].polarity"),
        (3, {"dim0": 77 * 1000}, "clip_embeddings[3].dim0"),
    ]
    for index, change, field in cases:
        entries = [dict(e) for e in good]
        entries[index].update(change)
        resp = _generate(server, server.alice, {**XL, "clip_embeddings": entries})
        assert resp.status_code == 422, resp.text
        assert _field(resp) == field and field in resp.json()["error"], resp.text
    resp = _generate(server, server.alice, {**XL, "clip_embeddings": good[:3]})
    assert resp.status_code == 422 and _field(resp) == "clip_embeddings"
    resp = httpx.post(f"{server.url}/api/enhance", headers=server.alice, files={
        "latent_data": ("l", b"\0" * 10), "params": (None, json.dumps(
            {"prompt": "x", "model": "demo-sdxl", "cached_latents": {"dtype": "fp32",
             "shape": [1, 4, 8, 8]}}))})  # fmt: skip
    assert resp.status_code == 422 and _field(resp) == "latent_data", resp.text


def test_infotext_pasted_back_reproduces_the_image(server: Server) -> None:
    body = {**SD, "prompt": "a (red:1.2) fox", "sampler": "DPM++ 2M Karras", "seed": 99}
    first = _generate(server, server.alice, body)
    text = Image.open(io.BytesIO(first.content)).info["parameters"]
    again = _generate(server, server.alice, {"infotext": text})
    assert again.status_code == 200, again.text
    assert np.array_equal(decode(again), decode(first))
    # fields the request gives win over the text
    other = _generate(server, server.alice, {"infotext": text, "seed": 100})
    assert "Seed: 100" in Image.open(io.BytesIO(other.content)).info["parameters"]
    bad = _generate(server, server.alice, {"infotext": "just a prompt, no parameters"})
    assert bad.status_code == 422 and _field(bad) == "infotext", bad.text


def test_hires_infotext_pasted_back_reproduces_the_image(server: Server) -> None:
    body = {**SD, "width": 96, "height": 96, "hires_steps": 2, "hires_denoising_strength": 0.6}
    first = httpx.post(f"{server.url}/api/generate-hires", json=body, headers=server.alice,
                       timeout=120)  # fmt: skip
    text = Image.open(io.BytesIO(first.content)).info["parameters"]
    assert "Hires resize: 96x96" in text, text
    again = httpx.post(f"{server.url}/api/generate-hires", json={"infotext": text},
                       headers=server.alice, timeout=120)  # fmt: skip
    assert np.array_equal(decode(again), decode(first))
