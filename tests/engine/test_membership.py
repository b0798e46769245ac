"""Machines that come and go (a cluster's nodes), with fake workers: a model only on
nodes that left is refused like a model on no node and its queued jobs fail saying why;
a node gone longer than `node_gone_after_s` leaves the slots and comes back through
discovery; every model a job names must be on its node. No sleeps, no cluster."""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from pixelpool.config import SchedulerSettings, Settings
from pixelpool.engine.backend import Backend
from pixelpool.engine.devices import DeviceInfo
from pixelpool.engine.handle import MachineGone, OnExit, OnMessage, WorkerHandle
from pixelpool.engine.membership import Membership
from pixelpool.engine.needs import named_models
from pixelpool.engine.pool import build_scheduler
from pixelpool.engine.ray_actor import staged_bytes
from pixelpool.engine.refusals import NoDeviceServes
from pixelpool.engine.scheduler import Scheduler
from pixelpool.engine.slot import Slot
from pixelpool.engine.task import Task
from pixelpool.testing.fakes import (
    FAKE_MODEL,
    FakeClock,
    FakeWorker,
    Ledger,
    fake_device,
    fake_task,
)

MODEL = FAKE_MODEL["path"]
LORA = "loras/style.safetensors"
GONE_AFTER_S = 60.0


class Node(FakeWorker):
    """A fake worker whose machine can leave: then `start` raises MachineGone."""

    left = False

    async def start(self, on_message: OnMessage, on_exit: OnExit) -> None:
        if self.left:
            raise MachineGone(f"node of {self.device.id} is not in the cluster")
        await super().start(on_message, on_exit)


class Rig:
    def __init__(self, models: Sequence[frozenset[str]], wait_for_node_s: float = 0.0) -> None:
        self.clock = FakeClock()
        self.ledger = Ledger()
        self.forgotten: list[str] = []
        self.slots = [
            Slot(Node(fake_device(f"n{i}/cpu0")), ["*"], models=m) for i, m in enumerate(models)
        ]
        membership = Membership(
            known_models=lambda: frozenset({MODEL, LORA}),
            vet=lambda task: None,
            forget=lambda device: self.forgotten.append(device.id),
            gone_after_s=GONE_AFTER_S,
            wait_for_node_s=wait_for_node_s,
        )
        self.scheduler = Scheduler(
            list(self.slots),
            self.ledger,
            SchedulerSettings(max_batch=4, heartbeat_timeout_s=3600),
            respawn=self.respawn,
            clock=self.clock,
            membership=membership,
        )

    def respawn(self, slot: Slot) -> WorkerHandle:
        node = Node(slot.handle.device)
        node.left = self.left(slot.device_id)
        return node

    def left(self, device_id: str) -> bool:
        return device_id in getattr(self, "_left", set())

    def node_leaves(self, i: int) -> None:
        """Its machine dies: the worker's stream ends, and it cannot start again."""
        self._left = getattr(self, "_left", set()) | {self.slots[i].device_id}
        worker = self.slots[i].handle
        assert isinstance(worker, FakeWorker)
        worker.die("worker actor lost: ActorDiedError")

    def node_returns(self, i: int) -> None:
        """Its machine is back: discovery finds every node again."""
        self._left = getattr(self, "_left", set()) - {self.slots[i].device_id}
        node = self.slots[i].handle
        assert isinstance(node, Node)
        node.left = False  # the replacement worker made while it was away can start now
        self.scheduler.seen({s.device_id for s in self.slots})

    async def restart_due(self) -> None:
        self.clock.advance(1)
        await self.scheduler.step()


def run(rig: Rig, body: Callable[[Rig], Awaitable[None]]) -> None:
    async def go() -> None:
        await rig.scheduler.start(run_loop=False)
        try:
            await body(rig)
        finally:
            await rig.scheduler.stop()

    asyncio.run(go())


