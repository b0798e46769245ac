"""Recovery seen from outside: a hung worker is killed and replaced; results expire."""

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

JOB = {"prompt": "a fox", "width": 64, "height": 64, "steps": 3, "seed": 1}


@pytest.fixture(scope="module")
def url(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {
        "PIXELPOOL_STORAGE__TTL_S": "3",
        "PIXELPOOL_STORAGE__SWEEP_INTERVAL_S": "0.5",
        "PIXELPOOL_SCHEDULER__HEARTBEAT_TIMEOUT_S": "4",
    }
    with ServerProcess(models_dir, tmp_path_factory.mktemp("data"), env=env) as server:
        yield server.url


def test_hung_worker_is_killed_and_its_job_rerun(url: str) -> None:
    slow = {**JOB, "steps": 40, "width": 192, "height": 192}
    job_id = httpx.post(f"{url}/api/enqueue/generate", json=slow).json()["job_id"]
    while httpx.get(f"{url}/api/job/{job_id}").json()["denoise_step"] < 1:
        time.sleep(0.05)
    pid = httpx.get(f"{url}/api/status").json()["devices"][0]["pid"]
    os.kill(pid, signal.SIGSTOP)  # hung: alive, but no heartbeats
    body = wait_for_job(url, job_id)
    assert body["status"] == "completed" and body["attempts"] == 1
    device = httpx.get(f"{url}/api/status").json()["devices"][0]
    assert device["restarts"] == 1 and device["pid"] != pid


def test_results_expire_after_their_ttl(url: str) -> None:
    job_id = httpx.post(f"{url}/api/enqueue/generate", json=JOB).json()["job_id"]
    assert wait_for_job(url, job_id)["status"] == "completed"
    assert httpx.get(f"{url}/api/job/{job_id}/result").status_code == 200
    time.sleep(3.5)
    assert httpx.get(f"{url}/api/job/{job_id}").json()["status"] == "expired"
    assert httpx.get(f"{url}/api/job/{job_id}/result").status_code == 410


def test_workers_yield_the_cpu_to_the_http_process(url: str) -> None:
    """A worker runs at a lower CPU priority than the server, so a busy worker cannot
    delay /health and status reads (docs/benchmarks.md, "Load")."""
    pid = httpx.get(f"{url}/api/status").json()["devices"][0]["pid"]
    assert os.getpriority(os.PRIO_PROCESS, pid) > os.getpriority(os.PRIO_PROCESS, 0)
