"""The scheduler with fake workers: every event happens when the test says, no sleeps."""

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pixelpool.config import SchedulerSettings
from pixelpool.engine.devices import DeviceInfo
from pixelpool.engine.messages import Stop
from pixelpool.engine.scheduler import Scheduler, restart_delay
from pixelpool.engine.slot import FIRST_START_S
from pixelpool.testing.fakes import FakeClock, FakeWorker, Ledger, fake_slots, fake_task


class Rig:
    def __init__(self, workers: int = 1, **options: Any) -> None:
        self.clock = FakeClock()
        self.ledger = Ledger()
        self.slots = fake_slots(workers)
        self.scheduler = Scheduler(
            self.slots,
            self.ledger,
            SchedulerSettings(**options),
            respawn=lambda slot: FakeWorker(slot.handle.device),
            clock=self.clock,
        )

    def worker(self, i: int = 0) -> FakeWorker:
        handle = self.slots[i].handle
        assert isinstance(handle, FakeWorker)
        return handle

    async def step(self) -> None:
        await self.scheduler.step()

    async def restart_all(self) -> None:
        """Let every back-off pass and start the replacement workers."""
        self.clock.advance(restart_delay(99))
        await self.step()


def run(body: Callable[[Rig], Awaitable[None]], rig: Rig | None = None, **options: Any) -> Rig:
    rig = rig or Rig(**options)

    async def go() -> None:
        await rig.scheduler.start(run_loop=False)
        try:
            await body(rig)
        finally:
            await rig.scheduler.stop()

    asyncio.run(go())
    return rig


def test_new_owners_queue_behind_a_busy_worker_and_share_it() -> None:
    async def body(rig: Rig) -> None:
        rig.scheduler.submit(fake_task("a1", "a", group="1"))
        await rig.step()
        assert rig.worker().job_ids() == ["a1"]
        for job_id, owner in (("a2", "a"), ("b1", "b"), ("c1", "c"), ("a3", "a")):
            rig.scheduler.submit(fake_task(job_id, owner, group=job_id))  # no batching
        order = []
        while rig.worker().batch is not None:
            order += rig.worker().job_ids()
            rig.worker().finish()
            await rig.step()
        assert order == ["a1", "b1", "c1", "a2", "a3"]  # newcomers before a's next
        assert set(rig.ledger.ended) == {"a1", "a2", "a3", "b1", "c1"}

    run(body)


def test_priority_with_ageing_on_the_schedulers_clock() -> None:
    async def body(rig: Rig) -> None:
        rig.scheduler.submit(fake_task("blocker", group="0"))
        await rig.step()
        rig.scheduler.submit(fake_task("low", priority=100, group="1"))
        rig.clock.advance(3)
        rig.scheduler.submit(fake_task("high", priority=50, group="2"))
        rig.worker().finish()
        await rig.step()
        assert rig.worker().job_ids() == ["high"]  # low has aged 3 levels only
        rig.clock.advance(60)
        rig.scheduler.submit(fake_task("high2", priority=50, group="3"))
        rig.worker().finish()
        await rig.step()
        assert rig.worker().job_ids() == ["low"]  # 63 s waited: stands at 37, ahead of 50

    run(body)


def test_worker_death_requeues_with_bounded_retries_and_matching_attempts() -> None:
    async def body(rig: Rig) -> None:
        rig.scheduler.submit(fake_task("victim"))
        for attempt in (1, 2, 3):
            await rig.step()
            assert rig.worker().job_ids() == ["victim"]
            rig.worker().die()
            assert rig.ledger.attempts["victim"] == attempt
            await rig.restart_all()
        kind, error = rig.ledger.ended["victim"]
        assert kind == "error" and error.startswith("worker died 3 times running this job")
        assert rig.ledger.attempts["victim"] == 3
        assert rig.slots[0].restarts == 3
        rig.scheduler.submit(fake_task("after"))  # the respawned worker runs new work
        await rig.step()
        rig.worker().finish()
        assert rig.ledger.ended["after"][0] == "ok"

    run(body, max_retries=2)


def test_hung_worker_is_killed_on_the_clock_and_its_job_reruns() -> None:
    async def body(rig: Rig) -> None:
        rig.scheduler.submit(fake_task("stuck"))
        await rig.step()
        hung = rig.worker()
        rig.clock.advance(20)
        hung.heartbeat()  # still alive at 20 s
        rig.clock.advance(20)
        await rig.step()
        assert not hung.killed
        rig.clock.advance(11)  # 31 s silent
        await rig.step()
        assert hung.killed and rig.ledger.attempts["stuck"] == 1
        await rig.restart_all()
        assert rig.worker() is not hung and rig.worker().job_ids() == ["stuck"]
        rig.worker().finish()
        assert rig.ledger.ended["stuck"][0] == "ok"

    run(body, heartbeat_timeout_s=30)


