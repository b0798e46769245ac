"""Worker faults seen from outside: kill -9 at random points of a job's life, and a hang.

Every job ends completed, or failed with a reason once `max_retries` re-runs are spent.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

from .faults_helpers import assert_ended, enqueue, kill

KILLS = int(os.environ.get("PIXELPOOL_FAULT_KILLS", "12"))  # fewer for a quick local run


@pytest.fixture(scope="module")
def url(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"PIXELPOOL_SCHEDULER__HEARTBEAT_TIMEOUT_S": "3"}
    with ServerProcess(models_dir, tmp_path_factory.mktemp("data"), env=env) as server:
        yield server.url


def _ready_pid(url: str, killed: int | None = None) -> int:
    """The worker's pid once it is up; after a kill, its replacement's (the server may
    not have noticed the death yet, so the killed pid is not taken for a live one)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        device = httpx.get(f"{url}/api/status").json()["devices"][0]
        if device["ready"] and device["pid"] and device["pid"] != killed:
            return device["pid"]
        time.sleep(0.05)
    raise TimeoutError("worker did not come back")


@pytest.mark.timeout(1500)  # each kill costs a worker start-up (imports, model load)
def test_worker_killed_at_random_points_of_a_job(url: str) -> None:
    rng = random.Random(20)  # seeded: a failure replays with the same delays
    outcomes = []
    pid: int | None = None
    for n in range(KILLS):
        pid = _ready_pid(url, pid)
        job_id = enqueue(url, seed=n)
        # From "just queued" to "encoding the result": a job here lives ~0.1-0.5 s.
        time.sleep(rng.uniform(0.0, 0.6))
        kill(pid)
        body = wait_for_job(url, job_id, timeout=240)
        assert_ended(body)
        if body["status"] == "failed":
            assert "worker died" in body["error"], body
        outcomes.append((body["status"], body["attempts"]))
    assert all(status in ("completed", "failed") for status, _ in outcomes)
    # The worker was really killed under running jobs, and they ran again.
    assert any(attempts >= 1 for _, attempts in outcomes), outcomes
    _ready_pid(url, pid)  # the last kill may land after its job ended: wait for its restart
    restarts = httpx.get(f"{url}/api/status").json()["devices"][0]["restarts"]
    assert restarts == KILLS


def test_hung_worker_is_killed_by_the_watchdog_and_its_job_reruns(url: str) -> None:
    pid = _ready_pid(url)
    job_id = enqueue(url, seed=99, steps=30, width=128, height=128)
    while httpx.get(f"{url}/api/job/{job_id}").json()["status"] != "running":
        time.sleep(0.02)
    kill(pid, signal.SIGSTOP)  # alive, but silent: no heartbeats
    body = wait_for_job(url, job_id, timeout=240)
    assert body["status"] == "completed" and body["attempts"] >= 1, body
    assert _ready_pid(url) != pid
