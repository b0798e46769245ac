"""Vision jobs in real worker processes: the family loads there, jobs of one model and
operation share a batch, and arrays come back whole."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from pixelpool.config import SchedulerSettings, Settings
from pixelpool.engine.pool import build_scheduler
from pixelpool.engine.task import Task
from pixelpool.families.vision.params import DepthParams
from pixelpool.testing.tiny_vision import write_tiny_depth_anything

from ..engine.engine_helpers import Recorder
from .vision_helpers import picture


@pytest.fixture(scope="module")
def depth_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_depth_anything(tmp_path_factory.mktemp("vision") / "tiny-depth")


def task(model: Path, job_id: str, images: list[str]) -> Task:
    params = DepthParams(images=images)
    entry = {"name": "tiny-depth", "path": str(model), "architecture": "depth_anything",
             "format": "transformers", "family": "vision"}  # fmt: skip
    return Task(job_id, "vision", "depth", entry, params.model_dump(),
                batch_key=params.batch_key())  # fmt: skip


def test_depth_jobs_run_in_a_worker(depth_model: Path, tmp_path: Path) -> None:
    first = [picture(tmp_path, 40, 60, 1)[0], picture(tmp_path, 30, 30, 2)[0]]
    second = [picture(tmp_path, 40, 60, 3)[0]]

    async def go() -> None:
        recorder = Recorder()
        engine = build_scheduler(Settings(scheduler=SchedulerSettings(max_batch=4)), recorder)
        await engine.start()
        try:
            engine.submit(task(depth_model, "a", first))
            engine.submit(task(depth_model, "b", second))
            results = [await recorder._future(j) for j in ("a", "b")]
        finally:
            await engine.stop()
        assert [kind for kind, _ in results] == ["ok", "ok"], results
        a, b = (r for _, r in results)
        assert a.info["task"] == "depth" and len(a.info["images"]) == 2
        assert a.arrays["depth/0"].shape == (40, 60) and a.arrays["depth/1"].shape == (30, 30)
        assert b.arrays["depth/0"].dtype == np.float32 and b.arrays["depth/0"].shape == (40, 60)

    asyncio.run(go())
