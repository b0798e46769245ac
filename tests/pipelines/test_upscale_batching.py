"""Upscale jobs from separate requests batch in the engine (real worker process) and
each batched result equals the job run alone (within 1/255); batching off runs them one
by one. The two same-size images share each forward; the third runs its own tiles."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pixelpool.config import SchedulerSettings, Settings
from pixelpool.engine.pool import build_scheduler
from pixelpool.engine.task import Task
from pixelpool.families.upscale.params import UpscaleParams
from pixelpool.pipelines.base import Result, WorkItem
from pixelpool.pipelines.upscale.family import FAMILY
from pixelpool.testing.tiny_upscale import smooth_picture, write_tiny_upscaler

SIZES = {"a": (32, 32), "b": (32, 32), "c": (24, 20)}  # two share a size, one does not


class Listener:
    """Records the batch size each job started with and each job's outcome."""

    def __init__(self) -> None:
        self.batch_sizes: dict[str, int] = {}
        self.done: dict[str, asyncio.Future[Any]] = {}

    def _future(self, job_id: str) -> asyncio.Future[Any]:
        return self.done.setdefault(job_id, asyncio.get_running_loop().create_future())

    def job_started(self, job_id: str, device_id: str, batch_size: int) -> None:
        self.batch_sizes[job_id] = batch_size

    def job_progress(self, *args: Any, **kwargs: Any) -> None:
        pass

    def job_finished(self, job_id: str, result: Result, device_id: str, run_s: float) -> None:
        self._future(job_id).set_result(result)

    def job_failed(self, job_id: str, error: str, kind: str, attempts: int | None = None) -> None:
        self._future(job_id).set_result(RuntimeError(f"{kind}: {error}"))

    def job_requeued(self, job_id: str, reason: str, attempts: int) -> None:
        pass


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Path]]:
    root = tmp_path_factory.mktemp("upscale-batch")
    path = write_tiny_upscaler(root / "Compact.safetensors", "Compact")
    model = {"name": "tiny-compact", "path": str(path), "architecture": "Compact",
             "format": "safetensors"}  # fmt: skip
    images = {}
    for i, (job, (h, w)) in enumerate(SIZES.items()):
        images[job] = root / f"{job}.png"
        Image.fromarray(smooth_picture(h, w, seed=i)).save(images[job])
    return model, images


def run_engine(batching: bool, model: dict[str, Any], images: dict[str, Path]) -> Listener:
    """Submit every job in one go (as separate requests would) and wait for all."""

    async def go() -> Listener:
        settings = Settings(scheduler=SchedulerSettings(batching=batching, max_batch=4))
        listener = Listener()
        engine = build_scheduler(settings, listener)
        await engine.start()
        try:
            while not engine.ready:
                await asyncio.sleep(0.05)
            for job, image in images.items():
                params = UpscaleParams(image=str(image), tile=16, overlap=8)
                engine.submit(Task(job, "upscale", "upscale", model, params.model_dump(),
                                   batch_key=params.batch_key()))  # fmt: skip
            for job in images:
                await asyncio.wait_for(listener._future(job), timeout=120)
        finally:
            await engine.stop()
        return listener

    return asyncio.run(go())


def alone(model: dict[str, Any], image: Path) -> np.ndarray:
    loaded = FAMILY.load(model, "cpu")
    params = UpscaleParams(image=str(image), tile=16, overlap=8).model_dump()
    (result,) = FAMILY.run(loaded, [WorkItem("x", "upscale", params)], lambda *a: None,
                           lambda: False)  # fmt: skip
    return result.images[0]


@pytest.mark.parametrize("batching", [True, False])
def test_same_options_batch_across_requests(inputs, batching: bool) -> None:
    model, images = inputs
    listener = run_engine(batching, model, images)
    want = {job: len(images) for job in images} if batching else dict.fromkeys(images, 1)
    assert listener.batch_sizes == want
    for job, image in images.items():
        result = listener.done[job].result()
        assert isinstance(result, Result), result
        h, w = SIZES[job]
        assert result.images[0].shape == (h * 4, w * 4, 3)
        # A forward of two images sums in another order than one of one image (the last
        # float bit), so an output may round to the next level: within 1/255, not bitwise.
        diff = np.abs(result.images[0].astype(int) - alone(model, image))
        assert diff.max() <= (1 if batching else 0)
