import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from pixelpool.jobs.artifacts import ArtifactStore
from pixelpool.jobs.spec import JobRecord, JobSpec, JobStatus
from pixelpool.jobs.store import Database, JobStore

SPEC = JobSpec(
    op="txt2img",
    family="diffusion",
    model={"name": "m", "path": "/m", "architecture": "sd15", "format": "diffusers"},
    params={"prompt": "a cat", "steps": 3},
)


def _record(job_id: str, status: JobStatus = JobStatus.queued, **kw: object) -> JobRecord:
    return JobRecord(id=job_id, spec=SPEC, owner=None, status=status, created=time.time(), **kw)


def test_job_round_trip_and_wal(tmp_path: Path) -> None:
    async def go() -> None:
        db = Database(tmp_path / "jobs.db")
        store = JobStore(db)
        await store.insert(_record("a"))
        await store.update("a", status=JobStatus.completed, result={"seeds": [1]}, finished=2.0)
        got = await store.get("a")
        assert got is not None
        assert got.status is JobStatus.completed
        assert got.result == {"seeds": [1]}
        assert got.spec == SPEC
        assert await store.get("missing") is None
        db.close()

    asyncio.run(go())
    mode = sqlite3.connect(tmp_path / "jobs.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_unfinished_survive_reopen_in_order(tmp_path: Path) -> None:
    async def write() -> None:
        db = Database(tmp_path / "jobs.db")
        store = JobStore(db)
        await store.insert(_record("q1"))
        await store.insert(_record("r1", JobStatus.running))
        await store.insert(_record("done", JobStatus.completed))
        db.close()

    async def read() -> list[str]:
        db = Database(tmp_path / "jobs.db")
        ids = [r.id for r in await JobStore(db).unfinished()]
        db.close()
        return ids

    asyncio.run(write())
    assert asyncio.run(read()) == ["q1", "r1"]


def test_idempotency_key_lookup_and_uniqueness(tmp_path: Path) -> None:
    async def go() -> None:
        db = Database(tmp_path / "jobs.db")
        store = JobStore(db)
        await store.insert(_record("a", idempotency_key="k1"))
        assert (await store.by_idempotency_key(None, "k1")).id == "a"  # type: ignore[union-attr]
        assert await store.by_idempotency_key("someone", "k1") is None
        with pytest.raises(sqlite3.IntegrityError):
            await store.insert(_record("b", idempotency_key="k1"))
        db.close()

    asyncio.run(go())


def test_completed_jobs_expire(tmp_path: Path) -> None:
    async def go() -> None:
        db = Database(tmp_path / "jobs.db")
        store = JobStore(db)
        await store.insert(_record("old", JobStatus.completed, expires=time.time() - 1))
        await store.insert(_record("new", JobStatus.completed, expires=time.time() + 100))
        assert await store.expire(time.time()) == 1
        assert (await store.get("old")).status is JobStatus.expired  # type: ignore[union-attr]
        assert (await store.get("new")).status is JobStatus.completed  # type: ignore[union-attr]
        db.close()

    asyncio.run(go())


def test_artifacts_dedupe_content_and_expire(tmp_path: Path) -> None:
    async def go() -> None:
        db = Database(tmp_path / "jobs.db")
        arts = ArtifactStore(db, tmp_path / "artifacts", ttl_s=60)
        a = await arts.put(b"png-bytes", "image/png", None)
        b = await arts.put(b"png-bytes", "image/png", "key1")
        assert a.id != b.id and len(a.id) == 32  # 128-bit, unguessable ids
        assert a.path == b.path and a.path.read_bytes() == b"png-bytes"
        got = await arts.get(a.id)
        assert got is not None and got.media_type == "image/png"
        assert got.data == b"png-bytes"  # just written: served from memory
        assert await arts.get("0" * 32) is None

        from_disk = ArtifactStore(db, tmp_path / "artifacts", ttl_s=60, memory_bytes=0)
        c = await from_disk.put(b"other", "image/png", None)
        again = await from_disk.get(c.id)
        assert again is not None and again.data is None and again.path.read_bytes() == b"other"
        assert await from_disk.read(again) == b"other"  # from the file
        assert got is not None and await arts.read(got) == b"png-bytes"  # from memory
        again.path.unlink()  # purged between get and read: None, not an exception
        assert await from_disk.read(again) is None

        def expire_all(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE artifacts SET expires = 0")

        await db.call(expire_all)
        assert await from_disk.get(c.id) is None
        db.close()

    asyncio.run(go())
