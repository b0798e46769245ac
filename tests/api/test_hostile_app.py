"""Hostile requests against the real app in this process (a real worker behind it):
every one is a 4xx naming its field in the dialect's envelope, the app stays healthy,
and nothing is written outside the data folder."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pixelpool.api.app import create_app
from pixelpool.config import Settings

from .hostile_cases import GOOD, cases, check


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def app_dirs(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    settings = Settings.model_validate(
        {"server": {"models_dir": str(models_dir), "data_dir": str(data)}}
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, root, models_dir


@pytest.fixture(scope="module")
def client(app_dirs: tuple) -> TestClient:
    return app_dirs[0]


def test_every_hostile_request_is_a_named_4xx(app_dirs: tuple) -> None:
    client, root, models = app_dirs
    before_models, before_root = _files(models), _files(root)
    problems = []
    for case in cases():
        resp = client.request(case.method, case.path, **case.kwargs)
        problem = check(case, resp)
        if problem:
            problems.append(problem)
    assert not problems, "\n".join(problems)
    assert client.get("/health").status_code == 200
    assert _files(models) == before_models
    outside = {f for f in _files(root) - before_root if not f.startswith("data")}
    assert not outside
    assert not Path("/etc/passwd").exists() or os.access("/etc/passwd", os.R_OK)


def test_refused_requests_make_no_jobs(client: TestClient) -> None:
    resp = client.post("/api/enqueue/generate", json={**GOOD, "steps": True})
    assert resp.status_code == 422
    status = client.get("/api/status").json()
    assert status["active_jobs"] == 0 and status["queue_depth"] == 0


def test_error_texts_are_clean(client: TestClient) -> None:
    resp = client.post("/api/enqueue/encode-latents?model=demo-sd", content=b"not an image")
    assert resp.status_code == 422
    assert resp.json()["error"] == "image: is not an image in a known format (PNG, JPEG, WebP)"
    resp = client.post("/api/enqueue/generate", json={**GOOD, "model": "x\x00y"})
    assert resp.json()["detail"][0] == {
        "field": "model", "message": "must not contain control characters or NUL"
    }  # fmt: skip


def test_limits_are_configurable(models_dir: Path, tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "server": {"models_dir": str(models_dir), "data_dir": str(tmp_path)},
        "limits": {"max_prompt_chars": 5, "max_negative_prompt_chars": 3},
    })  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        long_neg = client.post("/generate", json={"prompt": "fox", "negative_prompt": "abcd"})
        assert long_neg.status_code == 422
        assert long_neg.json()["detail"] == "negative_prompt: is longer than 3 characters"
        long_prompt = client.post("/v1/images/generations", json={"prompt": "a red fox"})
        assert long_prompt.status_code == 400
        assert long_prompt.json()["error"]["param"] == "prompt"


def _cancel_and_wait(client: TestClient, job_id: str) -> None:
    """Cancel the job and wait for its end, so that later counts of jobs hold still."""
    client.post(f"/api/job/{job_id}/cancel")
    deadline = time.monotonic() + 120
    while client.get(f"/api/job/{job_id}").json()["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the cancelled job did not end"
        time.sleep(0.1)


def _job_counts(client: TestClient) -> tuple[int, int]:
    status = client.get("/api/status").json()
    return status["active_jobs"], status["queue_depth"]


def test_too_little_free_disk_refuses_new_jobs_with_503(client: TestClient) -> None:
    """Under `storage.min_free_mb` every dialect answers 503 in its own envelope, with
    Retry-After, /ready fails and no job is made; with room again, jobs are accepted."""
    space = client.app.state.pixelpool.jobs.space  # type: ignore[attr-defined]
    threshold = space.min_free_bytes
    before = _job_counts(client)
    space.min_free_bytes = space.free_bytes() + 2**40  # a terabyte more than is free
    try:
        native = client.post("/api/enqueue/generate", json=GOOD)
        openai = client.post("/v1/images/generations", json={"prompt": "a fox", "size": "256x256"})
        a1111 = client.post("/sdapi/v1/txt2img", json={"prompt": "a fox", "steps": 2})
        ready, health = client.get("/ready"), client.get("/health")
        status = client.get("/api/status").json()
        counts = _job_counts(client)
    finally:
        space.min_free_bytes = threshold
    assert native.status_code == 503 and native.headers["Retry-After"] == "60"
    assert native.json()["error"].startswith("the server's storage is full: ")
    assert openai.status_code == 503
    assert "storage is full" in openai.json()["error"]["message"]
    assert a1111.status_code == 503 and "storage is full" in a1111.json()["detail"]
    assert ready.status_code == 503 and ready.json()["storage_low"] is True
    assert health.json()["storage_low"] is True and health.json()["storage_free_gb"] > 0
    assert status["storage_low"] is True
    assert counts == before
    assert client.get("/ready").json()["storage_low"] is False
    accepted = client.post("/api/enqueue/generate", json=GOOD)
    assert accepted.status_code == 200
    _cancel_and_wait(client, accepted.json()["job_id"])


def test_a_job_store_that_cannot_grow_answers_503_not_500(client: TestClient) -> None:
    """The disk fills after the free-space check: SQLite's own "database or disk is full"
    (its file held at its size: SQLite reports that as it reports a full disk) is a 503
    that says so, never a 500, and no job is made."""
    db = client.app.state.pixelpool.jobs.store.db  # type: ignore[attr-defined]

    def fill(conn: sqlite3.Connection) -> int:
        limit = conn.execute("PRAGMA max_page_count").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute("CREATE TABLE filler (x BLOB)")
        conn.execute(f"PRAGMA max_page_count={pages}")
        with contextlib.suppress(sqlite3.OperationalError):  # until the free pages are used
            for _ in range(10_000):
                conn.execute("INSERT INTO filler VALUES (?)", (b"\0" * 1024,))
        return int(limit)

    def empty(conn: sqlite3.Connection, limit: int) -> None:
        conn.execute("DROP TABLE filler")
        conn.execute(f"PRAGMA max_page_count={limit}")

    # Rows this long need new pages (overflow pages) wherever the job table has room left.
    prompt = "a fox in the snow " * 500
    before = _job_counts(client)
    limit = client.portal.call(db.call, fill)  # type: ignore[union-attr]
    try:
        native = client.post("/api/enqueue/generate", json={**GOOD, "prompt": prompt})
        openai = client.post("/v1/images/generations", json={"prompt": prompt, "size": "256x256"})
        counts = _job_counts(client)
    finally:
        client.portal.call(db.call, lambda conn: empty(conn, limit))  # type: ignore[union-attr]
    assert native.status_code == 503, native.text
    assert native.json() == {"error": "the server's storage is full; retry later"}
    assert native.headers["Retry-After"] == "60"
    assert openai.status_code == 503 and "storage is full" in openai.json()["error"]["message"]
    assert counts == before
    accepted = client.post("/api/enqueue/generate", json=GOOD)
    assert accepted.status_code == 200
    _cancel_and_wait(client, accepted.json()["job_id"])
