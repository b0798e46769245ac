"""SHA-256 fingerprints of models, cached by (path, size, mtime) in SQLite.

Hashing a multi-GB checkpoint takes seconds to minutes, so it runs in a
background thread and is never repeated for an unchanged file.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

from pixelpool.sqlite_files import open_or_rebuild

CHUNK = 4 * 1024 * 1024


def hash_file(path: Path, stop: threading.Event | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            if stop is not None and stop.is_set():
                return ""
            digest.update(chunk)
    return digest.hexdigest()


def hash_model(path: Path, stop: threading.Event | None = None) -> str:
    """A file's own SHA-256 (what model sites publish); for a directory, a hash of its files."""
    if path.is_file():
        return hash_file(path, stop)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(path).as_posix()}\0{hash_file(f, stop)}\n".encode())
    return digest.hexdigest()


def _open(db_path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS fingerprints ("
            " path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, sha256 TEXT)"
        )
    except BaseException:
        db.close()
        raise
    return db


class FingerprintCache:
    """Thread-safe (path, size, mtime) -> sha256 cache in one SQLite file."""

    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = open_or_rebuild(db_path, _open)  # only a cache: a damaged one is rebuilt
        self._lock = threading.Lock()

    def get(self, path: Path, size: int, mtime_ns: int) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT sha256 FROM fingerprints WHERE path=? AND size=? AND mtime_ns=?",
                (str(path), size, mtime_ns),
            ).fetchone()
        return row[0] if row else None

    def put(self, path: Path, size: int, mtime_ns: int, sha256: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?, ?)",
                (str(path), size, mtime_ns, sha256),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
