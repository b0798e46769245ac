"""The scheduling policy, as pure code: fair share, ageing, priorities, batches, retries."""

import ast
import itertools
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelpool.config import SchedulerSettings
from pixelpool.engine import policy
from pixelpool.engine.policy import FairShare, Queue
from pixelpool.engine.slot import FIRST_START_S, Slot
from pixelpool.engine.task import Task
from pixelpool.testing.fakes import fake_slots, fake_task

GIB = 1 << 30
ONE = SchedulerSettings(max_batch=1)


def _drain(queue: Queue, slot: Slot, now: float = 0.0) -> list[list[str]]:
    """Start batches on `slot` until the queue is empty; the job ids of each."""
    batches = []
    while len(queue):
        plan = queue.plan(slot, now)
        assert plan is not None
        queue.take(plan.batch)
        batches.append([t.job_id for t in plan.batch])
    return batches


def _order(queue: Queue, slot: Slot) -> list[str]:
    return [job for batch in _drain(queue, slot) for job in batch]


def test_policy_module_does_no_io() -> None:
    source = Path(policy.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    forbidden = {"asyncio", "time", "os", "sqlite3", "socket", "logging", "threading", "subprocess"}
    assert not imported & forbidden


def test_two_never_served_owners_queue_behind_a_busy_worker() -> None:
    """The bug: a second new owner read a fair-share entry nobody had written."""
    queue = Queue(ONE)
    for job_id, owner in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")):
        queue.add(fake_task(job_id, owner))
    assert _drain(queue, fake_slots(1)[0]) == [["a1"], ["b1"], ["c1"], ["a2"]]


@pytest.mark.parametrize("count", [2, 3, 4])
def test_owners_arriving_in_any_order_share_round_robin(count: int) -> None:
    """A flood is queued; the others arrive one by one (in every order) while batches
    start in between. Each newcomer is served within one batch per other owner, and
    then owners alternate."""
    names = [f"o{i}" for i in range(count)]
    for order in itertools.permutations(names):
        queue = Queue(ONE)
        slot = fake_slots(1)[0]
        for n in range(6):
            queue.add(fake_task(f"flood-{n}", "flood"))
        started: list[str] = []
        for owner in order:
            for n in range(2):
                queue.add(fake_task(f"{owner}-{n}", owner))
            started += _drain_one(queue, slot)
        started += _order(queue, slot)
        owners = [job.split("-")[0] for job in started]
        for owner in order:
            arrived = order.index(owner)  # batches started before it arrived
            waited = owners[arrived : owners.index(owner)]
            assert max(Counter(waited).values(), default=0) <= 1, (order, owners)
        # Then every owner is served once per round until it runs out.
        assert sorted(owners[count : 2 * count + 1]) == sorted(["flood", *names]), owners


def _drain_one(queue: Queue, slot: Slot) -> list[str]:
    plan = queue.plan(slot, 0.0)
    assert plan is not None
    queue.take(plan.batch)
    return [t.job_id for t in plan.batch]


def test_newcomer_waits_at_most_one_batch_per_other_owner_in_fifo_order() -> None:
    queue = Queue(ONE)
    slot = fake_slots(1)[0]
    for owner in "abc":
        for n in range(3):
            queue.add(fake_task(f"{owner}{n}", owner))
    assert _drain_one(queue, slot) == ["a0"]
    queue.add(fake_task("d0", "d"))  # arrives in round 0, behind b and c
    order = _order(queue, slot)
    assert order[:3] == ["b0", "c0", "d0"]
    assert order[3:] == ["a1", "b1", "c1", "a2", "b2", "c2"]


def test_owner_served_recently_keeps_its_place_when_it_comes_back() -> None:
    """An owner cannot jump the queue by letting its queue run empty and coming back."""
    queue = Queue(ONE)
    slot = fake_slots(1)[0]
    for n in range(4):
        queue.add(fake_task(f"a{n}", "a"))
    queue.add(fake_task("t0", "toggler"))
    assert _drain_one(queue, slot) == ["a0"]
    assert _drain_one(queue, slot) == ["t0"]  # toggler idle now, served in round 0
    queue.add(fake_task("t1", "toggler"))  # comes back: round 1, behind a
    assert _order(queue, slot)[:2] == ["a1", "t1"]


def test_fair_share_remembers_an_idle_owner_only_while_it_is_ahead() -> None:
    fair = FairShare()
    fair.arrive("a")
    fair.arrive("b")
    fair.served("a", ["a"])
    fair.leave("a")
    fair.arrive("a")  # back at once: keeps round 1, so b goes first
    assert fair.current_round == 0 and fair.key("a")[0] == 1 and fair.key("a") > fair.key("b")
    fair.served("b", ["b"])  # b moves to round 1 too, behind a
    assert fair.key("a") < fair.key("b")
    fair.served("a", ["a"])  # round 1 is served now: a moves to 2
    fair.leave("a")
    fair.arrive("a")  # kept: round 2 is still ahead
    assert fair.key("a")[0] == 2
    fair.served("b", ["b"])
    fair.served("a", ["a"])  # round 2 served; a moves on to 3, b (round 2) is next
    fair.leave("b")
    fair.arrive("b")  # b kept round 2, now the round being served
    assert fair.current_round == 2 and fair.key("b")[0] == 2
    fair.leave("b")
    fair.arrive("c")
    fair.arrive("b")  # forgotten (not ahead of round 2): joins it at the back, after c
    assert fair.key("c") < fair.key("b") < fair.key("a")


def test_a_newcomer_goes_before_the_next_batch_of_a_lone_flooding_owner() -> None:
    queue = Queue(ONE)
    slot = fake_slots(1)[0]
    for n in range(5):
        queue.add(fake_task(f"a{n}", "a"))
    assert _drain_one(queue, slot) == ["a0"]
    assert _drain_one(queue, slot) == ["a1"]
    queue.add(fake_task("b0", "b"))  # a batch of a runs; b is next
    assert _order(queue, slot) == ["b0", "a2", "a3", "a4"]


def test_priority_orders_an_owners_tasks_and_ageing_lifts_old_ones() -> None:
    queue = Queue(ONE)
    slot = fake_slots(1)[0]
    queue.add(fake_task("old-low", "a", priority=100, submitted=0.0))
    queue.add(fake_task("new-high", "a", priority=50, submitted=40.0))
    # At t=40 the old one has gained 40 levels (to 60): the high one still goes first.
    assert _drain_one_at(queue, slot, 40.0) == ["new-high"]
    queue.add(fake_task("newer-high", "a", priority=50, submitted=60.0))
    # At t=60 the old one stands at 40, ahead of priority 50 submitted now.
    assert _drain_one_at(queue, slot, 60.0) == ["old-low"]


def _drain_one_at(queue: Queue, slot: Slot, now: float) -> list[str]:
    plan = queue.plan(slot, now)
    assert plan is not None
    queue.take(plan.batch)
    return [t.job_id for t in plan.batch]


def test_a_worker_prefers_a_model_it_holds_within_an_owner() -> None:
    queue = Queue(ONE)
    slot = fake_slots(1)[0]
    other = fake_task("other", "a", submitted=0.0)
    other.model = {**other.model, "path": "fake/other"}
    queue.add(other)
    queue.add(fake_task("held", "a", submitted=1.0))
    slot.cache = {"models": [{"key": "fake/fake-model", "tier": "device"}]}
    assert _drain_one(queue, slot) == ["held"]


def test_batches_group_equal_tasks_up_to_max_batch_and_memory() -> None:
    queue = Queue(SchedulerSettings(max_batch=3))
    slot = fake_slots(1, budget_gib=1)[0]
    for n in range(4):
        queue.add(fake_task(f"g{n}", "a", submitted=n))
    queue.add(fake_task("h0", "a", group="h", submitted=0.5))
    assert _drain(queue, slot) == [["g0", "g1", "g2"], ["h0"], ["g3"]]
    # Memory: three items of 0.3 GiB fit a 1 GiB budget, a fourth would not.
    queue = Queue(SchedulerSettings(max_batch=8))
    for n in range(5):
        queue.add(fake_task(f"m{n}", "a", submitted=n, item_bytes=int(0.3 * GIB)))
    assert _drain(queue, slot) == [["m0", "m1", "m2"], ["m3", "m4"]]


def test_a_task_with_a_lowered_limit_waits_out_a_bigger_batch() -> None:
    queue = Queue(SchedulerSettings(max_batch=4))
    tasks = [fake_task(f"t{n}", "a", submitted=n) for n in range(4)]
    tasks[1].max_batch = 1
    for task in tasks:
        queue.add(task)
    assert _drain(queue, fake_slots(1)[0]) == [["t0", "t2", "t3"], ["t1"]]


def test_batch_window_holds_a_short_batch_back() -> None:
    settings = SchedulerSettings(max_batch=4, batch_window_ms=200)
    queue = Queue(settings)
    queue.add(fake_task("a", submitted=10.0))
    plan = queue.plan(fake_slots(1)[0], 10.05)
    assert plan is not None and plan.wait_s == pytest.approx(0.15)
    plan = queue.plan(fake_slots(1)[0], 10.3)
    assert plan is not None and plan.wait_s == 0


def test_auto_max_batch_is_what_memory_fits_up_to_16() -> None:
    queue = Queue(SchedulerSettings(batch_window_ms=0))  # max_batch "auto"
    for n in range(20):
        queue.add(fake_task(f"t{n}", submitted=n))
    assert [len(b) for b in _drain(queue, fake_slots(1)[0])] == [16, 4]
    for n in range(6):  # 0.3 GiB each: three fit a 1 GiB budget
        queue.add(fake_task(f"m{n}", submitted=n, item_bytes=int(0.3 * GIB)))
    assert [len(b) for b in _drain(queue, fake_slots(1, budget_gib=1)[0])] == [3, 3]


def test_auto_window_waits_for_companions_only_after_a_bigger_batch() -> None:
    queue = Queue(SchedulerSettings())  # batch_window_ms "auto"
    slot = fake_slots(1)[0]
    group = fake_task("x").group

    def answered(size: int, run_s: float, ended: float = 9.99) -> None:
        """A batch of `size` ended while nothing else was queued; then "a" arrives."""
        queue.remove("a")
        queue.ran(slot.device_id, group, size, run_s, ended=ended)
        queue.add(fake_task("a", submitted=10.0))

    queue.add(fake_task("a", submitted=10.0))
    plan = queue.plan(slot, 10.0)
    assert plan is not None and plan.wait_s == 0  # nothing ran before: no reason to wait
    answered(1, 0.4)  # one client
    assert queue.plan(slot, 10.0).wait_s == 0  # type: ignore[union-attr]
    answered(8, 1.0)  # 8 clients were just answered
    plan = queue.plan(slot, 10.01)
    assert plan is not None and plan.wait_s == pytest.approx(0.04)  # 5 % of 1 s, from 10.0
    answered(8, 1.0, ended=10.0 - policy.AUTO_WINDOW_FRESH_S - 0.01)
    assert queue.plan(slot, 10.0).wait_s == 0  # type: ignore[union-attr]  # long after it
    answered(8, 60.0)
    plan = queue.plan(slot, 10.0)
    assert plan is not None and plan.wait_s == pytest.approx(0.1)  # at most 100 ms
    for n in range(7):  # the companions arrived: go at once
        queue.add(fake_task(f"b{n}", submitted=10.02))
    plan = queue.plan(slot, 10.02)
    assert plan is not None and len(plan.batch) == 8 and plan.wait_s == 0
    other = fake_slots(2)[1]  # what one device ran says nothing about another
    assert queue.plan(other, 10.0).wait_s == 0  # type: ignore[union-attr]


def test_auto_window_merges_alternating_halves() -> None:
    """8 closed-loop clients split 4 + 4: when one half's batch ends with the other half
    queued, that half waits (from the end, not from its own arrival) for the first
    half's next requests, and the two run as one batch of 8 from then on."""
    queue = Queue(SchedulerSettings())
    slot = fake_slots(1)[0]
    for n in range(4):  # half B waited through half A's run
        queue.add(fake_task(f"b{n}", submitted=5.0))
    group = fake_task("x").group
    queue.ran(slot.device_id, group, 4, 2.0, ended=10.0)  # half A's batch ended at 10.0
    plan = queue.plan(slot, 10.0)
    assert plan is not None and len(plan.batch) == 4 and plan.wait_s == pytest.approx(0.1)
    for n in range(4):  # A's clients come back 20 ms later: all 8 go at once
        queue.add(fake_task(f"a{n}", submitted=10.02))
    plan = queue.plan(slot, 10.02)
    assert plan is not None and len(plan.batch) == 8 and plan.wait_s == 0
    assert queue.plan(slot, 10.2) is not None  # and nobody waits past the window
    assert queue.plan(slot, 10.2).wait_s == 0  # type: ignore[union-attr]


def test_auto_window_counts_clients_answered_before_the_batch_ended_once() -> None:
    """Results go out one by one while a batch decodes, so 7 of its 8 clients are back
    in the queue when it ends: they are its clients, not a backlog that would make the
    window wait for 15. Tasks that came before its first answer still count."""
    queue = Queue(SchedulerSettings(max_batch=16))
    slot = fake_slots(1)[0]
    group = fake_task("x").group
    for n in range(7):  # back from 10.00 on; the first answer went out at 9.95
        queue.add(fake_task(f"a{n}", submitted=10.0 + n / 1000))
    queue.ran(slot.device_id, group, 8, 2.0, ended=10.01, answered=9.95)
    plan = queue.plan(slot, 10.01)
    assert plan is not None and len(plan.batch) == 7 and plan.wait_s > 0  # the 8th client
    queue.add(fake_task("a7", submitted=10.02))
    plan = queue.plan(slot, 10.02)
    assert plan is not None and len(plan.batch) == 8 and plan.wait_s == 0
    queue.ran(slot.device_id, group, 8, 2.0, ended=10.01, answered=10.03)  # all before it
    plan = queue.plan(slot, 10.02)
    assert plan is not None and len(plan.batch) == 8 and plan.wait_s > 0  # waits for 16


def test_keys_read_back_from_the_store_are_hashable() -> None:
    task = fake_task("a")
    task = Task(**{**task.__dict__, "batch_key": ["Txt2Img", 64, [["lora", 1.0]], {"a": [1]}]})
    assert task.batch_key == ("Txt2Img", 64, (("lora", 1.0),), (("a", (1,)),))
    queue = Queue(SchedulerSettings())
    queue.add(task)
    queue.ran("fake0", task.group, 2, 1.0)
    assert queue.plan(fake_slots(1)[0], 0.0) is not None


def test_auto_window_remembers_only_recent_groups() -> None:
    queue = Queue(SchedulerSettings())
    for n in range(policy.RECENT_GROUPS + 5):
        queue.ran("fake0", ("f", "op", "m", (n,)), 8, 1.0)
    assert len(queue._last) == policy.RECENT_GROUPS


def test_refusal_names_the_reason() -> None:
    slots = fake_slots(2, budget_gib=1)
    assert policy.refusal(fake_task("ok", item_bytes=GIB // 2), slots) is None
    too_big = policy.refusal(fake_task("big", item_bytes=3 * GIB), slots)
    assert too_big is not None and "largest device budget is 1.0 GiB" in too_big
    slots[0].capabilities = slots[1].capabilities = ["other"]
    assert "no device is configured" in (policy.refusal(fake_task("x"), slots) or "")


def test_out_of_memory_halves_the_batch_then_moves_then_fails() -> None:
    slots = fake_slots(2)
    task = fake_task("t")
    step = policy.after_out_of_memory(task, 4, "fake0", slots, "oom!")
    assert (step.action, task.max_batch) == ("requeue", 2)
    step = policy.after_out_of_memory(task, 2, "fake0", slots, "oom!")
    assert (step.action, task.max_batch) == ("requeue", 1)
    step = policy.after_out_of_memory(task, 1, "fake0", slots, "oom!")
    assert step.action == "requeue" and "another device" in step.reason
    assert task.excluded == {"fake0"} and not slots[0].can_run(task)
    step = policy.after_out_of_memory(task, 1, "fake1", slots, "oom!")
    assert step == policy.Outcome("fail", "out of memory on every device that can run it (oom!)")
    assert task.attempts == 0  # out of memory is not a lost run


def test_lost_runs_are_counted_and_bounded_and_the_message_agrees() -> None:
    task = fake_task("t")
    outcomes = [policy.after_worker_lost(task, "exit -9", max_retries=2) for _ in range(3)]
    assert [o.action for o in outcomes] == ["requeue", "requeue", "fail"]
    assert task.attempts == 3
    assert outcomes[-1].reason.startswith("worker died 3 times running this job")
    cancelled = fake_task("c")
    cancelled.cancel_requested = True
    assert policy.after_worker_lost(cancelled, "x", 2).action == "cancel"


# --- properties --------------------------------------------------------------------------

OWNERS = st.sampled_from(["a", "b", "c", "d", None])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), OWNERS, st.sampled_from("gh"), st.integers(1, 100)),
        st.tuples(st.just("start"), st.integers(1, 2)),
        st.tuples(st.just("cancel"), st.integers(0, 40)),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(1, 4))
