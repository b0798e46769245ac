"""`devices.<id>.families`: a job runs only on a device that serves its family, and one
whose family no device serves is refused at submit (never queued forever). The same for
a cluster node's models: a job runs only where its model is; one on no node is refused.
Devices that join at run time take work."""

import asyncio
import dataclasses

import pytest

from pixelpool.config import SchedulerSettings
from pixelpool.engine import policy
from pixelpool.engine.policy import Queue
from pixelpool.engine.refusals import NoDeviceServes
from pixelpool.engine.scheduler import Scheduler
from pixelpool.engine.task import Task
from pixelpool.testing.fakes import FakeClock, FakeWorker, Ledger, fake_slots, fake_task


def task(job_id: str, family: str) -> Task:
    return dataclasses.replace(fake_task(job_id, group=family), family=family)


def two_devices() -> list:
    slots = fake_slots(2)
    slots[0].families = frozenset({"diffusion"})
    slots[1].families = frozenset({"upscale"})
    return slots


def test_policy_plans_only_tasks_of_the_devices_families() -> None:
    diffusion_only, upscale_only = two_devices()
    queue = Queue(SchedulerSettings(max_batch=1))
    for t in (task("d1", "diffusion"), task("u1", "upscale"), task("d2", "diffusion")):
        queue.add(t)
    plan = queue.plan(upscale_only, 0.0)
    assert plan is not None and [t.job_id for t in plan.batch] == ["u1"]
    queue.take(plan.batch)
    assert queue.plan(upscale_only, 0.0) is None  # only diffusion is left
    plan = queue.plan(diffusion_only, 0.0)
    assert plan is not None and plan.batch[0].family == "diffusion"


def test_unserved_names_the_family_and_refusal_agrees() -> None:
    slots = two_devices()
    assert policy.unserved(task("u", "upscale"), slots) is None
    reason = policy.unserved(task("t", "tag"), slots)
    assert reason is not None and "tag family" in reason and "families" in reason
    assert policy.refusal(task("t", "tag"), slots) == reason


def test_scheduler_dispatches_each_family_to_its_device_and_refuses_the_rest() -> None:
    slots = two_devices()
    scheduler = Scheduler(
        slots, Ledger(), SchedulerSettings(max_batch=4),
        respawn=lambda slot: FakeWorker(slot.handle.device), clock=FakeClock(),
    )  # fmt: skip
    workers = [s.handle for s in slots]
    assert all(isinstance(w, FakeWorker) for w in workers)

    async def body() -> None:
        await scheduler.start(run_loop=False)
        try:
            for job_id, family in (("u1", "upscale"), ("d1", "diffusion"), ("u2", "upscale")):
                scheduler.submit(task(job_id, family))
            await scheduler.step()
            assert workers[0].job_ids() == ["d1"]  # type: ignore[attr-defined]
            assert sorted(workers[1].job_ids()) == ["u1", "u2"]  # type: ignore[attr-defined]
            with pytest.raises(NoDeviceServes, match="bgremove family"):
                scheduler.submit(task("b1", "bgremove"))
            assert scheduler.queue_depth() == 0
            snapshot = scheduler.snapshot()
            assert [d["families"] for d in snapshot] == [["diffusion"], ["upscale"]]
        finally:
            await scheduler.stop()

    asyncio.run(body())


def test_a_model_on_no_node_is_refused_naming_it() -> None:
    slots = fake_slots(2)
    job = fake_task("m")
    slots[0].models, slots[1].models = frozenset(), frozenset({"/elsewhere"})
    reason = policy.unserved(job, slots)
    assert reason is not None and "is on no node" in reason and job.model["name"] in reason
    slots[1].models = frozenset({job.model["path"]})
    assert policy.unserved(job, slots) is None
    assert [s.can_run(job) for s in slots] == [False, True]
    queue = Queue(SchedulerSettings())
    queue.add(job)
    assert queue.plan(slots[0], 0.0) is None and queue.plan(slots[1], 0.0) is not None


def test_a_device_that_joins_at_run_time_takes_work() -> None:
    first, joining = fake_slots(2)
    first.models = frozenset()  # has no model: only the newcomer can run the job
    scheduler = Scheduler([first], Ledger(), SchedulerSettings(), clock=FakeClock())

    async def body() -> None:
        await scheduler.start(run_loop=False)
        try:
            with pytest.raises(NoDeviceServes, match="on no node"):
                scheduler.submit(fake_task("early"))
            await scheduler.add_slot(joining)
            await scheduler.add_slot(joining)  # known already: ignored
            assert [s.device_id for s in scheduler.slots] == ["fake0", "fake1"]
            scheduler.submit(fake_task("late"))
            await scheduler.step()
            assert joining.handle.job_ids() == ["late"]  # type: ignore[attr-defined]
        finally:
            await scheduler.stop()

    asyncio.run(body())
