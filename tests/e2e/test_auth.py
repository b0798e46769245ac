"""API keys on the native dialect, and the request size limit."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pixelpool.testing.server import ServerProcess

JOB = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "seed": 3}


@pytest.fixture(scope="module")
def secured(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        "PIXELPOOL_AUTH__KEYS": json.dumps(["key-one", "key-two"]),
        "PIXELPOOL_SERVER__MAX_BODY_BYTES": "4096",
    }
    with ServerProcess(models_dir, tmp_path_factory.mktemp("data"), env=env) as server:
        yield server.url


def test_requests_without_a_valid_key_get_401(secured: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic a2V5LW9uZQ=="}):
        resp = httpx.post(f"{secured}/api/enqueue/generate", json=JOB, headers=headers)
        assert resp.status_code == 401, resp.text
        assert "API key" in resp.json()["error"]
    assert httpx.get(f"{secured}/api/status").status_code == 401
    assert httpx.get(f"{secured}/api/model-list?apikey=nope").status_code == 401
    assert httpx.get(f"{secured}/health").status_code == 200  # liveness stays open


def test_bearer_and_query_keys_work_and_jobs_are_private(secured: str) -> None:
    one = {"Authorization": "Bearer key-one"}
    resp = httpx.post(f"{secured}/api/enqueue/generate", json=JOB, headers=one)
    assert resp.status_code == 200
    job_id = resp.json()["job_id"]
    assert httpx.get(f"{secured}/api/job/{job_id}?apikey=key-one").status_code == 200
    for path in (f"/api/job/{job_id}", f"/api/job/{job_id}/result"):
        assert httpx.get(f"{secured}{path}?apikey=key-two").status_code == 404
    assert httpx.post(f"{secured}/api/job/{job_id}/cancel?apikey=key-two").status_code == 404
    assert httpx.get(f"{secured}/api/model-list?apikey=key-two").status_code == 200


def test_oversized_body_is_413(secured: str) -> None:
    big = {**JOB, "prompt": "x" * 10_000}
    resp = httpx.post(
        f"{secured}/api/generate", json=big, headers={"Authorization": "Bearer key-one"}
    )
    assert resp.status_code == 413 and "larger than 4096" in resp.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        yield b'{"prompt": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}'

    resp = httpx.post(
        f"{secured}/api/generate",
        content=chunks(),
        headers={"Authorization": "Bearer key-one", "content-type": "application/json"},
    )
    assert resp.status_code == 413
