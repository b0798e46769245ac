"""The disk fills up while a result is written: the job fails with the reason, and no
half-written file is ever left or served. Needs root (a tiny tmpfs); skipped otherwise."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

from .faults_helpers import enqueue


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """<data_dir>/artifacts on its own 256 KiB tmpfs."""
    target = tmp_path / "data" / "artifacts"
    target.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(target)]
    if subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _fill(disk: Path) -> Path:
    """Take every free block, so the next artifact write meets ENOSPC."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 4096)
    return filler


def test_full_disk_fails_the_job_with_a_reason_and_leaves_no_partial_file(
    models_dir: Path, tiny_disk: Path
) -> None:
    with ServerProcess(models_dir, tiny_disk.parent) as server:
        filler = _fill(tiny_disk)
        job_id = enqueue(server.url, 1, width=128, height=128)
        body = wait_for_job(server.url, job_id)
        assert body["status"] == "failed", body
        assert "No space left on device" in body["error"], body
        assert httpx.get(f"{server.url}/api/job/{job_id}/result").status_code != 200
        left = [p for p in tiny_disk.rglob("*") if p.is_file() and p != filler]
        assert left == []  # no partial artifact, no temporary file
        # Space again: the server goes on as before.
        filler.unlink()
        job_id = enqueue(server.url, 2, width=128, height=128)
        assert wait_for_job(server.url, job_id)["status"] == "completed"
        result = httpx.get(f"{server.url}/api/job/{job_id}/result")
        assert result.status_code == 200 and result.content.startswith(b"\x89PNG")
