"""The durable job store: one SQLite file in WAL mode.

All access goes through one thread (SQLite connections are not shared across
threads, and a single writer avoids lock contention); the event loop awaits it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from pixelpool.jobs.spec import JobRecord, JobSpec, JobStatus

T = TypeVar("T")

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

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection = self._executor.submit(self._open, path).result()

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
        return conn

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue `fn` on the store's thread now; calls run in the order they were queued."""
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn)

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.submit(fn)

    def close(self) -> None:
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

        await self.db.call(run)

    async def update(self, job_id: str, **fields: Any) -> None:
        """Write the given columns (status, started, finished, error, result, ...)."""
        values = {
            k: (json.dumps(v) if k == "result" else v.value if isinstance(v, JobStatus) else v)
            for k, v in fields.items()
        }
        assignments = ", ".join(f"{k}=?" for k in values)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(f"UPDATE jobs SET {assignments} WHERE id=?", (*values.values(), job_id))

        await self.db.call(run)

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

    async def expire(self, now: float) -> int:
        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "UPDATE jobs SET status='expired', result='{}' "
                "WHERE status='completed' AND expires IS NOT NULL AND expires < ?",
                (now,),
            )
            return cur.rowcount

        return await self.db.call(run)
