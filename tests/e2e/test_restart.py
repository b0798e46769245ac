"""Durability: what the server accepted survives a restart, and a crash."""

from pathlib import Path

import httpx

from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

JOB = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 3, "seed": 9}


def test_completed_job_readable_after_restart(models_dir: Path, tmp_path: Path) -> None:
    with ServerProcess(models_dir, tmp_path) as first:
        job_id = httpx.post(f"{first.url}/api/enqueue/generate", json=JOB).json()["job_id"]
        assert wait_for_job(first.url, job_id)["status"] == "completed"
        before = httpx.get(f"{first.url}/api/job/{job_id}/result").content
    with ServerProcess(models_dir, tmp_path) as second:
        body = httpx.get(f"{second.url}/api/job/{job_id}").json()
        assert body["status"] == "completed" and body["seeds"] == [9]
        after = httpx.get(f"{second.url}/api/job/{job_id}/result")
        assert after.status_code == 200 and after.content == before


def test_queued_jobs_run_after_a_crash(models_dir: Path, tmp_path: Path) -> None:
    server = ServerProcess(models_dir, tmp_path).start()
    slow = {**JOB, "steps": 60, "width": 256, "height": 256}
    ids = [httpx.post(f"{server.url}/api/enqueue/generate", json=slow).json()["job_id"]]
    ids += [
        httpx.post(f"{server.url}/api/enqueue/generate", json={**JOB, "seed": s}).json()["job_id"]
        for s in range(1, 6)
    ]
    server.kill()  # SIGKILL to server and worker: nothing gets to clean up
    with ServerProcess(models_dir, tmp_path) as again:
        results = [wait_for_job(again.url, job_id) for job_id in ids]
    assert [r["status"] for r in results] == ["completed"] * 6
    assert [r["seeds"] for r in results[1:]] == [[s] for s in range(1, 6)]
