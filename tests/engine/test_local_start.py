"""How local workers start: GPU workers are spawned, CPU workers fork from the fork server.

A GPU worker forked from a process where CUDA was initialised cannot use CUDA (seen on
an H200: every GPU worker died at start), so the spawn path must work on its own. This
machine has no GPU, so a CPU worker is sent down the spawn path and runs a real job.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import socket
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


def _cpu_worker() -> LocalWorker:
    device = DeviceInfo("cpu", "cpu", 0, "cpu", 8 * GIB)
    return LocalWorker(device, {"dtype": "auto", "budget_bytes": 2 * GIB})


async def _until_running(rec: Recorder, job_id: str) -> None:
    """Until the job's first progress step: its batch is on the worker."""
    while not any(k == "progress" and v[0] == job_id for k, v in rec.events):
        await asyncio.sleep(0.01)


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
        worker = _cpu_worker()
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


def test_a_signal_to_the_process_group_leaves_the_worker_to_the_server(
    models_dir: Path,
) -> None:
    """systemd's default stop and Ctrl+C signal every process of the group: the worker
    finishes its job (no lost run) and ends when the server stops it."""

    async def main() -> tuple[tuple[str, object], Recorder, LocalWorker, bool]:
        rec = Recorder()
        worker = _cpu_worker()
        engine = Scheduler([Slot(worker, ["*"])], rec, SchedulerSettings())
        await engine.start()
        try:
            engine.submit(make_task(models_dir, "long", steps=30))
            await _until_running(rec, "long")
            assert worker.pid is not None
            os.kill(worker.pid, signal.SIGTERM)
            os.kill(worker.pid, signal.SIGINT)
            await asyncio.sleep(0.5)
            assert worker.is_alive(), "the signal killed the worker"
            outcome = await asyncio.wait_for(rec._future("long"), 120)
            return outcome, rec, worker, worker.is_alive()
        finally:
            await engine.stop()

    (kind, result), rec, worker, alive_after_job = asyncio.run(main())
    assert kind == "ok", result
    assert ("requeued", "long") not in rec.events
    assert alive_after_job and not worker.is_alive()


def test_a_worker_whose_server_is_gone_stops_its_batch_and_ends_cleanly(
    models_dir: Path,
) -> None:
    """The engine's end of the pipe closes mid-job (the server stopped, or died): the
    worker stops the batch at its next step and exits 0, not with a broken-pipe crash."""

    async def main() -> LocalWorker:
        rec = Recorder()
        worker = _cpu_worker()
        engine = Scheduler([Slot(worker, ["*"])], rec, SchedulerSettings(progress_interval_ms=0))
        await engine.start()
        try:
            engine.submit(make_task(models_dir, "orphaned", steps=1000))
            await _until_running(rec, "orphaned")
            assert worker._conn is not None
            # The server's end goes away (as when its process ends): the worker's sends
            # fail with a broken pipe and its reads end.
            with socket.socket(fileno=os.dup(worker._conn.fileno())) as end:
                end.shutdown(socket.SHUT_RDWR)
            await asyncio.to_thread(worker.join, 120)
            return worker
        finally:
            await engine.stop()

    worker = asyncio.run(main())
    assert worker._process is not None and worker._process.exitcode == 0
