"""The durable job store: one SQLite file in WAL mode.

All access goes through one thread (SQLite connections are not shared across
threads, and a single writer avoids lock contention); the event loop awaits it.

Another process may hold the database's write lock for a while (a backup, an
operator's sqlite3 shell). A write then waits `BUSY_TIMEOUT_S` for it; after that,
a request's write (a new job) raises `StoreBusy`, which the API answers with 503
and `Retry-After`, while a write that records what already happened to an accepted
job (`durable=True`: status changes, results, events) keeps waiting, on the store's
thread so that later calls stay behind it in order. Reads are not blocked (WAL).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from pixelpool.jobs.spec import JobRecord, JobSpec, JobStatus

T = TypeVar("T")

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0
RETRY_AFTER_S = 5


class StoreBusy(Exception):
    """Another process holds the job store's write lock; try again later (503)."""

    def __init__(self, retry_after_s: int = RETRY_AFTER_S) -> None:
        super().__init__("the job store is busy (locked by another process); try again shortly")
        self.retry_after_s = retry_after_s


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (with any extended code)."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return isinstance(exc, sqlite3.OperationalError) and (
        name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc)
    )


SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    owner TEXT,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    device TEXT,
    batch_size INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT NOT NULL DEFAULT '{}',
    expires REAL,
    idempotency_key TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs(COALESCE(owner, ''), idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS artifacts (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    owner TEXT,
    created REAL NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_expires ON artifacts(expires);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, id);
"""

COLUMNS = (
    "id, spec, owner, status, created, started, finished, error, device, batch_size, "
    "attempts, result, expires, idempotency_key"
)


def _row_to_record(row: tuple[Any, ...]) -> JobRecord:
    (id_, spec, owner, status, created, started, finished, error, device, batch_size,
     attempts, result, expires, idem) = row  # fmt: skip
    return JobRecord(
        id=id_,
        spec=JobSpec.model_validate_json(spec),
        owner=owner,
        status=JobStatus(status),
        created=created,
        started=started,
        finished=finished,
        error=error,
        device=device,
        batch_size=batch_size,
        attempts=attempts,
        result=json.loads(result),
        expires=expires,
        idempotency_key=idem,
    )


class Database:
    """One SQLite connection owned by one thread; `call` runs a function on it."""

    def __init__(self, path: Path, busy_timeout_s: float = BUSY_TIMEOUT_S) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._closing = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection = self._executor.submit(self._open, path).result()

    def _open(self, path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, timeout=self._busy_timeout_s)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        return conn

    def submit(
        self, fn: Callable[[sqlite3.Connection], T], durable: bool = False
    ) -> asyncio.Future[T]:
        """Queue `fn` on the store's thread now; calls run in the order they were queued.

        While another process holds the write lock, `fn` raises StoreBusy after the busy
        timeout, or with `durable` is tried again until it succeeds (see the module doc)."""
        return asyncio.get_running_loop().run_in_executor(self._executor, self._run, fn, durable)

    async def call(self, fn: Callable[[sqlite3.Connection], T], durable: bool = False) -> T:
        return await self.submit(fn, durable)

    def _run(self, fn: Callable[[sqlite3.Connection], T], durable: bool) -> T:
        waited_since: float | None = None
        while True:
            try:
                result = fn(self._conn)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if not durable or self._closing:
                    raise StoreBusy() from exc
                if waited_since is None:
                    waited_since = time.monotonic()
                    log.warning("job store locked by another process; waiting to write")
                time.sleep(0.1)
                continue
            if waited_since is not None:
                log.warning("job store writable again after %.1fs", time.monotonic() - waited_since)
            return result

    def close(self) -> None:
        self._closing = True
        self._executor.submit(self._conn.close).result()
        self._executor.shutdown()


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, record: JobRecord) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO jobs ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    record.id, record.spec.model_dump_json(), record.owner, record.status.value,
                    record.created, record.started, record.finished, record.error, record.device,
                    record.batch_size, record.attempts, json.dumps(record.result), record.expires,
                    record.idempotency_key,
                ),
            )  # fmt: skip

        await self.db.call(run)  # not durable: a busy store answers the submit with 503

    async def update(self, job_id: str, **fields: Any) -> None:
        """Write the given columns (status, started, finished, error, result, ...)."""
        values = {
            k: (json.dumps(v) if k == "result" else v.value if isinstance(v, JobStatus) else v)
            for k, v in fields.items()
        }
        assignments = ", ".join(f"{k}=?" for k in values)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(f"UPDATE jobs SET {assignments} WHERE id=?", (*values.values(), job_id))

        await self.db.call(run, durable=True)  # it records what happened to an accepted job

    async def get(self, job_id: str) -> JobRecord | None:
        def run(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            return conn.execute(f"SELECT {COLUMNS} FROM jobs WHERE id=?", (job_id,)).fetchone()

        row = await self.db.call(run)
        return _row_to_record(row) if row else None

    async def by_idempotency_key(self, owner: str | None, key: str) -> JobRecord | None:
        def run(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            return conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE owner IS ? AND idempotency_key=?", (owner, key)
            ).fetchone()

        row = await self.db.call(run)
        return _row_to_record(row) if row else None

    async def unfinished(self) -> list[JobRecord]:
        """Jobs accepted but not finished: they run again after a restart, oldest first."""

        def run(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return conn.execute(
                f"SELECT {COLUMNS} FROM jobs WHERE status IN ('queued', 'running') ORDER BY created"
            ).fetchall()

        return [_row_to_record(r) for r in await self.db.call(run)]

    async def owned(
        self,
        owner: str | None,
        family: str | None,
        limit: int,
        offset: int,
        everyone: bool = False,
    ) -> tuple[list[JobRecord], int]:
        """One page of `owner`'s jobs of `family` (None: every family; all owners' with
        `everyone`), newest first, and how many there are in all."""
        who = "1" if everyone else "owner IS ?"
        args: tuple[Any, ...] = () if everyone else (owner,)
        where = f"WHERE {who}"
        if family is not None:
            where += " AND json_extract(spec, '$.family') = ?"
            args = (*args, family)

        def run(conn: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], int]:
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM jobs {where} ORDER BY created DESC, id LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            (total,) = conn.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()
            return rows, total

        rows, total = await self.db.call(run)
        return [_row_to_record(r) for r in rows], total

    async def delete(self, job_id: str) -> None:
        """Forget a finished job (its artifacts expire with their TTL) and its events."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM jobs WHERE id=?", (job_id,))
            conn.execute("DELETE FROM events WHERE job_id=?", (job_id,))

        await self.db.call(run, durable=True)

    async def expire(self, now: float) -> int:
        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE jobs SET status='expired', result='{}' "
                "WHERE status='completed' AND expires IS NOT NULL AND expires < ?",
                (now,),
            )
            return cur.rowcount

        return await self.db.call(run)
