"""The scheduler with a worker that decodes one batch beside the next (fake workers: each
event when the test says), and the dtype in the memory fit that picks batch sizes."""

import asyncio

import pytest

from pixelpool.config import SchedulerSettings, Settings, load_settings
from pixelpool.engine.devices import DeviceInfo
from pixelpool.engine.messages import BatchDenoised, BatchDone, ItemFailed, ItemResult
from pixelpool.engine.pool import activation_scale, worker_options
from pixelpool.engine.scheduler import Scheduler
from pixelpool.engine.slot import Slot
from pixelpool.testing.fakes import (
    FakeClock,
    FakeWorker,
    Ledger,
    fake_device,
    fake_result,
    fake_slots,
    fake_task,
)

GIB = 1 << 30


def _rig() -> tuple[Scheduler, FakeWorker, Ledger]:
    ledger, slots = Ledger(), fake_slots(1)
    scheduler = Scheduler(
        slots,
        ledger,
        SchedulerSettings(max_batch=2, batch_window_ms=0),
        respawn=lambda slot: FakeWorker(slot.handle.device),
        clock=FakeClock(),
    )
    worker = slots[0].handle
    assert isinstance(worker, FakeWorker)
    return scheduler, worker, ledger


def test_a_denoised_batch_frees_the_worker_and_its_results_still_land() -> None:
    async def body() -> None:
        scheduler, worker, ledger = _rig()
        await scheduler.start(run_loop=False)
        for job in ("a1", "a2", "b1"):
            scheduler.submit(fake_task(job, group=job[0]))
        await scheduler.step()
        first = worker.batches[0]
        assert [i.job_id for i in first.items] == ["a1", "a2"]
        worker._emit(BatchDenoised(first.batch_id))
        await scheduler.step()
        second = worker.batches[-1]
        assert [i.job_id for i in second.items] == ["b1"]  # started while a1, a2 decode
        assert sorted(scheduler.snapshot()[0]["active_jobs"]) == ["a1", "a2", "b1"]
        assert scheduler.cancel("a2") == "cancelling"  # a decoding job can be cancelled
        worker._emit(ItemResult("a1", fake_result(1)))
        worker._emit(ItemFailed("a2", "cancelled", "cancelled"))
        worker._emit(BatchDone(first.batch_id, 0.0, {}))
        assert scheduler.slots[0].batch_id == second.batch_id  # b1 still runs
        assert ledger.ended == {"a1": ("ok", "fake0"), "a2": ("cancelled", "cancelled")}
        worker.finish()
        assert ledger.ended["b1"][0] == "ok"
        await scheduler.stop()

    asyncio.run(body())


def test_a_worker_lost_while_decoding_requeues_that_batch_too() -> None:
    async def body() -> None:
        scheduler, worker, ledger = _rig()
        await scheduler.start(run_loop=False)
        for job in ("a1", "b1"):
            scheduler.submit(fake_task(job, group=job[0]))
        await scheduler.step()
        worker._emit(BatchDenoised(worker.batches[0].batch_id))
        await scheduler.step()
        worker._emit(BatchDone("some-other-batch", 0.0, {}))  # not its batch: ignored
        worker.die()
        requeued = {job for kind, job, _ in ledger.events if kind == "requeued"}
        assert requeued == {"a1", "b1"} and not ledger.ended
        assert scheduler.slots[0].finishing == {}
        await scheduler.stop()

    asyncio.run(body())


def test_sixteen_bit_devices_fit_twice_the_activations() -> None:
    assert activation_scale("auto", "cuda") == 0.5
    assert activation_scale("auto", "cpu") == activation_scale("auto", "mps") == 1.0
    assert activation_scale("float16", "cpu") == activation_scale("bfloat16", "cuda") == 0.5
    assert activation_scale("float32", "cuda") == 1.0
    task = fake_task("t", model_bytes=2 * GIB, item_bytes=GIB)
    fp32 = Slot(FakeWorker(fake_device("a", 8)), ["*"], activation_scale=1.0)
    fp16 = Slot(FakeWorker(fake_device("b", 8)), ["*"], activation_scale=0.5)
    fp32.budget_bytes = fp16.budget_bytes = 8 * GIB
    assert fp32.fits(task, 6) and not fp32.fits(task, 7)
    assert fp16.fits(task, 12) and not fp16.fits(task, 13)


def test_overlap_decode_reaches_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = DeviceInfo("cpu", "cpu", 0, "CPU", 8 * GIB)
    assert worker_options(Settings(), cpu)["overlap_decode"] == "auto"
    monkeypatch.setenv("PIXELPOOL_DEVICES__CPU__OVERLAP_DECODE", "true")
    assert worker_options(load_settings(), cpu)["overlap_decode"] is True
    assert worker_options(Settings(), cpu)["stream_results"] == "auto"
    monkeypatch.setenv("PIXELPOOL_DEVICES__CPU__STREAM_RESULTS", "true")
    assert worker_options(load_settings(), cpu)["stream_results"] is True
