"""The engine seen from outside: live events, fairness, limits, cache control, cancellation."""

import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
JOB = {"prompt": "a fox", "width": 64, "height": 64, "steps": 4, "seed": 1}
SLOW = {**JOB, "width": 192, "height": 192, "steps": 30}


@pytest.fixture(scope="module")
def url(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        "PIXELPOOL_AUTH__KEYS": json.dumps(["key-a", "key-b"]),
        "PIXELPOOL_SCHEDULER__MAX_QUEUE_PER_KEY": "20",
        "PIXELPOOL_SCHEDULER__MAX_BATCH": "4",
        "PIXELPOOL_DEVICES__CPU__VRAM_BUDGET_GB": "0.1",
        "PIXELPOOL_SCHEDULER__PROGRESS_INTERVAL_MS": "0",  # tests count every step
    }
    with ServerProcess(models_dir, tmp_path_factory.mktemp("data"), env=env) as server:
        yield server.url


def enqueue(url: str, body: dict[str, Any], headers: dict[str, str] = A) -> str:
    resp = httpx.post(f"{url}/api/enqueue/generate", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()["job_id"]


def job(url: str, job_id: str, headers: dict[str, str] = A) -> dict[str, Any]:
    return httpx.get(f"{url}/api/job/{job_id}", headers=headers).json()


def wait(url: str, job_id: str, headers: dict[str, str] = A) -> dict[str, Any]:
    return wait_for_job(url, job_id, headers)


def ws_url(url: str, key: str | None = "key-a") -> str:
    base = url.replace("http://", "ws://") + "/api/ws"
    return f"{base}?apikey={key}" if key else base


def test_websocket_gets_every_step_and_previews(url: str) -> None:
    job_id = enqueue(url, {**JOB, "steps": 6, "preview": True, "preview_every": 3})
    with connect(ws_url(url)) as ws:
        ws.send(json.dumps({"type": "subscribe", "job_ids": [job_id]}))
        events: list[dict[str, Any]] = []
        while not any(e.get("type") == "complete" for e in events):
            events.append(json.loads(ws.recv(timeout=120)))
    mine = [e for e in events if e.get("job_id") == job_id]
    steps = [e["step"] for e in mine if e["type"] == "progress"]
    assert steps == [1, 2, 3, 4, 5, 6]
    progress = [e for e in mine if e["type"] == "progress"][-1]
    assert progress["total"] == 6 and progress["progress"] == 1.0 and progress["stage"] == "denoise"
    previews = [e for e in mine if e["type"] == "preview"]
    assert [p["step"] for p in previews] == [3, 6]
    image = Image.open(io.BytesIO(__import__("base64").b64decode(previews[0]["image"])))
    assert image.size == (8, 8)
    kinds = [e["type"] for e in mine if e["type"] not in ("progress", "preview")]
    assert kinds[0] == "queued" and "started" in kinds and "completed" in kinds
    assert mine[-1] == {"type": "complete", "job_id": job_id, "success": True, "error": None,
                        "gpu_time_s": None}  # fmt: skip
    ids = [e["id"] for e in mine if "id" in e]
    assert ids == sorted(ids)


def test_websocket_listener_sees_own_jobs_only_and_needs_a_key(url: str) -> None:
    with connect(ws_url(url, "key-b")) as ws:  # listens to all of its own jobs
        mine = enqueue(url, JOB, B)
        other = enqueue(url, JOB, A)
        seen: list[dict[str, Any]] = []
        while not any(e.get("type") == "complete" and e["job_id"] == mine for e in seen):
            seen.append(json.loads(ws.recv(timeout=120)))
    assert {e["job_id"] for e in seen if "job_id" in e} == {mine}
    wait(url, other)
    for key in (None, "wrong"):  # accepted, then closed with 4401 (browsers can read that)
        with connect(ws_url(url, key)) as ws, pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=30)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401


