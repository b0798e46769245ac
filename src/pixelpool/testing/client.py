"""Small client helpers for tests and benchmarks that talk to a real server."""

from __future__ import annotations

import time
from typing import Any

import httpx

FINISHED = ("completed", "failed", "cancelled", "expired")


def wait_for_job(
    client: httpx.Client | str,
    job_id: str,
    headers: dict[str, str] | None = None,
    timeout: float = 180.0,
) -> dict[str, Any]:
    """Poll `GET /api/job/{id}` until the job has finished; return its last view."""
    get = client.get if isinstance(client, httpx.Client) else None
    base = "" if get is not None else str(client)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = f"{base}/api/job/{job_id}"
        body = (get(path, headers=headers) if get else httpx.get(path, headers=headers)).json()
        if body.get("status") in FINISHED:
            return body
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not finish in {timeout}s")
