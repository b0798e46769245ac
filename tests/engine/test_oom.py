"""Out of memory, for real: a CPU worker capped below what a batch needs.

The cap is the worker's RLIMIT_DATA (what `devices.<id>.memory_limit_gb` sets), so the
allocation fails inside torch exactly as it does when a host runs out of memory. The
tests lower it on a warmed-up worker to just above what that worker already uses,
which makes them independent of how much memory torch takes on a given machine.
"""

import asyncio
import re
import resource
from pathlib import Path

from pixelpool.config import DeviceSettings, SchedulerSettings, Settings
from pixelpool.engine.devices import DeviceInfo
from pixelpool.engine.local import LocalWorker
from pixelpool.engine.pool import build_scheduler
from pixelpool.engine.scheduler import Scheduler
from pixelpool.engine.slot import Slot

from .engine_helpers import Recorder, make_task

GIB = 1 << 30
# Squeezed workers keep this much room: room for what a worker allocates outside torch
# after an out-of-memory error (a thread's stack, a library's thread-local data, which
# RLIMIT_DATA counts: with 16 MiB that could abort the worker process), and far less
# than a 1024x1024 image needs (its decode's activations are ~256 MiB a tensor; at
# 512x512 a 64 MiB squeeze was sometimes enough for one image).
HEADROOM = 128 << 20
BIG = {"width": 1024, "height": 1024, "steps": 2}
# A pair needs twice HEADROOM (measured: 256-320 MiB more than a warm worker's data, most
# of it the UNet's attention at 96x96 latents; one image 180-200 MiB). A 640x640 pair
# (160-192 MiB) sometimes fit: a squeezed worker also has what its heap holds free, which
# the cap cannot see. One step: the memory peaks in every step alike.
TWO = {"width": 768, "height": 768, "steps": 1}


def _cpu(device_id: str) -> LocalWorker:
    device = DeviceInfo(device_id, "cpu", 0, "cpu", 8 * GIB)
    return LocalWorker(device, {"dtype": "auto", "budget_bytes": 2 * GIB})


async def _engine(count: int, rec: Recorder) -> Scheduler:
    slots = [Slot(_cpu(f"cpu{i}"), ["*"]) for i in range(count)]
    engine = Scheduler(slots, rec, SchedulerSettings(max_batch=4))
    await engine.start()
    while not all(s.ready for s in engine.slots):
        await asyncio.sleep(0.05)
    return engine


async def _warm(engine: Scheduler, rec: Recorder, models_dir: Path) -> None:
    """One small job per worker (different sizes, so not batched): model and threads up."""
    for i in range(len(engine.slots)):
        engine.submit(make_task(models_dir, f"warm{i}", width=64 + 8 * i))
    for i in range(len(engine.slots)):
        assert (await rec._future(f"warm{i}"))[0] == "ok"
    while any(s.batch_id for s in engine.slots):
        await asyncio.sleep(0.02)


def _squeeze(slot: Slot) -> None:
    """Cap the worker's private memory just above what it uses now."""
    pid = slot.handle.pid
    status = Path(f"/proc/{pid}/status").read_text()
    used = int(re.search(r"VmData:\s+(\d+) kB", status).group(1)) << 10
    _soft, hard = resource.prlimit(pid, resource.RLIMIT_DATA)
    resource.prlimit(pid, resource.RLIMIT_DATA, (used + HEADROOM, hard))


def _requeues(rec: Recorder, job_id: str) -> int:
    return sum(1 for kind, value in rec.events if kind == "requeued" and value == job_id)


def test_oom_batch_is_split_then_moved_to_a_device_with_room(models_dir: Path) -> None:
    async def go() -> None:
        rec = Recorder()
        engine = await _engine(2, rec)
        try:
            await _warm(engine, rec, models_dir)
            small, roomy = engine.slots
            _squeeze(small)
            # The roomy worker gets a job first (the squeezed one is excluded from it);
            # then both queue before the scheduler looks and leave as one batch on the
            # only idle worker, the squeezed one (two idle workers would share them).
            hold = make_task(models_dir, "hold", width=256, height=256, steps=4)
            hold.excluded = {small.device_id}
            engine.submit(hold)
            while roomy.idle:
                await asyncio.sleep(0.01)
            for job in ("a", "b"):
                engine.submit(make_task(models_dir, job, **TWO, seed=len(job)))
            results = [await asyncio.wait_for(rec._future(j), 300) for j in ("a", "b")]
            await asyncio.wait_for(rec._future("hold"), 300)
            assert [kind for kind, _ in results] == ["ok", "ok"]
            assert ("started", ("a", 2)) in rec.events  # first try: one batch of two
            # Split to batches of one (a requeue each); an image that ran out of memory on
            # the squeezed worker alone too was requeued again and moved to the roomy one.
            assert all(_requeues(rec, j) >= 1 for j in ("a", "b"))
            for job in ("a", "b"):
                if _requeues(rec, job) > 1:
                    assert ("finished", (job, roomy.device_id)) in rec.events
            # The OOM was caught inside the worker: it lives on, never restarted.
            assert small.restarts == 0 and small.handle.is_alive()
        finally:
            await engine.stop()

    asyncio.run(go())


def test_oom_everywhere_fails_with_a_clear_reason(models_dir: Path) -> None:
    async def go() -> None:
        rec = Recorder()
        engine = await _engine(1, rec)
        try:
            await _warm(engine, rec, models_dir)
            _squeeze(engine.slots[0])
            engine.submit(make_task(models_dir, "huge", **BIG))
            kind, error = await asyncio.wait_for(rec._future("huge"), 300)
            assert kind == "error"
            assert "out of memory on every device" in error
            assert _requeues(rec, "huge") == 0  # batch of one, no other device
            # The worker recovers: with its cap lifted, it runs jobs again.
            pid = engine.slots[0].handle.pid
            _soft, hard = resource.prlimit(pid, resource.RLIMIT_DATA)
            resource.prlimit(pid, resource.RLIMIT_DATA, (hard, hard))
            engine.submit(make_task(models_dir, "after"))
            assert (await rec._future("after"))[0] == "ok"
        finally:
            await engine.stop()

    asyncio.run(go())


def test_memory_limit_setting_caps_the_cpu_worker(models_dir: Path) -> None:
    async def go() -> None:
        settings = Settings(devices={"cpu": DeviceSettings(memory_limit_gb=6)})
        engine = build_scheduler(settings, Recorder())
        await engine.start()
        try:
            while not engine.ready:
                await asyncio.sleep(0.05)
            soft, _hard = resource.prlimit(engine.slots[0].handle.pid, resource.RLIMIT_DATA)
            assert soft == 6 * GIB
        finally:
            await engine.stop()

    asyncio.run(go())