def test_no_owner_waits_behind_more_than_one_batch_per_other_owner(
    ops: list[tuple], max_batch: int
) -> None:
    queue = Queue(SchedulerSettings(max_batch=max_batch))
    slots = fake_slots(2)
    heads_since: dict[object, Counter] = {}  # waiting owner -> heads by others since served
    ids = itertools.count()
    submitted: list[str] = []
    now = 0.0
    for op in ops:
        now += 1.0
        if op[0] == "submit":
            _, owner, group, priority = op
            job_id = f"j{next(ids)}"
            queue.add(fake_task(job_id, owner, group, priority, submitted=now))
            submitted.append(job_id)
            heads_since.setdefault(owner, Counter())
        elif op[0] == "cancel":
            if submitted:
                queue.remove(submitted[op[1] % len(submitted)])
        else:
            plan = queue.plan(slots[op[1] - 1], now)
            if plan is None:
                continue
            queue.take(plan.batch)
            head, served = plan.batch[0].owner, {t.owner for t in plan.batch}
            for owner in served:
                heads_since[owner] = Counter()
            for owner, seen in heads_since.items():
                if owner not in served:
                    seen[head] += 1
                    assert seen[head] <= 1, f"{owner} waited behind two batches of {head}"
        waiting = {t.owner for t in queue.tasks()}
        heads_since = {o: c for o, c in heads_since.items() if o in waiting}


