"""Machines that come and go (a cluster's nodes): which devices are gone, for how long,
and the jobs that no live machine can run any more.

A device is gone when discovery no longer finds its machine while its worker is down, or
its worker cannot start because the machine left. A gone device takes no jobs. A queued
job that no live device can run waits `cluster.wait_for_node_s` for a machine that can to
come back (a node that restarts, a rolling update), then fails saying why; a new one is
refused at submit meanwhile, as for a model on no node. After `cluster.node_gone_after_s`
the device leaves the slots; discovery adds it again if its machine comes back.
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
    `gone_after_s` leaves the slots, and the backend forgets it too; `wait_for_node_s`:
    how long a queued job that no live machine can run waits for one before it fails."""

    known_models: Callable[[], frozenset[str]]
    vet: Callable[[Task], None]
    forget: Callable[[DeviceInfo], None]
    gone_after_s: float
    wait_for_node_s: float = 0.0


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
    _jobs_wait_for_nodes = False  # some queued job waits for a machine to come back

    def _apply(self, task: Task, outcome: policy.Outcome) -> None:
        raise NotImplementedError

    def seen(self, device_ids: set[str]) -> None:
        """Discovery found these devices on live machines: every other slot's machine is
        gone, unless its worker is up (a round that began before the machine came back,
        or has not heard from it yet, must not take a working device out; a machine that
        really left ends its worker, and the slot is gone when the worker cannot start
        again). A gone one found again starts its worker now. Then look again at what
        no live machine can run any more (models move between rounds too)."""
        now = self._clock()
        for slot in self.slots:
            if slot.device_id not in device_ids:
                if not slot.gone and not slot.ready:
                    log.warning("device %s: its machine left the cluster", slot.device_id)
                    slot.gone_since = now
            elif slot.gone:
                log.info("the machine of %s is back", slot.device_id)
                slot.gone_since = None
                if id(slot) in self._restart_at:
                    self._restart_at[id(slot)] = now
                    self._wake.set()
        self._orphans(now)

    def mark_gone(self, slot: Slot, now: float) -> None:
        """Its machine left: it takes no new jobs, and queued jobs that only it could run
        start waiting for a machine that can (or fail now, with no wait set)."""
        if slot.gone:
            return
        log.warning("device %s: its machine left the cluster", slot.device_id)
        slot.gone_since = now
        self._orphans(now)

    def _orphans(self, now: float) -> float | None:
        """Fail each queued job that no live device has been able to run for
        `wait_for_node_s` (saying which model is missing: waiting longer could be
        forever); the others wait, and their clock stops when a machine comes back. A
        device that is only restarting still counts. Returns seconds until the next
        waiting job's time is up."""
        wait = self.membership.wait_for_node_s if self.membership is not None else 0.0
        due: float | None = None
        for task in self.queue.tasks():
            missing = policy.missing(task, self.slots)
            if missing is None:
                task.orphaned_since = None
                continue
            if task.orphaned_since is None:
                task.orphaned_since = now
                if wait > 0:
                    log.warning("job %s waits %g s: %s", task.job_id, wait, missing[0])
            left = task.orphaned_since + wait - now
            if left > 0:
                due = left if due is None else min(due, left)
            elif self.queue.remove(task.job_id) is not None:
                waited = f" (waited {wait:g} s for a node)" if wait > 0 else ""
                self.listener.job_failed(task.job_id, f"cannot run: {missing[0]}{waited}", "error")
        self._jobs_wait_for_nodes = due is not None
        return due

    def _expire(self, now: float) -> float | None:
        """A machine gone longer than `gone_after_s` is gone for good: its devices leave
        the slots (and the status page); discovery adds them again if it comes back.
        Jobs waiting for a machine that left fail when their wait is up. Returns seconds
        until the next of those is due."""
        if self.membership is None:
            return None
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
        if expired or self._jobs_wait_for_nodes or any(s.gone for s in self.slots):
            return self._orphans(now)
        return None