def task(job_id: str, lora: bool = False, group: str = "g") -> Task:
    t = fake_task(job_id, group=group)
    if lora:
        t.params = {**t.params, "loras": [{"name": "style", "path": LORA, "weight": 1.0}]}
    return t


def test_a_model_only_on_nodes_that_left_is_refused_and_its_jobs_fail_saying_why() -> None:
    rig = Rig([frozenset({MODEL}), frozenset()])

    async def body(rig: Rig) -> None:
        rig.scheduler.submit(task("running"))
        await rig.scheduler.step()
        rig.scheduler.submit(task("queued", group="other"))  # behind it, on the same node
        rig.node_leaves(0)  # the running job goes back to the queue ...
        assert ("requeued", "running") in [(k, j) for k, j, _ in rig.ledger.events]
        await rig.restart_due()  # ... and the worker cannot start: its machine is gone
        assert rig.slots[0].gone
        for job_id in ("running", "queued"):
            kind, reason = rig.ledger.ended[job_id]
            assert kind == "error" and "'fake-model' is on no node" in reason
            assert "left the cluster" in reason
        assert rig.scheduler.queue_depth() == 0
        with pytest.raises(NoDeviceServes, match="'fake-model' is on no node") as refused:
            rig.scheduler.check(task("new"))
        assert refused.value.field == "model"
        assert rig.scheduler.model_nodes(MODEL) == []
        assert [d["gone"] for d in rig.scheduler.snapshot()] == [True, False]

    run(rig, body)


def _lose_the_only_node(rig: Rig) -> Callable[[], Awaitable[None]]:
    async def lose() -> None:
        rig.scheduler.submit(task("running"))
        await rig.scheduler.step()
        rig.scheduler.submit(task("queued", group="other"))
        rig.node_leaves(0)  # the running job goes back to the queue
        await rig.restart_due()  # its worker cannot start: the machine is gone
        assert rig.slots[0].gone

    return lose


def test_queued_jobs_wait_for_a_node_that_comes_back_and_run_there() -> None:
    """A restarting node (`wait_for_node_s`): its jobs wait instead of failing; new
    ones are refused meanwhile; when it is back they run."""
    rig = Rig([frozenset({MODEL}), frozenset()], wait_for_node_s=30)

    async def body(rig: Rig) -> None:
        await _lose_the_only_node(rig)()
        rig.clock.advance(28)  # the wait began when the worker could not start (t = 1)
        assert await rig.scheduler.step() == pytest.approx(2)  # wakes when it is up
        assert rig.ledger.ended == {} and rig.scheduler.queue_depth() == 2
        with pytest.raises(NoDeviceServes, match="'fake-model' is on no node"):
            rig.scheduler.check(task("new"))
        rig.node_returns(0)
        await rig.restart_due()  # its worker starts and takes the jobs
        worker = rig.slots[0].handle
        assert isinstance(worker, FakeWorker) and rig.slots[0].ready
        while rig.scheduler.queue_depth() or worker.job_ids():
            assert worker.job_ids(), "a job was left in the queue"
            worker.finish()
            await rig.scheduler.step()
        assert {j: kind for j, (kind, _) in rig.ledger.ended.items()} == {
            "running": "ok",
            "queued": "ok",
        }
        rig.clock.advance(60)  # no wait left over to fail them later
        await rig.scheduler.step()
        assert rig.ledger.ended["queued"][0] == "ok"

    run(rig, body)


def test_queued_jobs_fail_saying_why_when_no_node_comes_back_in_time() -> None:
    rig = Rig([frozenset({MODEL}), frozenset()], wait_for_node_s=30)

    async def body(rig: Rig) -> None:
        await _lose_the_only_node(rig)()
        rig.clock.advance(29.5)  # 29.5 s after its worker could not start (t = 1)
        await rig.scheduler.step()
        assert rig.ledger.ended == {}
        rig.clock.advance(0.5)
        await rig.scheduler.step()
        for job_id in ("running", "queued"):
            kind, reason = rig.ledger.ended[job_id]
            assert kind == "error" and "'fake-model' is on no node" in reason
            assert "(waited 30 s for a node)" in reason
        assert rig.scheduler.queue_depth() == 0

    run(rig, body)


