"""The job service on a real SQLite store, with fake workers the test drives (no sleeps)."""

import asyncio
import logging
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixelpool.config import SchedulerSettings, Settings
from pixelpool.engine.refusals import NoDeviceServes
from pixelpool.engine.scheduler import Scheduler, restart_delay
from pixelpool.jobs.artifacts import ArtifactStore
from pixelpool.jobs.eventlog import EventLog
from pixelpool.jobs.events import EventBus
from pixelpool.jobs.service import JobService
from pixelpool.jobs.spec import JobStatus
from pixelpool.jobs.store import Database, JobStore
from pixelpool.testing.fakes import FakeClock, FakeWorker, fake_slots, fake_spec

OWNERS = ["alice", "bob", "carol", None]


class Life:
    """One lifetime of the server: store, job service and scheduler over fake workers."""

    def __init__(
        self, data: Path, workers: int = 1, caps: list[str] | None = None, **scheduler: Any
    ) -> None:
        self.settings = Settings(scheduler=SchedulerSettings(**scheduler))
        self.db = Database(data / "jobs.db")
        self.store = JobStore(self.db)
        self.clock = FakeClock()
        self.slots = fake_slots(workers)
        for slot in self.slots:
            slot.capabilities = caps or ["*"]
        self.data = data

    async def start(self) -> None:
        bus = await EventBus.persistent(EventLog(self.db))
        artifacts = ArtifactStore(self.db, self.data / "artifacts", 3600)
        self.jobs = JobService(self.settings, self.store, artifacts, bus)
        self.jobs.write_retry_s = (0.0, 0.0)
        self.scheduler = Scheduler(
            self.slots, self.jobs, self.settings.scheduler,
            respawn=lambda slot: FakeWorker(slot.handle.device), clock=self.clock,
        )  # fmt: skip
        self.jobs.attach(self.scheduler)
        await self.scheduler.start(run_loop=False)
        await self.jobs.recover()

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.jobs.drain()
        self.db.close()

    def worker(self, i: int = 0) -> FakeWorker:
        handle = self.slots[i].handle
        assert isinstance(handle, FakeWorker)
        return handle

    async def step(self) -> None:
        await self.scheduler.step()
        await self.jobs.settle()

    async def run_all(self) -> list[list[str]]:
        """Let the workers finish whatever they get until nothing is left; the batches."""
        batches = []
        await self.step()
        while any(self.worker(i).batch for i in range(len(self.slots))):
            for i in range(len(self.slots)):
                if self.worker(i).batch is not None:
                    batches.append(self.worker(i).job_ids())
                    self.worker(i).finish()
            await self.step()
        return batches


def lifetime(
    data: Path, body: Callable[[Life], Awaitable[None]], clean: bool = True, **options: Any
) -> None:
    """Run `body` in one lifetime; `clean=False` ends it as kill -9 would: no stop, no
    drain, nothing more written."""

    async def go() -> None:
        life = Life(data, **options)
        await life.start()
        try:
            await body(life)
        finally:
            if clean:
                await life.stop()
            else:
                life.db.close()

    asyncio.run(go())


@pytest.mark.parametrize("clean_stop", [True, False])
def test_jobs_of_many_owners_run_after_a_restart(tmp_path: Path, clean_stop: bool) -> None:
    """The bug: two never-served keys queued at start-up made every start fail."""
    ids: list[str] = []

    async def first(life: Life) -> None:
        for n in range(8):
            record = await life.jobs.submit(fake_spec(seed=n, group=str(n)), OWNERS[n % 4])
            ids.append(record.id)
        await life.step()  # one runs, the rest wait
        assert life.worker().job_ids() == [ids[0]]

    lifetime(tmp_path, first, clean=clean_stop)
    seen: dict[str, Any] = {}

    async def second(life: Life) -> None:
        assert life.jobs.active_count() == 8
        batches = await life.run_all()
        assert sorted(j for b in batches for j in b) == sorted(ids)
        # Fair share at start-up too: the first four batches serve four different keys.
        owners = [(await life.store.get(b[0])).owner for b in batches[:4]]
        assert len(set(owners)) == 4
        for job_id in ids:
            seen[job_id] = await life.jobs.get(job_id)

    lifetime(tmp_path, second)
    assert all(r.status is JobStatus.completed for r in seen.values())


