"""Another process holds the job store's write lock for a while: requests wait or get
503 with Retry-After, never 500, and every accepted job still ends.

Which of the two a new job gets depends on timing: the store's one writer thread
may be retrying a running job's durable write (its status, its events), and then
the new job's insert waits behind it until the lock is released (a 200, late)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from pixelpool.testing.server import ServerProcess

from .faults_helpers import JOB, enqueue, wait_all

HOLD_S = 8  # longer than the store's busy timeout (5 s): new jobs then get 503

HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")  # the write lock, as a backup or a sqlite3 shell takes it
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_requests_wait_or_get_503_while_another_process_holds_the_lock(
    models_dir: Path, tmp_path: Path
) -> None:
    with ServerProcess(models_dir, tmp_path) as server:
        url = server.url
        accepted = [enqueue(url, seed) for seed in range(3)]  # these run during the hold
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(tmp_path / "jobs.db"), str(HOLD_S)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        codes = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for seed in range(3, 6):
                response = client.post("/api/enqueue/generate", json={**JOB, "seed": seed})
                codes.append(response.status_code)
                if response.status_code == 200:
                    accepted.append(response.json()["job_id"])
                else:
                    assert response.status_code == 503, response.text
                    assert int(response.headers["Retry-After"]) > 0
                    assert "busy" in response.json()["error"]
                for job_id in accepted:  # reads go on (WAL): never a 500
                    assert client.get(f"/api/job/{job_id}").status_code == 200
                assert client.get("/health").status_code == 200
        assert set(codes) <= {200, 503}, codes
        assert holder.wait(60) == 0
        bodies = wait_all(url, accepted)
        assert [b["status"] for b in bodies] == ["completed"] * len(accepted)
        assert "internal server error" not in server.log()
