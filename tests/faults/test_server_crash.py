"""kill -9 of the server (and its worker) with jobs of several keys queued and running,
then a restart on the same data dir: every accepted job ends, none lost or stuck."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from pixelpool.testing.server import ServerProcess

from .faults_helpers import enqueue, wait_all

KEYS = ["fault-key-one-0123456789", "fault-key-two-0123456789", "fault-key-three-012345678"]


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_server_killed_with_jobs_of_several_keys_then_restarted(
    models_dir: Path, tmp_path: Path
) -> None:
    env = {"PIXELPOOL_AUTH__KEYS": json.dumps(KEYS)}
    server = ServerProcess(models_dir, tmp_path, env=env).start()
    ids: dict[str, list[str]] = {key: [] for key in KEYS}
    try:
        slow = enqueue(server.url, 1, _auth(KEYS[0]), steps=40, width=192, height=192)
        ids[KEYS[0]].append(slow)
        for n in range(3):
            for key in KEYS:
                ids[key].append(enqueue(server.url, 10 + n, _auth(key)))
        # Kill while the slow job runs: one running, the rest queued.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            job = httpx.get(f"{server.url}/api/job/{slow}", headers=_auth(KEYS[0])).json()
            if job["status"] == "running":
                break
            time.sleep(0.02)
    finally:
        server.kill()  # SIGKILL to the server and its worker together
    with ServerProcess(models_dir, tmp_path, env=env) as again:
        for key, job_ids in ids.items():
            bodies = wait_all(again.url, job_ids, _auth(key))
            assert [b["status"] for b in bodies] == ["completed"] * len(job_ids)
