"""On a CUDA GPU: the Ray backend gives the GPU its own worker actor (`<node>/cuda0`,
`num_gpus=1`) and it makes the images a local GPU worker makes for the same requests.

Two real servers on the same models, one after the other: `pixelpool serve --cluster
ray` (a Ray runtime of its own, loopback only) and the local backend with its CPU
worker off. Skipped without CUDA or Ray; on a GPU machine: `pytest tests/engine/test_ray_gpu.py`.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from pixelpool.testing.client import wait_for_job
from pixelpool.testing.server import ServerProcess

pytest.importorskip("ray")
pytestmark = [
    pytest.mark.ray,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

JOB = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 4}
JOBS = [{**JOB, "model": "demo-sd", "seed": s} for s in (1, 2, 3)] + [
    {**JOB, "model": "demo-sdxl", "seed": 4}
]
QUIET = {"RAY_DISABLE_USAGE_STATS": "1"}


def _serve(
    models_dir: Path, data_dir: Path, env: dict[str, str], args: list[str]
) -> tuple[list[dict[str, Any]], list[np.ndarray], list[dict[str, Any]]]:
    """Every job sent at once (so some share a batch); their ends, images and the devices."""
    server = ServerProcess(models_dir, data_dir, env=env, args=args)
    server.start(timeout=240)
    try:
        ids = []
        for job in JOBS:
            r = httpx.post(f"{server.url}/api/enqueue/generate", json=job)
            assert r.status_code == 200, r.text
            ids.append(r.json()["job_id"])
        ends = [wait_for_job(server.url, job_id, timeout=240) for job_id in ids]
        images = [
            np.asarray(
                Image.open(
                    io.BytesIO(httpx.get(f"{server.url}/api/job/{job_id}/result").content)
                ).convert("RGB")
            )
            for job_id in ids
        ]
        devices = httpx.get(f"{server.url}/api/status").json()["devices"]
    finally:
        server.stop()
    return ends, images, devices


def test_a_gpu_actor_makes_the_images_of_a_local_gpu_worker(
    models_dir: Path, tmp_path: Path
) -> None:
    ends, remote, devices = _serve(models_dir, tmp_path / "ray", QUIET, ["--cluster", "ray"])
    assert [e["status"] for e in ends] == ["completed"] * len(JOBS), ends
    ids = [d["id"] for d in devices]
    assert any(i.endswith("/cuda0") for i in ids) and not any(i.endswith("/cpu0") for i in ids)
    assert {d["node"] for d in devices} and all(d["ready"] for d in devices), devices

    no_cpu = {**QUIET, "PIXELPOOL_DEVICES__CPU__ENABLED": "false"}
    ends, local, devices = _serve(models_dir, tmp_path / "local", no_cpu, [])
    assert [e["status"] for e in ends] == ["completed"] * len(JOBS), ends
    assert [d["id"] for d in devices] == ["cuda0"], devices  # the CPU worker is off

    for i, (a, b) in enumerate(zip(remote, local, strict=True)):
        diff = int(np.abs(a.astype(int) - b.astype(int)).max())
        assert diff <= 1, f"job {i}: the actor's image differs by {diff}/255"  # float16 batches
    assert int(np.abs(remote[0].astype(int) - remote[1].astype(int)).max()) > 10