def _sse(url: str, job_id: str, last: int | None = None) -> list[tuple[int, str, dict]]:
    headers = dict(A)
    if last is not None:
        headers["Last-Event-ID"] = str(last)
    events = []
    with httpx.stream("GET", f"{url}/api/job/{job_id}/events", headers=headers, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        for line in r.iter_lines():
            if line.startswith(":"):
                continue
            if not line:
                if block:
                    events.append((int(block["id"]), block["event"], json.loads(block["data"])))
                block = {}
                continue
            key, _, value = line.partition(": ")
            block[key] = value
    return events


def test_sse_streams_every_step_and_resumes(url: str) -> None:
    job_id = enqueue(url, {**JOB, "steps": 5})
    events = _sse(url, job_id)
    assert [d["step"] for _, kind, d in events if kind == "progress"] == [1, 2, 3, 4, 5]
    assert events[-1][1] == "completed"
    resume_after = next(i for i, kind, d in events if kind == "progress" and d["step"] == 2)
    resumed = _sse(url, job_id, last=resume_after)
    assert [d["step"] for _, kind, d in resumed if kind == "progress"] == [3, 4, 5]
    assert all(i > resume_after for i, _, _ in resumed)


def test_flooding_key_does_not_starve_another(url: str) -> None:
    """key-b's job waits for the batch running when it arrives, not for key-a's flood.
    (Ordering is checked deterministically in tests/engine; this is the real server.)"""
    flood = [enqueue(url, {**SLOW, "steps": 12, "seed": s}) for s in range(12)]
    while job(url, flood[0])["status"] == "queued":  # a batch of the flood is running
        time.sleep(0.05)
    other = enqueue(url, {**SLOW, "steps": 12, "seed": 99}, B)
    running = sum(1 for j in flood if job(url, j)["status"] != "queued")
    results = {j: wait(url, j) for j in flood}
    mine = wait(url, other, B)

    def started(body: dict[str, Any]) -> float:
        return body["created_at"] + body["queued_s"]

    # (its batch mates start with it: a millisecond of slack for the rounding of queued_s)
    before = sum(1 for body in results.values() if started(body) < started(mine) - 0.001)
    assert before <= running, "key-b's job waited behind more than the batch already running"


def test_queue_limit_per_key_is_429_with_retry_after(url: str) -> None:
    accepted, refused = [], None
    for seed in range(40):
        resp = httpx.post(f"{url}/api/enqueue/generate", json={**SLOW, "seed": seed}, headers=A)
        if resp.status_code == 429:
            refused = resp
            break
        accepted.append(resp.json()["job_id"])
    assert refused is not None and int(refused.headers["retry-after"]) > 0
    assert "queued jobs" in refused.json()["error"]
    assert httpx.post(f"{url}/api/enqueue/generate", json=JOB, headers=B).status_code == 200
    for job_id in accepted:
        httpx.post(f"{url}/api/job/{job_id}/cancel", headers=A)


def test_job_that_fits_no_device_is_refused_at_submit(url: str) -> None:
    resp = httpx.post(f"{url}/api/enqueue/generate", json={**JOB, "width": 2048, "height": 2048},
                      headers=A)  # fmt: skip
    assert resp.status_code == 422
    assert "device memory" in resp.json()["error"]


def test_admin_cache_control(url: str) -> None:
    def call(op: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{url}/api/models/{op}", json=body, headers=A, timeout=60)

    loaded = call("load", {"model": "demo-sdxl"})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["devices"] == [{"device": "cpu", "tier": "device", "pinned": False}]
    assert call("pin", {"model": "demo-sdxl", "device": "cpu"}).json()["devices"][0]["pinned"]
    status = httpx.get(f"{url}/api/status", headers=A).json()
    models = status["devices"][0]["cache"]["models"]
    assert any(m["key"].endswith("demo-sdxl") and m["pinned"] for m in models)
    assert not call("unpin", {"model": "demo-sdxl"}).json()["devices"][0]["pinned"]
    assert call("unload", {"model": "demo-sdxl"}).json()["devices"][0]["tier"] is None
    assert call("load", {"model": "nope"}).status_code == 404
    assert call("load", {"model": "demo-sd", "device": "cuda7"}).status_code == 404
    assert call("explode", {"model": "demo-sd"}).status_code == 404
    assert httpx.post(f"{url}/api/models/load", json={"model": "demo-sd"}).status_code == 401


def test_disconnecting_sync_client_cancels_its_job(url: str) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/api/generate", json={**SLOW, "steps": 150}, headers=A, timeout=1.5)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = httpx.get(f"{url}/api/status", headers=A).json()
        if status["active_jobs"] == 0:
            break
        time.sleep(0.1)
    assert status["active_jobs"] == 0  # cancelled long before 150 steps could finish


def test_batched_jobs_equal_jobs_run_alone_and_cancel_one(url: str) -> None:
    blocker = enqueue(url, {**SLOW, "steps": 20})
    batch = [enqueue(url, {**JOB, "steps": 25, "seed": s}) for s in (11, 12, 13)]
    while job(url, batch[0])["status"] != "running":
        time.sleep(0.02)
    views = [job(url, j) for j in batch]
    assert all(v["batch_size"] == 3 for v in views)
    httpx.post(f"{url}/api/job/{batch[1]}/cancel", headers=A)
    finals = [wait(url, j) for j in batch]
    assert [f["status"] for f in finals] == ["completed", "cancelled", "completed"]
    wait(url, blocker)
    alone = enqueue(url, {**JOB, "steps": 25, "seed": 13})
    assert wait(url, alone)["batch_size"] == 1

    def pixels(job_id: str) -> np.ndarray:
        resp = httpx.get(f"{url}/api/job/{job_id}/result", headers=A)
        return np.asarray(Image.open(io.BytesIO(resp.content))).astype(int)

    assert np.array_equal(pixels(batch[2]), pixels(alone))  # bit for bit


def test_concurrent_sync_clients_are_batched(url: str) -> None:
    results: list[httpx.Response] = []

    def client(seed: int) -> None:
        body = {**JOB, "steps": 10, "seed": seed}
        results.append(httpx.post(f"{url}/api/generate", json=body, headers=A, timeout=120))

    threads = [threading.Thread(target=client, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in results)
    sizes = [job(url, r.headers["x-job-id"])["batch_size"] for r in results]
    assert max(sizes) > 1


def test_bad_resume_id_and_non_json_websocket_message(url: str) -> None:
    job_id = enqueue(url, JOB)
    resp = httpx.get(f"{url}/api/job/{job_id}/events", headers={**A, "Last-Event-ID": "yesterday"})
    assert resp.status_code == 422 and "last_event_id" in resp.json()["error"]
    with connect(ws_url(url)) as ws:
        ws.send("not json")  # answered; the socket stays open
        reply = json.loads(ws.recv(timeout=30))
        while reply.get("type") != "error":
            reply = json.loads(ws.recv(timeout=30))
        assert "JSON" in reply["error"]
        ws.send(json.dumps({"type": "teleport"}))
        reply = json.loads(ws.recv(timeout=30))
        while reply.get("type") != "error":
            reply = json.loads(ws.recv(timeout=30))
        assert "teleport" in reply["error"]
    wait(url, job_id)