def test_idle_devices_share_the_queue_evenly() -> None:
    """16 queued tasks and two idle devices: 8 each, not 16 on one while the other waits;
    a device alone takes them all. Its share is a full batch: no window hold."""
    queue = Queue(SchedulerSettings())  # max_batch and window "auto"
    first, second = fake_slots(2)
    for n in range(16):
        queue.add(fake_task(f"t{n}", submitted=10.0))
    group = fake_task("x").group
    queue.ran(first.device_id, group, 16, 1.0, ended=10.0)  # expects 16 again: would hold
    plan = queue.plan(first, 10.0, [first, second])
    assert plan is not None and len(plan.batch) == 8 and plan.wait_s == 0
    queue.take(plan.batch)
    plan = queue.plan(second, 10.0, [second])  # the first is busy now
    assert plan is not None and len(plan.batch) == 8
    queue.take(plan.batch)
    for n in range(5):
        queue.add(fake_task(f"u{n}", submitted=10.0))
    assert len(queue.plan(first, 10.0, [first]).batch) == 5  # type: ignore[union-attr]
    assert len(queue.plan(first, 10.0, [first, second]).batch) == 3  # type: ignore[union-attr]


def test_a_device_running_the_group_counts_for_its_share() -> None:
    """Closed-loop clients on two devices: the first is free with 14 queued while the
    second runs 2 of the same group. It takes 8 of the 16 in flight, not all 14 (which
    would leave the second device batches of 2 for good); a batch of another group does
    not count, and a device alone still takes everything."""
    queue = Queue(SchedulerSettings())
    first = fake_slots(2)[0]
    for n in range(14):
        queue.add(fake_task(f"t{n}", submitted=10.0))
    running = [[fake_task("r0"), fake_task("r1")]]
    plan = queue.plan(first, 10.0, [first], running)
    assert plan is not None and len(plan.batch) == 8 and plan.wait_s == 0
    other = [[fake_task("o0", group="other"), fake_task("o1", group="other")]]
    assert len(queue.plan(first, 10.0, [first], other).batch) == 14  # type: ignore[union-attr]
    assert len(queue.plan(first, 10.0, [first]).batch) == 14  # type: ignore[union-attr]


