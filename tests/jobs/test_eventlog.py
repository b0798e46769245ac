"""The durable event log: batched writes, replay after an id, ids across restarts, retention."""

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from pixelpool.jobs import events as events_module
from pixelpool.jobs.eventlog import PREVIEW_MAX_CHARS, EventLog
from pixelpool.jobs.events import EventBus
from pixelpool.jobs.spec import JobRecord, JobSpec, JobStatus
from pixelpool.jobs.store import Database, JobStore

SPEC = JobSpec(
    op="txt2img",
    family="diffusion",
    model={"name": "m", "path": "/m", "architecture": "sd15", "format": "diffusers"},
    params={"prompt": "a cat", "steps": 3},
)


async def _job(db: Database, job_id: str, **kw: Any) -> None:
    record = JobRecord(
        id=job_id, spec=SPEC, owner=None, status=JobStatus.queued, created=time.time()
    )
    await JobStore(db).insert(record)
    if kw:
        await JobStore(db).update(job_id, **kw)


def _publish_run(bus: EventBus, job_id: str, steps: int = 5) -> list[dict[str, Any]]:
    """What the job service publishes for one run (previews every other step)."""

    def publish(kind: str, **extra: Any) -> dict[str, Any]:
        return bus.publish({"type": kind, "job_id": job_id, "owner": "k", **extra})

    out = [publish("queued"), publish("started")]
    for step in range(1, steps + 1):
        out.append(publish("progress", step=step))
        if step % 2 == 0:
            out.append(publish("preview", step=step, image="x" * step))
    out.append(publish("completed"))
    return out


