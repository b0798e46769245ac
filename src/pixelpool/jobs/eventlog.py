"""The durable half of the event log: job events in the `events` table of the job store.

Events are what a reconnecting client replays, so they outlive a restart. Every step
of every job is an event, so writes are never one transaction each and never awaited
by the publisher: `append` only buffers; a background task hands the buffer to the
store's thread every `interval_s` (sooner once `batch_max` events wait) and writes it
in one transaction. `close` writes what is left. After a crash (kill -9) the last
unflushed batch, at most ~`interval_s` of events, is lost; the jobs they belong to
run again after the restart and publish new events.

Previews (base64 PNGs: small from the latent approximation, full size from TAESD)
are written too, but only the latest preview of each job is kept in the table, and
none bigger than `PREVIEW_MAX_CHARS`: a reconnecting client needs the current picture,
not the film (the next live preview follows soon), and the table stays small however
often and however big previews are asked for.

Retention (`purge`): a job's events are deleted `retain_s` after it finishes, or when
the job itself expires (`storage.ttl_s`), whichever comes first; events of jobs the
store no longer knows go too, and no job keeps more than `per_job` events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from typing import Any

from pixelpool.jobs.diskspace import MESSAGE as STORAGE_FULL
from pixelpool.jobs.diskspace import is_disk_full
from pixelpool.jobs.store import Database

log = logging.getLogger(__name__)

Event = dict[str, Any]

PREVIEW_MAX_CHARS = 512 * 1024
FULL_LOG_EVERY_S = 60.0  # a full disk fails every flush: say so once a minute
INSERT = "INSERT OR IGNORE INTO events (id, job_id, kind, payload, created) VALUES (?,?,?,?,?)"
# Jobs whose events may go: finished long enough ago, expired, or unknown to the store.
STALE_JOBS = """
SELECT e.job_id FROM (SELECT DISTINCT job_id FROM events) AS e
LEFT JOIN jobs AS j ON j.id = e.job_id
WHERE j.id IS NULL OR j.finished < ? OR j.expires < ?
"""


def _write(conn: sqlite3.Connection, batch: list[Event]) -> None:
    """On the store's thread: one transaction for the whole batch."""
    now = time.time()
    latest_preview: dict[str, int] = {}
    for event in batch:
        if event.get("type") == "preview":
            latest_preview[event["job_id"]] = event["id"]

    def kept(e: Event) -> bool:
        if e.get("type") != "preview":
            return True
        return (
            latest_preview[e["job_id"]] == e["id"] and len(e.get("image", "")) <= PREVIEW_MAX_CHARS
        )

    rows = [(e["id"], e["job_id"], e.get("type", ""), json.dumps(e), now) for e in batch if kept(e)]
    conn.execute("BEGIN")
    try:
        conn.executemany(INSERT, rows)
        conn.executemany(
            "DELETE FROM events WHERE job_id=? AND kind='preview' AND id<?",
            list(latest_preview.items()),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite ends it itself on some errors (a full disk)
            conn.execute("ROLLBACK")
        raise


def _read(conn: sqlite3.Connection, job_id: str, after: int) -> list[Event]:
    rows = conn.execute(
        "SELECT payload FROM events WHERE job_id=? AND id>? ORDER BY id", (job_id, after)
    ).fetchall()
    return [json.loads(r[0]) for r in rows]


def _high_water(conn: sqlite3.Connection) -> int:
    """The largest id ever written, also after its row was purged (AUTOINCREMENT's
    sqlite_sequence keeps it)."""
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
    top = conn.execute("SELECT MAX(id) FROM events").fetchone()[0]
    return max(seq[0] if seq else 0, top or 0)


def _purge(conn: sqlite3.Connection, now: float, retain_s: float, per_job: int) -> int:
    conn.execute("BEGIN")
    try:
        cur = conn.execute(
            f"DELETE FROM events WHERE job_id IN ({STALE_JOBS})", (now - retain_s, now)
        )
        deleted = cur.rowcount
        crowded = conn.execute(
            "SELECT job_id FROM events GROUP BY job_id HAVING COUNT(*) > ?", (per_job,)
        ).fetchall()
        for (job_id,) in crowded:
            cur = conn.execute(
                "DELETE FROM events WHERE job_id=? AND id < (SELECT id FROM events "
                "WHERE job_id=? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (job_id, job_id, per_job - 1),
            )
            deleted += cur.rowcount
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite ends it itself on some errors (a full disk)
            conn.execute("ROLLBACK")
        raise
    return deleted


class EventLog:
    """Buffered, batched writes of job events to SQLite, and reads for replay."""

    def __init__(
        self,
        db: Database,
        interval_s: float = 0.05,
        batch_max: int = 500,
        retain_s: float = 900.0,
        per_job: int = 2000,
    ) -> None:
        self.db = db
        self.retain_s = retain_s
        self.per_job = per_job
        self._interval_s = interval_s
        self._batch_max = batch_max
        self._pending: list[Event] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unstored = 0  # events lost to a full disk since that was last logged
        self._full_logged = float("-inf")

    async def high_water(self) -> int:
        """The largest event id the store has seen (0 when none): new ids start above it."""
        return await self.db.call(_high_water)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def append(self, event: Event) -> None:
        """Buffer one event (with `id` and `job_id`); never blocks, never awaits."""
        self._pending.append(event)
        if len(self._pending) >= self._batch_max:
            self._full.set()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._pending) < self._batch_max:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self._interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Write everything buffered so far, in one transaction on the store's thread."""
        batch, self._pending = self._pending, []
        self._wake.clear()
        self._full.clear()
        if not batch:
            return
        # Queued on the (single, FIFO) store thread right now, so a read queued later
        # sees this batch; shielded, so a cancelled writer task still writes it.
        # Durable: while another process holds the store's write lock, it waits its turn.
        written = self.db.submit(lambda conn: _write(conn, batch), durable=True)
        # Written: let go of the events now. asyncio's futures and callbacks form reference
        # cycles that keep this closure (and every preview image in it) alive until a full
        # GC pass, which under load comes rarely: the batch would pile up as garbage.
        written.add_done_callback(lambda _: batch.clear())
        count = len(batch)
        try:
            await asyncio.shield(written)
        except Exception as exc:
            # Live subscribers had them; a replay from the store will not.
            lost = "%d job events were not stored (%s); a replay will miss them"
            if not is_disk_full(exc):
                log.exception(lost, count, exc)
                return
            self._unstored += count  # every flush meets it until space is freed: once a minute
            if time.monotonic() - self._full_logged >= FULL_LOG_EVERY_S:
                log.error(lost, self._unstored, f"{STORAGE_FULL}: {exc}")
                self._unstored, self._full_logged = 0, time.monotonic()

    async def history(self, job_id: str, after: int | None = None) -> list[Event]:
        """The job's stored events after `after`, plus those still waiting to be written."""
        floor = -1 if after is None else after
        waiting = [e for e in self._pending if e["job_id"] == job_id and e["id"] > floor]
        stored = await self.db.call(lambda conn: _read(conn, job_id, floor))
        seen = {e["id"] for e in stored}
        return stored + [e for e in waiting if e["id"] not in seen]

    async def purge(self, now: float | None = None) -> int:
        """Apply retention (see the module docstring); returns how many rows went."""
        when = time.time() if now is None else now
        return await self.db.call(lambda conn: _purge(conn, when, self.retain_s, self.per_job))

    async def close(self) -> None:
        """Stop the writer and write what is left (at shutdown, before the store closes)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
