"""Artifacts: job inputs and outputs as files, content-addressed, with a TTL.

Files are stored once per content hash; each reference gets its own unguessable
128-bit id, an owner and an expiry, so outputs can feed later jobs by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import sqlite3
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

from pixelpool.jobs.store import Database

ORPHAN_GRACE_S = 3600
RECENT_BYTES = 64 * 1024 * 1024
RECENT_S = 60.0  # how long a new result stays in memory (most are fetched within seconds)


@dataclass(frozen=True)
class Artifact:
    id: str
    sha256: str
    media_type: str
    size: int
    owner: str | None
    expires: float
    path: Path
    data: bytes | None = None  # the bytes, when still in the recent-artifacts memory


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def new_artifact_id() -> str:
    return secrets.token_hex(16)  # 128 bits


class ArtifactStore:
    def __init__(
        self, db: Database, root: Path, ttl_s: int, memory_bytes: int = RECENT_BYTES
    ) -> None:
        self.db = db
        self.root = root
        self.ttl_s = ttl_s
        root.mkdir(parents=True, exist_ok=True)
        # Results are usually fetched right after they are written (a sync request, a
        # poller): keep the newest in memory so that costs no database or disk read.
        self._recent: OrderedDict[str, tuple[float, Artifact]] = OrderedDict()
        self._recent_bytes = 0
        self._recent_limit = memory_bytes

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def _write(self, data: bytes) -> str:
        """Blocking: hash and write the file if it is not there yet.

        Written to a temporary name, flushed to disk, then renamed: a file under its
        final name is always whole, also after a crash or a full disk (whose error is
        raised, and the job fails with it; the partial temporary file is removed)."""
        sha = hashlib.sha256(data).hexdigest()
        path = self._path(sha)
        if path.exists():
            return sha
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{sha}.{secrets.token_hex(4)}.tmp")
        try:
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)
        return sha

    async def put(self, data: bytes, media_type: str, owner: str | None) -> Artifact:
        sha = await asyncio.to_thread(self._write, data)
        art = Artifact(
            id=new_artifact_id(),
            sha256=sha,
            media_type=media_type,
            size=len(data),
            owner=owner,
            expires=time.time() + self.ttl_s,
            path=self._path(sha),
        )

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO artifacts VALUES (?,?,?,?,?,?,?)",
                (art.id, sha, media_type, art.size, owner, time.time(), art.expires),
            )

        await self.db.call(run, durable=True)  # the result of an accepted job
        self._remember(replace(art, data=data))
        return art

    def _remember(self, art: Artifact) -> None:
        self._recent[art.id] = (time.monotonic(), art)
        self._recent_bytes += art.size
        self.prune()

    def prune(self) -> None:
        """Forget the oldest recent results: over the byte limit, or older than RECENT_S."""
        cutoff = time.monotonic() - RECENT_S
        while self._recent:
            added, oldest = next(iter(self._recent.values()))
            if self._recent_bytes <= self._recent_limit and added >= cutoff:
                break
            self._recent.popitem(last=False)
            self._recent_bytes -= oldest.size

    async def get(self, artifact_id: str) -> Artifact | None:
        entry = self._recent.get(artifact_id)
        if entry is not None and entry[1].expires >= time.time():
            return entry[1]

        def run(conn: sqlite3.Connection) -> tuple[str, str, int, str | None, float] | None:
            return conn.execute(
                "SELECT sha256, media_type, size, owner, expires FROM artifacts WHERE id=?",
                (artifact_id,),
            ).fetchone()

        row = await self.db.call(run)
        if row is None or row[4] < time.time():
            return None
        sha, media_type, size, owner, expires = row
        path = self._path(sha)
        if not path.exists():
            return None
        return Artifact(artifact_id, sha, media_type, size, owner, expires, path)

    async def read(self, art: Artifact) -> bytes | None:
        """The artifact's bytes: from memory while recent, else from its file off the event
        loop; None when the file has gone since `get` (expired and purged meanwhile)."""
        if art.data is not None:
            return art.data
        try:
            return await asyncio.to_thread(art.path.read_bytes)
        except FileNotFoundError:
            return None

    async def purge_expired(self) -> int:
        """Drop expired references, then files no reference points to any more."""
        now = time.time()

        def run(conn: sqlite3.Connection) -> list[str]:
            conn.execute("DELETE FROM artifacts WHERE expires < ?", (now,))
            live = {r[0] for r in conn.execute("SELECT DISTINCT sha256 FROM artifacts")}
            return [p for p in self._all_hashes() if p not in live]

        orphans = await self.db.call(run)
        for sha in orphans:
            self._path(sha).unlink(missing_ok=True)
        await asyncio.to_thread(self._purge_partial)
        return len(orphans)

    def _purge_partial(self) -> None:
        """Temporary files a crash left half-written (never served: see `_write`)."""
        cutoff = time.time() - ORPHAN_GRACE_S
        for p in self.root.glob("*/*.tmp"):
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()

    def _all_hashes(self) -> list[str]:
        """Stored files old enough that no put() can still be about to reference them."""
        cutoff = time.time() - ORPHAN_GRACE_S
        return [
            p.name
            for p in self.root.glob("*/*")
            if "." not in p.name and p.is_file() and p.stat().st_mtime < cutoff
        ]
