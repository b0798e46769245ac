"""Shared by the fault tests: a real server, job submission, and the end states allowed."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

import httpx

from pixelpool.testing.client import wait_for_job

# Small and quick on the tiny demo model, and long enough to be hit while running.
JOB = {"prompt": "a red barn", "width": 64, "height": 64, "steps": 4}
ENDED = {"completed", "failed", "cancelled"}


def enqueue(url: str, seed: int, headers: dict[str, str] | None = None, **extra: Any) -> str:
    response = httpx.post(
        f"{url}/api/enqueue/generate", json={**JOB, "seed": seed, **extra}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()["job_id"]


def assert_ended(body: dict[str, Any]) -> None:
    """Completed, or failed/cancelled with a reason: never lost, never stuck."""
    assert body["status"] in ENDED, body
    if body["status"] == "failed":
        assert body.get("error"), body


def wait_all(url: str, ids: list[str], headers: dict[str, str] | None = None) -> list[dict]:
    bodies = [wait_for_job(url, job_id, headers=headers, timeout=240) for job_id in ids]
    for body in bodies:
        assert_ended(body)
    return bodies


def worker_pid(url: str) -> int | None:
    return httpx.get(f"{url}/api/status").json()["devices"][0]["pid"]


def kill(pid: int | None, sig: int = signal.SIGKILL) -> None:
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