def test_worker_death_fails_only_its_own_devices_admin_requests() -> None:
    async def body(rig: Rig) -> None:
        pending = asyncio.create_task(rig.scheduler.admin(None, "load", "fake", {"path": "m"}))
        while len(rig.worker(0).admin_requests()) + len(rig.worker(1).admin_requests()) < 2:
            await asyncio.sleep(0)  # let the request go out (no time passes)
        one_device = asyncio.create_task(rig.scheduler.admin("fake1", "pin", "fake", {}))
        while len(rig.worker(1).admin_requests()) < 2:
            await asyncio.sleep(0)
        rig.worker(0).die("worker process exited with code -9")
        assert not pending.done() or not one_device.done()
        rig.worker(1).answer_admin()
        reports = await pending
        assert reports[0] == {"device": "fake0", "error": "worker process exited with code -9",
                              "cache": {}}  # fmt: skip
        assert reports[1]["device"] == "fake1" and reports[1]["error"] is None
        assert [r["error"] for r in await one_device] == [None]

    run(body, workers=2)


def test_out_of_memory_splits_then_moves_then_fails() -> None:
    async def body(rig: Rig) -> None:
        rig.slots[1].ready = False  # only fake0 takes work at first: fake1 is not ready,
        rig.slots[1].starting_since = None  # nor starting (else it would get a share)
        for job_id in ("a", "b"):
            rig.scheduler.submit(fake_task(job_id))
        await rig.step()
        assert rig.worker(0).job_ids() == ["a", "b"]
        rig.worker(0).oom()
        await rig.step()  # each alone now, still on fake0 (fake1 is not ready)
        assert rig.worker(0).job_ids() == ["a"]
        rig.worker(0).oom()
        rig.slots[1].ready = True
        await rig.step()
        assert rig.worker(0).job_ids() == ["b"] and rig.worker(1).job_ids() == ["a"]
        rig.worker(1).finish()
        rig.worker(0).oom()
        await rig.step()
        assert rig.worker(1).job_ids() == ["b"]
        rig.worker(1).oom()
        await rig.step()
        assert rig.ledger.ended["a"][0] == "ok"
        assert rig.ledger.ended["b"] == (
            "error", "out of memory on every device that can run it (CUDA out of memory (fake))"
        )  # fmt: skip
        assert rig.ledger.attempts.get("b", 0) == 0  # no worker died
        assert rig.worker(0).alive and rig.slots[0].restarts == 0

    run(body, workers=2, max_batch=4)


def test_cancel_of_a_running_job_holds_when_its_worker_dies() -> None:
    async def body(rig: Rig) -> None:
        rig.scheduler.submit(fake_task("c", group="1"))
        rig.scheduler.submit(fake_task("keep", group="2"))
        await rig.step()
        assert rig.scheduler.cancel("c") == "cancelling"
        assert rig.worker().cancels() == ["c"]
        rig.worker().die()
        assert rig.ledger.ended["c"] == ("cancelled", "cancelled")
        assert rig.scheduler.cancel("keep") == "cancelled"
        assert rig.scheduler.cancel("nothing") == "unknown"

    run(body)


def test_a_finished_item_is_not_rerun_when_the_worker_dies_before_the_batch_ends() -> None:
    async def body(rig: Rig) -> None:
        for job_id in ("x", "y"):
            rig.scheduler.submit(fake_task(job_id))
        await rig.step()
        rig.worker().finish(["x"], done=False)
        rig.worker().die()
        await rig.restart_all()
        assert rig.worker().job_ids() == ["y"]

    run(body)


def test_an_item_the_worker_never_reported_fails_when_its_batch_ends() -> None:
    async def body(rig: Rig) -> None:
        for job_id in ("x", "y"):
            rig.scheduler.submit(fake_task(job_id))
        await rig.step()
        rig.worker().finish(["x"])  # the batch ends without a word about y
        assert rig.ledger.ended["y"] == ("error", "the worker ended the batch without a result")

    run(body)


def test_a_task_that_breaks_planning_fails_alone_and_the_queue_goes_on() -> None:
    async def body(rig: Rig) -> None:
        broken = fake_task("broken")
        broken.batch_key = (bytearray(b"unhashable"),)  # a bug in some family's key
        rig.scheduler.submit(broken)
        rig.scheduler.submit(fake_task("fine"))
        await rig.step()
        kind, reason = rig.ledger.ended["broken"]
        assert kind == "error" and "while scheduling" in reason and "TypeError" in reason
        await rig.step()
        assert rig.worker().job_ids() == ["fine"]
        rig.worker().finish(["fine"])
        assert rig.ledger.ended["fine"][0] == "ok"

    run(body)


