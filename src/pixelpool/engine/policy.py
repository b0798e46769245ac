"""The scheduling policy: which queued tasks a free worker runs next, and what happens
to a task whose run was lost. Pure: no I/O, no clock, no asyncio, so every rule is
tested directly; the Scheduler feeds it the time and does the messaging.

Order for a free worker: fair share between owners first, then (within an owner) a
model the worker already holds, then priority with ageing (a task gains one level per
second waiting), then age.

Fair share works in rounds. Each owner with queued tasks (an active owner) has a
round and a stamp (when it entered that round); the owner with the lowest (round,
stamp) goes next. Every owner in the batch that starts moves to the round after the
head's, behind everyone already there. An owner that becomes active joins the round
being served now (the last head's) at its back, unless it was served in a later round
recently, which it keeps. So between an owner becoming active (or being served) and
its next task starting, every other owner heads at most one batch: a key flooding the
queue delays another by at most one batch per other waiting key, plus the batches
already running.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pixelpool.config import SchedulerSettings
from pixelpool.engine.task import Task

AGEING_S_PER_PRIORITY = 1.0
GIB = 1 << 30
AUTO_MAX_BATCH = 16  # max_batch "auto": the cap when the device's memory fits more
AUTO_WINDOW_MAX_S = 0.1  # batch_window_ms "auto": the longest hold ...
AUTO_WINDOW_SHARE = 0.05  # ... and at most this share of the last batch's run time
# ... and only for a head that arrived within this long after that batch ended: its
# clients come back as soon as their results are delivered; a request that comes
# later is not one of them (a lone request after a burst would wait for nobody).
AUTO_WINDOW_FRESH_S = 1.0
RECENT_GROUPS = 256  # (device, group) pairs whose last batch is remembered

Owner = str | None
FairKey = tuple[int, int]  # (round, stamp): lower goes first


class Device(Protocol):
    """What the policy needs to know about a worker (`Slot` is one)."""

    @property
    def device_id(self) -> str: ...

    @property
    def budget(self) -> int: ...

    def can_run(self, task: Task) -> bool: ...

    def configured_for(self, task: Task) -> bool: ...

    def fits(self, task: Task, batch: int) -> bool: ...

    def holds(self, model_path: str) -> bool: ...

    def has_model(self, model_path: str) -> bool: ...

    @property
    def gone(self) -> bool: ...


# --- fair share ----------------------------------------------------------------------


class FairShare:
    """Rounds per active owner (see the module docstring)."""

    def __init__(self) -> None:
        self._keys: dict[Owner, FairKey] = {}  # active owners
        self._queued: Counter[Owner] = Counter()
        self._recent: dict[Owner, FairKey] = {}  # inactive owners ahead of the current round
        self._round = 0  # the round being served: the last head's
        self._stamps = itertools.count()

    @property
    def current_round(self) -> int:
        """The round being served (the last batch head's)."""
        return self._round

    def key(self, owner: Owner) -> FairKey:
        return self._keys[owner]

    def active(self) -> set[Owner]:
        return set(self._keys)

    def arrive(self, owner: Owner) -> None:
        """One more queued task of `owner` (a new one, or one put back)."""
        self._queued[owner] += 1
        if owner in self._keys:
            return
        kept = self._recent.pop(owner, None)
        if kept is not None and kept[0] > self._round:
            self._keys[owner] = kept
        else:
            self._keys[owner] = (self._round, next(self._stamps))

    def leave(self, owner: Owner) -> None:
        """One queued task of `owner` fewer (started or cancelled)."""
        self._queued[owner] -= 1
        if self._queued[owner] > 0:
            return
        del self._queued[owner]
        key = self._keys.pop(owner)
        if key[0] > self._round:
            self._recent[owner] = key

    def served(self, head: Owner, owners: Iterable[Owner]) -> None:
        """A batch led by `head` started; its owners move past the head's round."""
        head_round = self._keys[head][0]
        self._round = max(self._round, head_round)
        for owner in dict.fromkeys(owners):  # each once, in batch order
            key = self._keys.get(owner)
            if key is not None and key[0] <= head_round:
                self._keys[owner] = (head_round + 1, next(self._stamps))
        self._recent = {o: k for o, k in self._recent.items() if k[0] > self._round}


# --- ranking and batches -------------------------------------------------------------


def effective_priority(task: Task, now: float) -> float:
    """Lower runs first; a waiting task gains one level per AGEING_S_PER_PRIORITY."""
    return task.priority - (now - task.submitted) / AGEING_S_PER_PRIORITY


def rank(task: Task, device: Device, fair: FairShare, now: float) -> tuple[object, ...]:
    affinity = 0 if device.holds(task.model["path"]) else 1
    return (fair.key(task.owner), affinity, effective_priority(task, now), task.submitted)


def max_batch(settings: SchedulerSettings) -> int:
    """The configured cap; "auto" leaves the limit to the device's memory (`fits`)."""
    return AUTO_MAX_BATCH if settings.max_batch == "auto" else settings.max_batch


def batch_limit(task: Task, settings: SchedulerSettings) -> int:
    if not settings.batching:
        return 1
    cap = max_batch(settings)
    return min(cap, task.max_batch or cap)


def share(
    head: Task,
    candidates: list[Task],
    idle: Sequence[Device],
    running: Sequence[Sequence[Task]] = (),
    coming: Sequence[Device] = (),
) -> int:
    """The most tasks of the head's group this device should take: the group's work in
    flight (queued, and running in `running`, the other devices' batches) spread evenly
    over the idle devices that can run it, the devices running it and those whose
    worker is starting (`coming`: at boot, the first one ready would take it all).

    Two idle GPUs and 16 queued jobs run 8 + 8, not 16 on one while the other waits (a
    batch's speed-up flattens long before 16: x4.6 at 8 and x4.7 at 16 for SD 1.5 on an
    H200). A device running the group counts because it is back for its share soon:
    without it, 16 closed-loop clients on two devices settle into batches of 14 on one
    and 2 on the other (each freed device took all that was queued), and the batch of 2
    runs at a fraction of the batch of 8's speed per image."""
    mine = [b for b in running if b and b[0].group == head.group]
    group = sum(1 for t in candidates if t.group == head.group) + sum(len(b) for b in mine)
    able = sum(1 for d in (*idle, *coming) if d.can_run(head))
    sharers = max(1, able + len(mine))
    return max(1, math.ceil(group / sharers))


def form_batch(
    head: Task,
    candidates: list[Task],
    device: Device,
    settings: SchedulerSettings,
    fair: FairShare,
    now: float,
    cap: int | None = None,
) -> list[Task]:
    """The head and the best-ranked tasks of its group, within every member's batch limit,
    `cap` (its share of the idle devices) and the device's memory (the memory-fit
    split: what does not fit waits)."""
    limit = batch_limit(head, settings)
    if cap is not None:
        limit = min(limit, cap)
    mates = [t for t in candidates if t is not head and t.group == head.group]
    mates.sort(key=lambda t: (fair.key(t.owner), effective_priority(t, now), t.submitted))
    batch = [head]
    for mate in mates:
        if not device.fits(head, len(batch) + 1):
            break
        mate_limit = min(limit, batch_limit(mate, settings))
        if len(batch) < mate_limit:  # else it waits: its own limit is lower
            batch.append(mate)
            limit = mate_limit
    return batch


def window_left(
    batch: list[Task],
    settings: SchedulerSettings,
    now: float,
    last: LastBatch | None = None,
    cap: int | None = None,
) -> float:
    """Seconds to hold a short batch back for companions, counted from its head's arrival.

    A fixed `batch_window_ms` holds every short batch. "auto" holds one only while it is
    smaller than what the device's last batch of the same group (`last`) leads to expect:
    the clients that batch just answered (likely sending their next requests now) plus
    the tasks that were already queued when it ended. Dispatching at once would run the
    first arrivals alone and leave the rest to a second batch, and closed-loop clients
    then settle into alternating halves that never merge again (8 clients as 4 + 4).
    One client never waits: its last batch was one, and nothing else was queued; nor
    does a head that arrives long after that batch (`AUTO_WINDOW_FRESH_S`). The hold
    is a small share of that batch's run time, counted from when it ended or from the
    head's arrival, whichever is later.
    """
    limit = batch_limit(batch[0], settings)
    if not settings.batching or len(batch) >= limit or (cap is not None and len(batch) >= cap):
        return 0.0  # full, or its share of a queue that other devices take the rest of
    start = batch[0].submitted
    if settings.batch_window_ms == "auto":
        if last is None or len(batch) >= min(limit, last.size + last.backlog):
            return 0.0
        if start - last.ended > AUTO_WINDOW_FRESH_S:
            return 0.0
        window = min(AUTO_WINDOW_MAX_S, AUTO_WINDOW_SHARE * last.run_s)
        start = max(start, last.ended)
    else:
        window = settings.batch_window_ms / 1000
    return max(0.0, start + window - now)


def unserved(task: Task, devices: Sequence[Device]) -> str | None:
    """Why no device is configured for the task's family (or op), or has its models on
    a live machine; None if one can run it."""
    found = missing(task, devices)
    return found[0] if found is not None else None


def missing(task: Task, devices: Sequence[Device]) -> tuple[str, str] | None:
    """(why, the request field to blame) when no live device can run the task: no device
    serves its family, or no live machine has its model, or every model it names (the
    param naming the first one missing), or all of them at once; None if one can."""
    if any(d.can_run(task) for d in devices):
        return None
    configured = [d for d in devices if d.configured_for(task)]
    if not configured:
        return (
            f"no device is configured to run the {task.family} family ({task.op}); "
            f"add it to devices.<id>.families",
            "model",
        )
    live = [d for d in configured if not d.gone]
    if not live:
        return (
            f"every node that can run the {task.family} family has left the cluster; "
            f"the job can run once one is back",
            "model",
        )
    wanted = [(task.model["path"], "model", task.model.get("name"))]
    wanted += [(path, name, None) for path, name in task.needs.items()]
    for path, field, name in wanted:
        if not any(d.has_model(path) for d in live):
            shown = name or path.rstrip("/").rsplit("/", 1)[-1]
            left = any(d.has_model(path) for d in configured)
            gone = " (the nodes that had it left the cluster)" if left else ""
            return (
                f"{field}: {shown!r} is on no node of the cluster that can run it{gone}; "
                f"put it in that node's models dir",
                field,
            )
    fields = ", ".join(dict.fromkeys(f for _, f, _ in wanted))
    return (
        f"no node of the cluster has every model the job names ({fields}) at once; "
        f"put them in one node's models dir",
        wanted[1][1] if len(wanted) > 1 else "model",
    )


def refusal(task: Task, devices: Sequence[Device]) -> str | None:
    """Why no device could ever run the task, or None when one could."""
    reason = unserved(task, devices)
    if reason is not None:
        return reason
    able = [d for d in devices if d.can_run(task)]  # (never empty here)
    if not any(d.fits(task, 1) for d in able):
        biggest = max(d.budget for d in able)
        return (
            f"the job needs about {task.bytes_for(1) / GIB:.1f} GiB of device memory; "
            f"the largest device budget is {biggest / GIB:.1f} GiB (use a smaller size)"
        )
    return None


@dataclass
class Plan:
    batch: list[Task]
    wait_s: float  # > 0: hold it back this long for companions


@dataclass(frozen=True)
class LastBatch:
    """How the last batch of a group on a device went (for the "auto" batch window)."""

    size: int
    run_s: float
    backlog: int = 0  # tasks of the group queued when it ended, not sent by its own clients
    ended: float = float("-inf")  # on the scheduler's clock


class Queue:
    """The queued tasks, with the fair share between their owners."""

    def __init__(self, settings: SchedulerSettings) -> None:
        self.settings = settings
        self.fair = FairShare()
        self._tasks: dict[str, Task] = {}
        self._last: OrderedDict[tuple[str, tuple[Any, ...]], LastBatch] = OrderedDict()

    def ran(
        self,
        device_id: str,
        group: tuple[Any, ...],
        size: int,
        run_s: float,
        ended: float = float("-inf"),
        answered: float = float("inf"),
    ) -> None:
        """A batch of `group` ended on `device_id` at `ended` (remembered for the most
        recent groups, with how many tasks of the group were waiting for it).

        `answered`: when the batch's first job got its outcome. A worker sends each
        result as soon as it is made, so the first clients of the batch may be back in
        the queue before it ends; they count once, as the batch's clients, not also as
        tasks that were waiting for it."""
        key = (device_id, group)
        backlog = sum(
            1 for t in self._tasks.values() if t.group == group and t.submitted < answered
        )
        self._last[key] = LastBatch(size, run_s, backlog, ended)
        self._last.move_to_end(key)
        while len(self._last) > RECENT_GROUPS:
            self._last.popitem(last=False)

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._tasks

    def tasks(self) -> list[Task]:
        return list(self._tasks.values())

    def add(self, task: Task) -> None:
        self._tasks[task.job_id] = task
        self.fair.arrive(task.owner)

    def remove(self, job_id: str) -> Task | None:
        task = self._tasks.pop(job_id, None)
        if task is not None:
            self.fair.leave(task.owner)
        return task

    def plan(
        self,
        device: Device,
        now: float,
        idle: Sequence[Device] = (),
        running: Sequence[Sequence[Task]] = (),
        coming: Sequence[Device] = (),
    ) -> Plan | None:
        """The batch `device` should run next, or None when it can run nothing queued.
        `idle`: the devices free now (this one among them), `running`: the batches of
        the busy ones, `coming`: those whose worker is starting; they share the queue
        (`share`)."""
        return self._plan(device, now, list(self._tasks.values()), idle, running, coming)

    def unplannable(self, device: Device, now: float) -> list[tuple[Task, Exception]]:
        """The tasks that make `plan` raise when planned alone, with what they raised: a bug
        that one job's parameters trigger must fail that job, not every later dispatch."""
        bad = []
        for task in list(self._tasks.values()):
            try:
                self._plan(device, now, [task])
            except Exception as exc:
                bad.append((task, exc))
        return bad

    def _plan(
        self,
        device: Device,
        now: float,
        tasks: list[Task],
        idle: Sequence[Device] = (),
        running: Sequence[Sequence[Task]] = (),
        coming: Sequence[Device] = (),
    ) -> Plan | None:
        candidates = [t for t in tasks if device.can_run(t) and device.fits(t, 1)]
        if not candidates:
            return None
        head = min(candidates, key=lambda t: rank(t, device, self.fair, now))
        shared = len(idle) > 1 or running or coming
        cap = share(head, candidates, idle, running, coming) if shared else None
        batch = form_batch(head, candidates, device, self.settings, self.fair, now, cap)
        last = self._last.get((device.device_id, head.group))
        return Plan(batch, window_left(batch, self.settings, now, last, cap))

    def take(self, batch: list[Task]) -> None:
        """The batch starts: charge its owners, then take its tasks off the queue."""
        self.fair.served(batch[0].owner, [t.owner for t in batch])
        for task in batch:
            self.remove(task.job_id)


# --- lost runs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What to do with a task whose run ended without a result."""

    action: Literal["requeue", "fail", "cancel"]
    reason: str


def after_worker_lost(task: Task, reason: str, max_retries: int) -> Outcome:
    """The worker died or hung while running the task: run it again, up to max_retries.
    `task.attempts` counts these lost runs; the job reports the same number."""
    if task.cancel_requested:
        return Outcome("cancel", "cancelled")
    task.attempts += 1
    if task.attempts > max_retries:
        return Outcome("fail", f"worker died {task.attempts} times running this job ({reason})")
    return Outcome("requeue", reason)


def after_out_of_memory(
    task: Task, batch_size: int, device_id: str, devices: Sequence[Device], error: str
) -> Outcome:
    """Out of memory: a smaller batch, then another device, then fail with the reason."""
    if task.cancel_requested:
        return Outcome("cancel", "cancelled")
    if batch_size > 1:
        task.max_batch = max(1, batch_size // 2)
        return Outcome(
            "requeue", f"out of memory on {device_id}; retrying in a batch of {task.max_batch}"
        )
    task.excluded.add(device_id)
    if any(d.can_run(task) and d.fits(task, 1) for d in devices):
        return Outcome("requeue", f"out of memory on {device_id}; retrying on another device")
    return Outcome("fail", f"out of memory on every device that can run it ({error})")
