"""A full disk is recognised as one (real SQLite and real ENOSPC errors), and `DiskSpace`
refuses work under its threshold."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from pixelpool.jobs.diskspace import DiskSpace, StorageFull, is_disk_full


def _sqlite_full(path: Path) -> sqlite3.OperationalError:
    """The error SQLite raises when its file cannot grow (max_page_count stands in for
    the disk: SQLite reports both as SQLITE_FULL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x BLOB)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count={pages}")
    try:
        with pytest.raises(sqlite3.OperationalError) as caught:
            for _ in range(100):
                conn.execute("INSERT INTO t VALUES (?)", (os.urandom(8192),))
        return caught.value
    finally:
        conn.close()


def test_sqlite_full_is_a_full_disk(tmp_path: Path) -> None:
    exc = _sqlite_full(tmp_path / "full.db")
    assert is_disk_full(exc)
    try:
        raise RuntimeError("writing the job failed") from exc
    except RuntimeError as wrapped:
        assert is_disk_full(wrapped)  # found through __cause__


def test_enospc_is_a_full_disk() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    with pytest.raises(OSError) as caught, open("/dev/full", "wb", buffering=0) as f:
        f.write(b"x" * 4096)
    assert caught.value.errno == errno.ENOSPC
    assert is_disk_full(caught.value)


def test_other_errors_are_not(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    with pytest.raises(sqlite3.OperationalError) as caught:
        conn.execute("SELECT * FROM missing")
    assert not is_disk_full(caught.value)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("disk"))


def test_check_refuses_under_the_threshold(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    missing = tmp_path / "not" / "yet"  # the data dir may not exist yet: its parent counts
    DiskSpace([tmp_path, missing], min_free_bytes=0).check()
    DiskSpace([tmp_path], min_free_bytes=2**20).check()
    space = DiskSpace([tmp_path, missing], min_free_bytes=free + 2**40)
    assert space.low()
    with pytest.raises(StorageFull, match=r"storage is full: \d+ MB free .* MB needed"):
        space.check()
    assert not DiskSpace([tmp_path], min_free_bytes=0).low()