def test_a_batch_that_cannot_be_sent_fails_and_the_device_stays_usable() -> None:
    async def body(rig: Rig) -> None:
        worker = rig.worker()
        real_send = worker.send

        def send(message: object) -> None:
            items = getattr(message, "items", [])
            if any(item.job_id == "unsendable" for item in items):
                raise TypeError("cannot pickle 'generator' object")
            real_send(message)

        worker.send = send  # type: ignore[method-assign]
        rig.scheduler.submit(fake_task("unsendable", group="a"))
        await rig.step()
        kind, reason = rig.ledger.ended["unsendable"]
        assert kind == "error" and "cannot be sent" in reason and "pickle" in reason
        rig.scheduler.submit(fake_task("next", group="b"))
        await rig.step()
        assert worker.job_ids() == ["next"]

    run(body)


def test_a_replacement_worker_that_fails_to_start_is_tried_again() -> None:
    async def body(rig: Rig) -> None:
        rig.scheduler.submit(fake_task("j"))
        await rig.step()
        rig.scheduler._respawn = lambda slot: FakeWorker(slot.handle.device, failed_starts=1)
        rig.worker().die()
        await rig.restart_all()  # the first start fails: logged, tried again later
        assert not rig.slots[0].ready and rig.slots[0].restarts == 2
        await rig.restart_all()
        assert rig.worker().job_ids() == ["j"]

    run(body)


# --- every accepted job ends, whatever happens ---------------------------------------------

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from("abc"), st.sampled_from("gh")),
        st.tuples(st.sampled_from(["finish", "oom", "die", "hang", "fail"]), st.integers(0, 1)),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
        st.tuples(st.just("restart"), st.just(0)),
    ),
    max_size=50,
)


@settings(max_examples=150, deadline=None)
@given(ACTIONS)
def test_every_accepted_job_ends(actions: list[tuple[str, Any]]) -> None:
    ids = itertools.count()
    accepted: list[str] = []

    async def body(rig: Rig) -> None:
        for action, arg, *more in actions:
            worker = rig.worker(arg % 2 if isinstance(arg, int) else 0)
            if action == "submit":
                job_id = f"j{next(ids)}"
                rig.scheduler.submit(fake_task(job_id, arg, group=more[0]))
                accepted.append(job_id)
            elif action == "cancel" and accepted:
                rig.scheduler.cancel(accepted[arg % len(accepted)])
            elif action == "restart":
                await rig.restart_all()
            elif worker.alive and worker.batch is not None:
                if action == "finish":
                    worker.finish()
                elif action == "oom":
                    worker.oom()
                elif action == "fail":
                    worker.fail(worker.job_ids()[0])
                    worker.finish(worker.job_ids()[1:])
                elif action == "die":
                    worker.die()
                else:  # hang: heartbeats stop; the watchdog notices
                    rig.clock.advance(rig.scheduler.settings.heartbeat_timeout_s + 1)
            await rig.step()
        # Then the workers behave: everything still queued or running must end.
        for _ in range(200):
            if len(rig.ledger.ended) == len(accepted):
                break
            await rig.restart_all()
            for i in range(2):
                if rig.worker(i).alive and rig.worker(i).batch is not None:
                    rig.worker(i).finish()
            await rig.step()
        assert set(rig.ledger.ended) == set(accepted)
        for job_id, (kind, detail) in rig.ledger.ended.items():
            assert kind in ("ok", "error", "cancelled") and detail, job_id
        for job_id, attempts in rig.ledger.attempts.items():
            kind, detail = rig.ledger.ended[job_id]
            if detail.startswith("worker died"):
                assert detail.startswith(f"worker died {attempts} times")
            assert attempts <= 3  # max_retries 2: the third lost run fails it

    run(body, workers=2, max_batch=3, max_retries=2)


def test_a_freed_device_leaves_a_share_for_a_busy_peer() -> None:
    """Two devices under closed-loop load: one frees up with 14 queued while the other
    runs 2 of the same kind of job. It takes 8 of the 16 in flight, not all 14."""

    async def body(rig: Rig) -> None:
        rig.scheduler.submit(fake_task("a"))
        await rig.step()
        for job_id in ("b", "c"):
            rig.scheduler.submit(fake_task(job_id))
        await rig.step()
        assert [rig.worker(i).job_ids() for i in (0, 1)] == [["a"], ["b", "c"]]
        for n in range(14):
            rig.scheduler.submit(fake_task(f"t{n}"))
        rig.worker(0).finish()
        await rig.step()
        assert len(rig.worker(0).job_ids()) == 8

    run(body, workers=2)


