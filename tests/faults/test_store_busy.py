"""The job store while another connection holds its write lock (no server: fast)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from pixelpool.jobs.store import Database, StoreBusy


def _insert(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO events (job_id, kind, payload, created) VALUES ('j', 'x', '{}', 0)")


def _count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]


def test_a_plain_write_gives_up_with_store_busy_and_reads_go_on(tmp_path: Path) -> None:
    asyncio.run(_plain(tmp_path))


async def _plain(tmp_path: Path) -> None:
    db = Database(tmp_path / "jobs.db", busy_timeout_s=0.1)
    other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusy) as caught:
            await db.call(_insert)
        assert caught.value.retry_after_s > 0
        assert await db.call(_count) == 0  # WAL: reads are not blocked
    finally:
        other.execute("COMMIT")
    await db.call(_insert)
    assert await db.call(_count) == 1
    db.close()


def test_a_durable_write_waits_for_the_lock_and_keeps_its_order(tmp_path: Path) -> None:
    asyncio.run(_durable(tmp_path))


async def _durable(tmp_path: Path) -> None:
    db = Database(tmp_path / "jobs.db", busy_timeout_s=0.05)
    other = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    write = db.submit(_insert, durable=True)
    after = db.submit(_count)  # queued behind the write: sees it once it is done
    await asyncio.sleep(0.3)  # several busy timeouts pass: it keeps waiting, never fails
    assert not write.done() and not after.done()
    other.execute("COMMIT")
    await write
    assert await after == 1
    db.close()