def test_a_job_that_no_device_can_run_after_a_restart_fails_and_the_rest_run(
    tmp_path: Path,
) -> None:
    ids: list[str] = []

    async def first(life: Life) -> None:
        for n in range(3):
            ids.append((await life.jobs.submit(fake_spec(seed=n), OWNERS[n])).id)

    lifetime(tmp_path, first)

    async def second(life: Life) -> None:  # its devices run nothing of the fake family
        await life.jobs.settle()
        records = [await life.store.get(i) for i in ids]
        assert [r.status for r in records] == [JobStatus.failed] * 3
        assert all("cannot run after restart" in (r.error or "") for r in records)

    lifetime(tmp_path, second, caps=["other"])


def test_attempts_agree_with_the_worker_died_message(tmp_path: Path) -> None:
    async def body(life: Life) -> None:
        once = await life.jobs.submit(fake_spec(seed=1, group="once"), "a")
        await life.step()
        life.worker().die()
        life.clock.advance(restart_delay(99))
        await life.step()
        life.worker().finish()
        await life.step()
        stored = await life.store.get(once.id)
        assert (stored.status, stored.attempts) == (JobStatus.completed, 1)

        doomed = await life.jobs.submit(fake_spec(seed=2, group="doomed"), "a")
        for _ in range(3):
            await life.step()
            life.worker().die()
            life.clock.advance(restart_delay(99))
        await life.step()
        stored = await life.store.get(doomed.id)
        assert stored.status is JobStatus.failed
        assert stored.error.startswith(f"worker died {stored.attempts} times")
        assert stored.attempts == 3

    lifetime(tmp_path, body, max_retries=2)


def _block(db_path: Path, status: str) -> None:
    """A real SQLite failure: every write of `status` to a job aborts (like a full disk)."""
    conn = sqlite3.connect(db_path)
    conn.execute(
        f"CREATE TRIGGER IF NOT EXISTS block_{status} BEFORE UPDATE OF status ON jobs "
        f"WHEN NEW.status = '{status}' BEGIN SELECT RAISE(ABORT, 'disk is full'); END"
    )
    conn.commit()
    conn.close()


def _unblock(db_path: Path, status: str) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute(f"DROP TRIGGER IF EXISTS block_{status}")
    conn.commit()
    conn.close()


def test_failed_background_writes_are_logged_and_the_job_still_ends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(life: Life) -> None:
        _block(tmp_path / "jobs.db", "running")
        record = await life.jobs.submit(fake_spec(seed=3), "a")
        with caplog.at_level(logging.WARNING, logger="pixelpool.jobs.service"):
            await life.step()
        assert "recording its start failed" in caplog.text
        assert "disk is full" in caplog.text
        life.worker().finish()
        await life.step()
        stored = await life.store.get(record.id)
        assert stored.status is JobStatus.completed  # the final write went through

    lifetime(tmp_path, body)


def test_a_final_state_the_store_refuses_is_reported_and_written_at_shutdown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = ""

    async def body(life: Life) -> None:
        nonlocal job_id
        record = await life.jobs.submit(fake_spec(seed=4), "a")
        job_id = record.id
        await life.step()
        _block(tmp_path / "jobs.db", "completed")
        life.worker().finish()
        with caplog.at_level(logging.ERROR, logger="pixelpool.jobs.service"):
            await life.step()
        assert "could not record it" in caplog.text
        finished = await asyncio.wait_for(life.jobs.wait(job_id), 5)  # waiters are woken
        assert finished.status is JobStatus.completed
        assert (await life.jobs.get(job_id)).status is JobStatus.completed
        assert (await life.store.get(job_id)).status is JobStatus.running  # reruns if lost
        _unblock(tmp_path / "jobs.db", "completed")

    lifetime(tmp_path, body)

    async def check() -> None:
        db = Database(tmp_path / "jobs.db")
        try:
            stored = await JobStore(db).get(job_id)
            assert stored is not None and stored.status is JobStatus.completed
        finally:
            db.close()

    asyncio.run(check())


# --- every accepted job ends, through the whole service ---------------------------------