def test_jobs_of_a_node_that_left_run_on_another_that_has_the_model() -> None:
    rig = Rig([frozenset({MODEL}), frozenset({MODEL})])

    async def body(rig: Rig) -> None:
        rig.scheduler.submit(task("a"))
        await rig.scheduler.step()
        first = rig.ledger.events[0][2][0]
        i = [s.device_id for s in rig.slots].index(first)
        rig.node_leaves(i)
        await rig.restart_due()
        assert rig.slots[i].gone and "a" not in rig.ledger.ended
        other = rig.slots[1 - i].handle
        assert isinstance(other, FakeWorker) and other.job_ids() == ["a"]
        other.finish()
        assert rig.ledger.ended["a"][0] == "ok"

    run(rig, body)


def test_a_node_gone_past_the_grace_period_leaves_the_slots_and_discovery_adds_it_back() -> None:
    rig = Rig([frozenset({MODEL}), frozenset({MODEL})])

    async def body(rig: Rig) -> None:
        scheduler = rig.scheduler
        rig.node_leaves(0)  # its worker ends with it
        scheduler.seen({"n1/cpu0"})  # discovery no longer finds n0's machine
        assert rig.slots[0].gone and [s.device_id for s in scheduler.slots] == [
            "n0/cpu0",
            "n1/cpu0",
        ]
        rig.clock.advance(GONE_AFTER_S - 1)
        await scheduler.step()
        assert len(scheduler.slots) == 2  # still shown, as gone
        rig.clock.advance(2)
        await scheduler.step()
        assert [s.device_id for s in scheduler.slots] == ["n1/cpu0"]
        assert [d["id"] for d in scheduler.snapshot()] == ["n1/cpu0"]
        assert rig.forgotten == ["n0/cpu0"]
        # It comes back: the next discovery round finds it and it gets a worker again.
        await scheduler.add_slot(Slot(Node(fake_device("n0/cpu0")), ["*"], models=None))
        assert [s.device_id for s in scheduler.slots] == ["n1/cpu0", "n0/cpu0"]
        assert all(s.ready and not s.gone for s in scheduler.slots)

    run(rig, body)


def test_a_round_that_misses_a_machine_whose_worker_is_up_leaves_it_alone() -> None:
    """A discovery round that began before the machine came back (or has not heard from
    its new node yet) does not take out a device whose worker is up."""
    rig = Rig([frozenset({MODEL})])

    async def body(rig: Rig) -> None:
        assert rig.slots[0].ready
        rig.scheduler.seen(set())
        assert not rig.slots[0].gone
        rig.scheduler.submit(task("a"))
        await rig.scheduler.step()
        assert rig.slots[0].batch  # it still takes jobs

    run(rig, body)


def test_a_gone_node_found_again_in_time_is_no_longer_gone() -> None:
    rig = Rig([frozenset({MODEL})])

    async def body(rig: Rig) -> None:
        rig.slots[0].ready = False
        rig.scheduler.seen(set())
        assert rig.slots[0].gone
        rig.scheduler.seen({"n0/cpu0"})
        assert not rig.slots[0].gone
        rig.scheduler.check(task("a"))  # accepted again

    run(rig, body)


def test_every_model_a_job_names_must_be_on_its_node() -> None:
    # n0 has the model only; n1 the model and the LoRA.
    rig = Rig([frozenset({MODEL}), frozenset({MODEL, LORA})])

    async def body(rig: Rig) -> None:
        rig.scheduler.submit(task("styled", lora=True))
        await rig.scheduler.step()
        assert rig.ledger.events[0][2][0] == "n1/cpu0"
        rig.slots[1].models = frozenset({MODEL})  # the LoRA went: on no node now
        with pytest.raises(NoDeviceServes, match=r"loras: 'style\.safetensors' is on no node") as e:
            rig.scheduler.check(task("x", lora=True))
        assert e.value.field == "loras"
        rig.slots[0].models = frozenset({LORA})  # each on some node, both on none
        with pytest.raises(NoDeviceServes, match="every model the job names") as e:
            rig.scheduler.check(task("x", lora=True))
        assert e.value.field == "loras"

    run(rig, body)


