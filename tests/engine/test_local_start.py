"""How local workers start: GPU workers are spawned, CPU workers fork from the fork server.

A GPU worker forked from a process where CUDA was initialised cannot use CUDA (seen on
an H200: every GPU worker died at start), so the spawn path must work on its own. This
machine has no GPU, so a CPU worker is sent down the spawn path and runs a real job.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from pathlib import Path

import pytest

from pixelpool.config import SchedulerSettings
from pixelpool.engine import local
from pixelpool.engine.devices import DeviceInfo
from pixelpool.engine.local import LocalWorker
from pixelpool.engine.scheduler import Scheduler
from pixelpool.engine.slot import Slot

from .engine_helpers import Recorder, make_task

GIB = 1 << 30


@pytest.mark.parametrize(("kind", "method"), [("cuda", "spawn"), ("mps", "spawn"),
                                              ("cpu", "forkserver")])  # fmt: skip
def test_start_method_per_device_kind(kind: str, method: str) -> None:
    device = DeviceInfo(f"{kind}0", kind, 0, kind, 8 * GIB)
    assert local._context(device).get_start_method() == method


def test_a_spawned_worker_runs_a_job(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The spawn path end to end: the process starts, loads the model, returns the image
    (its arguments pickle and `worker_main` needs nothing from a preloaded parent)."""
    monkeypatch.setattr(local, "_context", lambda _device: mp.get_context("spawn"))

    async def main() -> tuple[str, object]:
        rec = Recorder()
        device = DeviceInfo("cpu", "cpu", 0, "cpu", 8 * GIB)
        worker = LocalWorker(device, {"dtype": "auto", "budget_bytes": 2 * GIB})
        engine = Scheduler([Slot(worker, ["*"])], rec, SchedulerSettings())
        await engine.start()
        try:
            engine.submit(make_task(models_dir, "spawned", steps=2))
            return await asyncio.wait_for(rec._future("spawned"), 120)
        finally:
            await engine.stop()

    kind, result = asyncio.run(main())
    assert kind == "ok", result
    assert result.images[0].shape == (64, 64, 3)