SERVICE_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from(OWNERS), st.sampled_from("gh")),
        st.tuples(st.sampled_from(["finish", "oom", "die", "hang"]), st.integers(0, 1)),
        st.tuples(st.just("cancel"), st.integers(0, 20)),
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(SERVICE_OPS)
def test_every_accepted_job_ends_in_the_store(ops: list[tuple[Any, ...]]) -> None:
    ids: list[str] = []

    async def body(life: Life) -> None:
        for action, arg, *more in ops:
            if action == "submit":
                record = await life.jobs.submit(fake_spec(seed=len(ids), group=more[0]), arg)
                ids.append(record.id)
            elif action == "cancel":
                if ids:
                    await life.jobs.cancel(ids[arg % len(ids)])
            else:
                worker = life.worker(arg)
                if worker.alive and worker.batch is not None:
                    if action == "finish":
                        worker.finish()
                    elif action == "oom":
                        worker.oom()
                    elif action == "die":
                        worker.die()
                    else:
                        life.clock.advance(life.settings.scheduler.heartbeat_timeout_s + 1)
            await life.step()
        for _ in range(100):  # then the workers behave
            if not life.jobs.active_count():
                break
            life.clock.advance(restart_delay(99))
            await life.run_all()
        assert life.jobs.active_count() == 0
        for job_id in ids:
            stored = await life.store.get(job_id)
            assert stored is not None
            assert stored.status in (JobStatus.completed, JobStatus.failed, JobStatus.cancelled)
            if stored.status is JobStatus.failed:
                assert stored.error
            if stored.error and stored.error.startswith("worker died"):
                assert stored.error.startswith(f"worker died {stored.attempts} times")

    with tempfile.TemporaryDirectory() as data:
        lifetime(Path(data), body, workers=2, max_batch=3, max_retries=1)


def test_finished_records_kept_for_waiters_are_forgotten_once_old(tmp_path: Path) -> None:
    """Waiters read a finished job's record from memory; the drain-time sweep drops the
    old ones (the store has them), so memory does not keep the last thousand jobs."""

    async def body(life: Life) -> None:
        record = await life.jobs.submit(fake_spec(seed=5), "a")
        waiter = asyncio.create_task(life.jobs.wait(record.id))
        await life.step()
        life.worker().finish()
        await life.step()
        assert (await waiter).status is JobStatus.completed
        life.jobs.forget_finished(3600)
        assert (await life.jobs.wait(record.id)).id == record.id  # young: still in memory
        assert record.id in life.jobs._finished
        life.jobs.forget_finished(0)
        assert record.id not in life.jobs._finished
        assert (await life.jobs.wait(record.id)).status is JobStatus.completed  # the store

    lifetime(tmp_path, body)


def test_a_job_whose_last_device_leaves_while_it_is_written_ends_failed(tmp_path: Path) -> None:
    """A cluster node can leave between the check at submit and the queueing (the store
    write is awaited in between): the caller gets the refusal, and the job, already in
    the store, ends failed with the reason rather than staying queued unseen."""

    async def body(life: Life) -> None:
        insert = life.store.insert

        async def insert_then_lose_the_device(record: Any) -> None:
            await insert(record)
            life.slots[0].gone_since = 0.0  # its machine left meanwhile

        life.store.insert = insert_then_lose_the_device  # type: ignore[method-assign]
        with pytest.raises(NoDeviceServes, match="left the cluster"):
            await life.jobs.submit(fake_spec(seed=1))
        await life.jobs.settle()
        rows = await life.store.unfinished()
        assert rows == []
        assert life.jobs.active_count() == 0

    lifetime(tmp_path, body)


def test_a_failed_job_names_files_relative_to_the_servers_dirs(tmp_path: Path) -> None:
    """Where the server keeps models and data is the host's: a job's error (what every
    dialect shows its caller, and the store keeps) names files relative to those dirs."""

    async def body(life: Life) -> None:
        record = await life.jobs.submit(fake_spec(seed=1))
        await life.step()
        models = life.settings.server.models_dir.resolve()
        life.worker().fail(record.id, f"FileNotFoundError: model files are missing: {models}/sd")
        await life.jobs.settle()
        (row,) = await life.store.db.call(
            lambda conn: conn.execute("SELECT error FROM jobs").fetchall()
        )
        assert row == ("FileNotFoundError: model files are missing: sd",)

    lifetime(tmp_path, body)
