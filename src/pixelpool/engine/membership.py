"""Machines that come and go (a cluster's nodes): which devices are gone, for how long,
and the jobs that no live machine can run any more.

A device is gone when discovery no longer finds its machine, or its worker cannot start
because the machine left. A gone device takes no jobs; a queued job that no live device
can run fails at once, saying why (a new one is refused at submit, as for a model on no
node); after `cluster.node_gone_after_s` the device leaves the slots; discovery adds it
again if its machine comes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pixelpool.config import SchedulerSettings
from pixelpool.engine import policy
from pixelpool.engine.devices import DeviceInfo
from pixelpool.engine.slot import Slot
from pixelpool.engine.task import EngineListener, Task

log = logging.getLogger("pixelpool.engine.scheduler")


@dataclass
class Membership:
    """For backends whose machines come and go (a cluster): what the scheduler asks them.

    `known_models`: every model path the machines were asked about (a job's params naming
    one of them need it on its machine); `vet`: raises InputsTooLarge for a job whose
    inputs may not travel; `forget`: a device whose machine stayed gone longer than
    `gone_after_s` leaves the slots, and the backend forgets it too."""

    known_models: Callable[[], frozenset[str]]
    vet: Callable[[Task], None]
    forget: Callable[[DeviceInfo], None]
    gone_after_s: float


class Machines:
    """The Scheduler's part that follows machines (a mixin: the Scheduler owns the state)."""

    slots: list[Slot]
    queue: policy.Queue
    listener: EngineListener
    settings: SchedulerSettings
    membership: Membership | None
    _clock: Callable[[], float]
    _restart_at: dict[int, float]
    _crashes: dict[str, int]
    _wake: asyncio.Event

    def _apply(self, task: Task, outcome: policy.Outcome) -> None:
        raise NotImplementedError

    def seen(self, device_ids: set[str]) -> None:
        """Discovery found these devices on live machines: every other slot's machine is
        gone; a gone one found again starts its worker now. Then fail what no live
        machine can run any more (models move between rounds too)."""
        now = self._clock()
        for slot in self.slots:
            if slot.device_id not in device_ids:
                if not slot.gone:
                    log.warning("device %s: its machine left the cluster", slot.device_id)
                    slot.gone_since = now
            elif slot.gone:
                log.info("the machine of %s is back", slot.device_id)
                slot.gone_since = None
                if id(slot) in self._restart_at:
                    self._restart_at[id(slot)] = now
                    self._wake.set()
        self._fail_orphans()

    def mark_gone(self, slot: Slot, now: float) -> None:
        """Its machine left: it takes no new jobs, and queued jobs that only it could run
        fail now, with the reason, rather than wait for it."""
        if slot.gone:
            return
        log.warning("device %s: its machine left the cluster", slot.device_id)
        slot.gone_since = now
        self._fail_orphans()

    def _fail_orphans(self) -> None:
        """Fail each queued job that no live device can run (saying which model is
        missing): waiting could be forever. A device that is only restarting still counts."""
        for task in self.queue.tasks():
            missing = policy.missing(task, self.slots)
            if missing is not None and self.queue.remove(task.job_id) is not None:
                self.listener.job_failed(task.job_id, f"cannot run: {missing[0]}", "error")

    def _expire(self, now: float) -> None:
        """A machine gone longer than `gone_after_s` is gone for good: its devices leave
        the slots (and the status page); discovery adds them again if it comes back."""
        if self.membership is None:
            return
        limit = self.membership.gone_after_s
        expired = [
            s for s in self.slots if s.gone_since is not None and now - s.gone_since >= limit
        ]
        for slot in expired:
            log.warning("device %s removed: its machine is gone", slot.device_id)
            self.slots.remove(slot)
            self._restart_at.pop(id(slot), None)
            self._crashes.pop(slot.device_id, None)
            lost, slot.batch, slot.finishing = slot.tasks(), [], {}  # decoding too
            for task in lost:  # (its worker's exit normally took them back already)
                lost_run = policy.after_worker_lost(
                    task, "its node left", self.settings.max_retries
                )
                self._apply(task, lost_run)
            slot.handle.kill()
            self.membership.forget(slot.handle.device)
        if expired:
            self._fail_orphans()