def _rows(path: Path) -> list[tuple[int, str, str]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, job_id, kind FROM events ORDER BY id").fetchall()


def test_publish_buffers_then_one_transaction_and_replay_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    writes: list[int] = []

    async def first() -> list[dict[str, Any]]:
        db = Database(path)
        await _job(db, "j")
        bus = await EventBus.persistent(EventLog(db))
        submit = db.submit
        db.submit = lambda fn, durable=False: (writes.append(1), submit(fn, durable))[1]  # type: ignore[method-assign]
        published = _publish_run(bus, "j")
        assert _rows(path) == []  # publishing wrote nothing itself
        await bus.close()  # shutdown: the buffer is written
        assert len(writes) == 1  # every event of the run in one batch
        db.close()
        return published

    async def second(after: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        db = Database(path)
        bus = await EventBus.persistent(EventLog(db))
        replay = await bus.history("j", after)  # not in memory: read from the store
        new = bus.publish({"type": "progress", "job_id": "other"})
        await bus.close()
        db.close()
        return replay, [new]

    published = asyncio.run(first())
    ids = [e["id"] for e in published]
    assert ids == sorted(set(ids))
    middle = next(e["id"] for e in published if e.get("step") == 2)
    replay, (new,) = asyncio.run(second(middle))
    # Every later event, in order, except the older of the previews: only the latest is kept.
    expected = [e for e in published if e["id"] > middle and e.get("image") != "xx"]
    assert replay == expected
    assert [e.get("image") for e in replay if e["type"] == "preview"] == ["xxxx"]
    assert replay[-1]["type"] == "completed"
    assert new["id"] > ids[-1]


def test_ids_stay_above_stored_ones_when_the_clock_goes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobs.db"

    async def run() -> list[int]:
        db = Database(path)
        bus = await EventBus.persistent(EventLog(db))
        ids = [bus.publish({"type": "progress", "job_id": "j", "step": s})["id"] for s in (1, 2)]
        await bus.close()
        db.close()
        return ids

    before = asyncio.run(run())
    monkeypatch.setattr(events_module, "clock_id", lambda: 1)  # a clock set far back
    after = asyncio.run(run())
    assert after[0] == before[-1] + 1 and after[1] == after[0] + 1

    async def purge_all() -> int:
        db = Database(path)
        deleted = await EventLog(db).purge()  # no job row: the events are orphans
        db.close()
        return deleted

    assert asyncio.run(purge_all()) == 4 and _rows(path) == []
    again = asyncio.run(run())  # the high-water mark outlives the rows
    assert again[0] == after[-1] + 1


def test_history_joins_memory_and_store(tmp_path: Path) -> None:
    async def go() -> None:
        db = Database(tmp_path / "jobs.db")
        bus = await EventBus.persistent(EventLog(db), per_job=3)
        published = [bus.publish({"type": "progress", "job_id": "j", "step": s}) for s in range(6)]
        ids = [e["id"] for e in published]
        # Memory keeps the last 3; the rest come from the store's buffer, then its table.
        assert await bus.history("j") == published
        await bus.close()
        assert await bus.history("j") == published
        assert await bus.history("j", ids[1]) == published[2:]
        assert await bus.history("j", ids[2]) == published[3:]  # memory alone
        assert await bus.history("j", ids[-1]) == []
        assert await bus.history("nobody") == []
        db.close()

    asyncio.run(go())


def test_restore_puts_a_rerun_job_events_before_its_new_ones(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"

    async def crash() -> list[dict[str, Any]]:
        db = Database(path)
        bus = await EventBus.persistent(EventLog(db))
        done = [bus.publish({"type": "progress", "job_id": "j", "step": s}) for s in (1, 2)]
        await bus.close()
        bus.publish({"type": "progress", "job_id": "j", "step": 3})  # never written
        db.close()
        return done

    async def rerun() -> list[dict[str, Any]]:
        db = Database(path)
        bus = await EventBus.persistent(EventLog(db))
        await bus.restore("j")
        _publish_run(bus, "j", steps=1)
        await bus.restore("j")  # a second call changes nothing
        replay = await bus.history("j")
        await bus.close()
        assert await bus.history("j") == replay
        db.close()
        return replay

    done = asyncio.run(crash())
    replay = asyncio.run(rerun())
    assert replay[:2] == done
    assert [e["type"] for e in replay[2:]] == ["queued", "started", "progress", "completed"]
    ids = [e["id"] for e in replay]
    assert ids == sorted(set(ids))


def test_retention_follows_the_job(tmp_path: Path) -> None:
    async def go() -> None:
        db = Database(tmp_path / "jobs.db")
        now = time.time()
        await _job(db, "running")
        await _job(db, "recent", status=JobStatus.completed, finished=now - 10, expires=now + 99)
        await _job(db, "old", status=JobStatus.failed, finished=now - 1000, expires=now + 99)
        await _job(db, "expired", status=JobStatus.completed, finished=now - 10, expires=now - 1)
        await _job(db, "long", status=JobStatus.running)
        log = EventLog(db, retain_s=900, per_job=4)
        bus = await EventBus.persistent(log)
        for job_id in ("running", "recent", "old", "expired", "gone"):
            bus.publish({"type": "started", "job_id": job_id})
        long = [bus.publish({"type": "progress", "job_id": "long", "step": s}) for s in range(9)]
        await bus.close()
        # old: finished past retain_s; expired: past its TTL; gone: no such job; long: capped.
        assert await log.purge(now) == 3 + 5
        kept = {job_id for _, job_id, _ in _rows(tmp_path / "jobs.db")}
        assert kept == {"running", "recent", "long"}
        assert await log.history("long") == long[-4:]
        assert await log.purge(now) == 0
        db.close()

    asyncio.run(go())


def test_only_the_latest_small_enough_preview_is_stored(tmp_path: Path) -> None:
    async def go() -> list[dict[str, Any]]:
        db = Database(tmp_path / "jobs.db")
        log = EventLog(db)
        bus = await EventBus.persistent(log)
        bus.publish({"type": "preview", "job_id": "j", "image": "a"})
        await log.flush()
        bus.publish({"type": "preview", "job_id": "j", "image": "b" * (PREVIEW_MAX_CHARS + 1)})
        bus.publish({"type": "progress", "job_id": "j", "step": 2})
        await bus.close()
        assert len(await bus.history("j")) == 2  # memory: the latest preview, all the rest
        stored = await log.history("j")
        db.close()
        return stored

    # The big preview replaced the small one in the table, but is not stored itself.
    assert [e["type"] for e in asyncio.run(go())] == ["progress"]


def test_a_full_store_loses_events_with_one_log_line_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's own "database or disk is full" (its file held at its size) ends the write's
    transaction itself: the log says how many events a replay will miss, once for many
    flushes (no trace), and writes go on once there is room."""

    def fill(conn: sqlite3.Connection) -> int:
        limit = conn.execute("PRAGMA max_page_count").fetchone()[0]
        conn.execute("CREATE TABLE filler (x BLOB)")
        conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(sqlite3.OperationalError, match="full"):
            for _ in range(10_000):
                conn.execute("INSERT INTO filler VALUES (?)", (b"\0" * 1024,))
        return int(limit)

    async def go() -> None:
        db = Database(tmp_path / "jobs.db")
        log = EventLog(db)
        limit = await db.call(fill)
        big = "x" * 20_000  # needs new pages whatever room the table's pages have left
        for n in range(3):
            log.append({"id": n + 1, "job_id": "j", "type": "progress", "note": big})
            await log.flush()
        await db.call(lambda conn: conn.execute(f"PRAGMA max_page_count={limit}"))
        log.append({"id": 9, "job_id": "j", "type": "progress"})
        await log.flush()
        assert [e["id"] for e in await log.history("j")] == [9]
        db.close()

    with caplog.at_level("ERROR", logger="pixelpool.jobs.eventlog"):
        asyncio.run(go())
    lines = [r for r in caplog.records if r.name == "pixelpool.jobs.eventlog"]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert lines[0].getMessage() == (
        "1 job events were not stored (the server's storage is full: database or disk is "
        "full); a replay will miss them"
    )