def test_a_gpu_does_not_share_the_queue_with_a_cpu_worker_beside_it() -> None:
    """Devices share the queue with devices of their kind only: an idle GPU takes the
    whole batch rather than leave half of it to a far slower CPU worker."""

    async def body(rig: Rig) -> None:
        for n in range(12):
            rig.scheduler.submit(fake_task(f"t{n}"))
        await rig.step()
        assert len(rig.worker(0).job_ids()) == 12 and rig.worker(1).batch is None

    rig = Rig(workers=2)
    gpu = DeviceInfo("cuda0", "cuda", 0, "fake GPU", 8 << 30)
    rig.slots[0].handle = FakeWorker(gpu)
    run(body, rig)


class SlowStart(FakeWorker):
    """A worker whose start takes as long as the test says (a fork server importing)."""

    def __init__(self, device: DeviceInfo) -> None:
        super().__init__(device)
        self.go = asyncio.Event()

    async def start(self, on_message: Any, on_exit: Any) -> None:
        await self.go.wait()
        await super().start(on_message, on_exit)


def test_the_server_does_not_wait_for_its_workers_to_start_and_stop_waits_for_them() -> None:
    async def go() -> None:
        rig = Rig(workers=2)
        slow = SlowStart(rig.slots[1].handle.device)
        rig.slots[1].handle = slow
        await asyncio.wait_for(rig.scheduler.start(), 1)  # returns with one start pending
        for _ in range(3):
            await asyncio.sleep(0)
        assert rig.scheduler.ready and [s.ready for s in rig.slots] == [True, False]
        stopping = asyncio.create_task(rig.scheduler.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done()  # it waits for the start under way, then stops it
        slow.go.set()
        await asyncio.wait_for(stopping, 1)
        assert slow.started == 1 and not slow.alive and isinstance(slow.sent[-1], Stop)

    asyncio.run(go())


def test_a_worker_that_cannot_start_at_boot_is_tried_again_with_back_off() -> None:
    rig = Rig()
    rig.slots[0].handle = FakeWorker(rig.slots[0].handle.device, failed_starts=1)

    async def body(rig: Rig) -> None:
        assert not rig.scheduler.ready and rig.worker().started == 0  # start did not raise
        await rig.step()
        assert rig.worker().started == 0  # not before its back-off
        await rig.restart_all()
        assert rig.worker().started == 1 and rig.scheduler.ready

    run(body, rig)


def test_clients_answered_while_their_batch_decodes_are_not_counted_twice() -> None:
    """Results streamed one by one: 7 of a batch's 8 clients are back before it ends.
    With room for 16, counting them as the batch's clients and again as a backlog
    would expect 15 and hold the next batch of 8 for the window; it goes at once."""

    async def body(rig: Rig) -> None:
        first = [f"a{n}" for n in range(8)]
        for job_id in first:
            rig.scheduler.submit(fake_task(job_id))
        await rig.step()
        assert rig.worker().job_ids() == first
        rig.clock.advance(2.0)
        rig.worker().finish(first[:7], done=False)  # streamed: the first seven results
        rig.clock.advance(0.01)
        for n in range(7):  # their clients' next requests, before the batch ends
            rig.scheduler.submit(fake_task(f"b{n}"))
        rig.clock.advance(0.01)
        rig.worker().finish(first[7:])  # the last result, then BatchDone
        await rig.step()
        assert rig.worker().batch is None  # seven of eight: waiting for the last client
        rig.clock.advance(0.01)
        rig.scheduler.submit(fake_task("b7"))
        await rig.step()
        assert rig.worker().job_ids() == [f"b{n}" for n in range(8)]

    run(body, max_batch=16)


def test_a_burst_queued_at_boot_waits_its_share_for_a_device_still_starting() -> None:
    """8 jobs queued before any worker is ready: the first device ready takes 4 and the
    second, ready a moment later, the other 4 (it took all 8 before, the second idle).
    A start that is taking too long is not waited for."""

    async def body(rig: Rig) -> None:
        for n in range(8):
            rig.scheduler.submit(fake_task(f"t{n}"))
        await rig.step()
        assert len(rig.worker(0).job_ids()) == 4 and rig.worker(1).batch is None
        rig.worker(1).ready()
        await rig.step()
        assert len(rig.worker(1).job_ids()) == 4
        rig.worker(0).die()  # ready once, then lost: not waited for as a starting one
        rig.worker(1).finish()
        await rig.step()
        assert len(rig.worker(1).job_ids()) == 4  # all of the dead device's jobs

    rig = Rig(workers=2)
    rig.slots[1].handle = FakeWorker(rig.slots[1].handle.device, auto_ready=False)
    run(body, rig)

    async def late(rig: Rig) -> None:
        rig.clock.advance(FIRST_START_S)
        for n in range(8):
            rig.scheduler.submit(fake_task(f"t{n}"))
        await rig.step()
        assert len(rig.worker(0).job_ids()) == 8

    rig = Rig(workers=2)
    rig.slots[1].handle = FakeWorker(rig.slots[1].handle.device, auto_ready=False)
    run(late, rig)