def test_a_device_whose_worker_is_starting_counts_for_its_share() -> None:
    """A burst queued at boot: the first device ready takes half of 8 and leaves the
    rest to the one still starting, not all 8 while it finishes starting; one that
    cannot run the group does not count."""
    queue = Queue(SchedulerSettings())
    ready, starting = fake_slots(2)
    for n in range(8):
        queue.add(fake_task(f"t{n}", submitted=10.0))
    plan = queue.plan(ready, 10.0, [ready], coming=[starting])
    assert plan is not None and len(plan.batch) == 4 and plan.wait_s == 0
    starting.families = frozenset({"upscale"})
    assert len(queue.plan(ready, 10.0, [ready], coming=[starting]).batch) == 8  # type: ignore[union-attr]


def test_a_slot_is_coming_while_its_first_start_is_young_and_not_failed() -> None:
    slot = fake_slots(1)[0]
    assert not slot.coming(5.0)  # never started
    slot.starting_since = 0.0
    assert slot.coming(FIRST_START_S - 1) and not slot.coming(FIRST_START_S)
    slot.ready = True
    assert not slot.coming(1.0)  # ready: idle or busy, not coming
    slot.ready, slot.starting_since = False, None  # its start failed
    assert not slot.coming(1.0)


def test_idle_devices_that_cannot_run_a_group_do_not_take_a_share() -> None:
    """A device configured for other families is idle but does not count."""
    queue = Queue(SchedulerSettings())
    runs_it, other = fake_slots(2)
    other.families = frozenset({"upscale"})
    for n in range(6):
        queue.add(fake_task(f"t{n}"))
    plan = queue.plan(runs_it, 0.0, [runs_it, other])
    assert plan is not None and len(plan.batch) == 6
