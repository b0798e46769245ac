"""A model replaced on disk under the same path is read again at its next job, not served
stale from the worker's cache until a restart: a real WorkerCore on the tiny SD 1.x model,
its files swapped for another model's and rescanned, as an operator updating a
checkpoint in place does."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pixelpool import pipelines
from pixelpool.engine.messages import ItemResult, RunBatch, Stop
from pixelpool.engine.worker import WorkerCore
from pixelpool.pipelines.base import WorkItem
from pixelpool.registry.scan import scan_models
from pixelpool.testing import write_demo_models

PARAMS = {"prompt": "a red fox", "negative_prompt": "", "width": 64, "height": 64,
          "steps": 2, "cfg_scale": 5.0, "seed": 3, "sampler": "euler"}  # fmt: skip
DEVICE = {"id": "cpu", "kind": "cpu", "index": 0, "torch_device": "cpu",
          "total_memory_bytes": 8 << 30}  # fmt: skip


def _wire(models: Path) -> dict[str, Any]:
    (entry,) = [e for e in scan_models(models) if e.name == "demo-sd"]
    return entry.to_wire()


class Worker:
    """A real worker core serving on a thread; `image` runs one job and waits for it."""

    def __init__(self) -> None:
        self.results: dict[str, np.ndarray] = {}
        self._arrived = threading.Condition()
        options = {"dtype": "auto", "budget_bytes": 4 << 30, "ram_budget_bytes": 0,
                   "progress_interval_s": 0}  # fmt: skip
        self.core = WorkerCore(DEVICE, options, self._send)
        self.core.open()
        self.thread = threading.Thread(target=self.core.serve)
        self.thread.start()

    def _send(self, message: object) -> None:
        if isinstance(message, ItemResult):
            with self._arrived:
                self.results[message.job_id] = message.result.images[0]
                self._arrived.notify_all()

    def image(self, model: dict[str, Any]) -> np.ndarray:
        job = f"j{len(self.results)}"
        self.core.deliver(RunBatch(job, "diffusion", model, [WorkItem(job, "txt2img", PARAMS)]))
        with self._arrived:
            assert self._arrived.wait_for(lambda: job in self.results, 120)
        return self.results[job]

    def stop(self) -> None:
        self.core.deliver(Stop())
        self.thread.join(60)
        assert not self.thread.is_alive()


@pytest.fixture
def restore_options() -> Any:
    old = pipelines.configure({})
    yield
    pipelines.configure(old)


def test_replaced_files_are_read_again(tmp_path: Path, restore_options: None) -> None:
    models = tmp_path / "models"
    write_demo_models(models)
    write_demo_models(tmp_path / "other", seed=7)  # another model, the same layout
    before = _wire(models)
    worker = Worker()
    try:
        old = worker.image(before)  # loaded and cached
        target = Path(before["path"])
        shutil.rmtree(target)
        shutil.copytree(tmp_path / "other" / "sd15" / "demo-sd", target)
        for f in target.rglob("*"):  # a later mtime, whatever the clock's resolution
            os.utime(f, ns=(before["mtime_ns"] + 10**9, before["mtime_ns"] + 10**9))
        after = _wire(models)  # a rescan
        assert after["path"] == before["path"] and after["mtime_ns"] != before["mtime_ns"]
        replaced, again = worker.image(after), worker.image(after)
    finally:
        worker.stop()
    fresh_worker = Worker()
    try:
        fresh = fresh_worker.image(after)
    finally:
        fresh_worker.stop()
    assert not np.array_equal(old, replaced)
    assert np.array_equal(replaced, fresh)  # the new files' image, as a fresh worker makes it
    assert np.array_equal(again, fresh)