def test_named_models_are_the_known_paths_a_param_names() -> None:
    known = {"/m/a", "/m/loras/b", "/m/controlnet/c", "/m/vision/depth", "/m/taesd"}
    params = {
        "prompt": "/m/a",  # the main model's path in a prompt: still a model string, harmless
        "loras": [{"path": "/m/loras/b", "weight": 1}],
        "controlnets": [{"path": "/m/controlnet/c", "depth_model": "/m/vision/depth"}],
        "preview_decoder": {"path": "/m/taesd"},
        "images": ["/data/uploads/x.png"],
    }
    assert named_models(params, known) == {
        "/m/a": "prompt",
        "/m/loras/b": "loras",
        "/m/controlnet/c": "controlnets",
        "/m/vision/depth": "controlnets",
    }  # not the preview decoder: a worker without it previews by latent-to-RGB


def test_staged_bytes_count_the_data_dir_files_per_param(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "uploads").mkdir(parents=True)
    for name, size in (("a.png", 300), ("b.png", 200), ("mask.png", 50)):
        (data / "uploads" / name).write_bytes(b"x" * size)
    outside = tmp_path / "elsewhere.png"
    outside.write_bytes(b"x" * 999)
    up = data / "uploads"
    params: dict[str, Any] = {
        "images": [str(up / "a.png"), str(up / "b.png"), str(up / "a.png")],
        "mask": str(up / "mask.png"),
        "other": str(outside),
        "prompt": "a cat",
    }
    assert staged_bytes(params, data) == {"images": 500, "mask": 50}


class FakeCluster(Backend):
    """A backend whose machines the test adds and removes."""

    def __init__(self) -> None:
        self.present = {"a/cpu0": fake_device("a/cpu0"), "b/cpu0": fake_device("b/cpu0")}
        self.forgotten: list[str] = []

    def devices(self, models: Sequence[str] = (), refresh: bool = True) -> list[DeviceInfo]:
        return list(self.present.values())

    def make(self, device: DeviceInfo) -> WorkerHandle:
        return FakeWorker(device)

    def models_on(self, device: DeviceInfo) -> frozenset[str] | None:
        return frozenset({MODEL})

    def membership(self) -> Membership:
        return Membership(lambda: frozenset({MODEL}), lambda t: None, self._forget, 0.0)

    def _forget(self, device: DeviceInfo) -> None:
        self.forgotten.append(device.id)

    @property
    def discover_interval_s(self) -> float | None:
        return 0.0


def test_discovery_marks_a_vanished_machine_gone_and_adds_it_when_it_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = FakeCluster()
    monkeypatch.setattr("pixelpool.engine.pool.make_backend", lambda settings, options: cluster)
    scheduler = build_scheduler(Settings(), Ledger())

    async def body() -> None:
        await scheduler.start(run_loop=False)
        try:
            b = cluster.present.pop("b/cpu0")
            scheduler.slots[1].ready = False  # its machine left: its worker ended too
            await scheduler.rediscover()
            assert [s.gone for s in scheduler.slots] == [False, True]
            await scheduler.step()  # node_gone_after_s = 0 here: removed at once
            assert [s.device_id for s in scheduler.slots] == ["a/cpu0"]
            assert cluster.forgotten == ["b/cpu0"]
            cluster.present["b/cpu0"] = b
            await scheduler.rediscover()
            assert [s.device_id for s in scheduler.slots] == ["a/cpu0", "b/cpu0"]
            assert not scheduler.slots[1].gone
        finally:
            await scheduler.stop()

    asyncio.run(body())
