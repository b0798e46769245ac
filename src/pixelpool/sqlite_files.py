"""The data dir's SQLite files as an operator meets them: a damaged one stops `serve` (and
`keys`) with a sentence that names the file and what to do, not with a traceback.

The job store holds the queue and every result's record, and the key store decides who
may call the server: neither is replaced behind the operator's back (an empty key store
would turn auth off). The model registry's fingerprint cache only saves re-hashing, so
a damaged one is moved aside and rebuilt (`open_or_rebuild`).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class UnreadableStore(RuntimeError):
    """A data-dir SQLite file that SQLite cannot read."""


def check_readable(path: Path, what: str, remedy: str) -> None:
    """Raise UnreadableStore when `path` exists and is not a SQLite database SQLite can
    read (its header and schema); a missing file is fine (it is created)."""
    if not path.exists():
        return
    try:
        with contextlib.closing(
            sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        ) as conn:
            conn.execute("SELECT name FROM sqlite_master").fetchall()
    except sqlite3.DatabaseError as exc:
        raise UnreadableStore(
            f"the {what} {path} is not a readable SQLite database ({exc}); {remedy}"
        ) from exc


def check_job_store(path: Path) -> None:
    check_readable(
        path, "job store",
        "it holds the queue and the results' records: restore it from a backup, or move "
        "it aside (with its -wal and -shm files) to start with an empty store",
    )  # fmt: skip


def check_key_store(path: Path) -> None:
    check_readable(
        path, "key store",
        "it holds the API keys: restore it from a backup, or move it aside and create "
        "keys again (pixelpool keys create)",
    )  # fmt: skip


def open_or_rebuild(path: Path, open_db: Callable[[Path], T]) -> T:
    """`open_db(path)`, or, when the file is damaged, the same on a new file after moving
    the damaged one (and its -wal, -shm) aside to `<name>.corrupt-<time>`. Only for caches."""
    try:
        return open_db(path)
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.warning("%s is damaged (%s): moved to %s and rebuilt", path, exc, aside.name)
        path.replace(aside)
        for suffix in ("-wal", "-shm"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                side.replace(aside.with_name(aside.name + suffix))
        return open_db(path)
