"""Damaged data-dir SQLite files: the stores that matter are named with what to do, the
registry's cache is moved aside and rebuilt."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pixelpool.jobs.keys import KeyStore
from pixelpool.registry.fingerprint import FingerprintCache
from pixelpool.sqlite_files import UnreadableStore, check_job_store, check_key_store


def _garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(range(256)) * 40)
    return path


def test_a_damaged_store_is_named_with_what_to_do(tmp_path: Path) -> None:
    jobs = _garbage(tmp_path / "odd ?#% dir" / "jobs.db")
    with pytest.raises(UnreadableStore) as caught:
        check_job_store(jobs)
    assert str(caught.value) == (
        f"the job store {jobs} is not a readable SQLite database (file is not a database); "
        "it holds the queue and the results' records: restore it from a backup, or move it "
        "aside (with its -wal and -shm files) to start with an empty store"
    )
    with pytest.raises(UnreadableStore, match=r"key store .* \(pixelpool keys create\)"):
        check_key_store(_garbage(tmp_path / "keys.db"))
    assert jobs.read_bytes() == bytes(range(256)) * 40  # left as it was


def test_sound_or_missing_stores_pass(tmp_path: Path) -> None:
    check_job_store(tmp_path / "missing.db")
    KeyStore(tmp_path / "keys.db").close()
    check_key_store(tmp_path / "keys.db")
    (tmp_path / "empty.db").touch()  # SQLite's empty database
    check_job_store(tmp_path / "empty.db")


def test_a_damaged_fingerprint_cache_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    path = _garbage(tmp_path / "registry.db")
    cache = FingerprintCache(path)
    cache.put(Path("/m"), 1, 2, "abc")
    assert cache.get(Path("/m"), 1, 2) == "abc"
    cache.close()
    (aside,) = tmp_path.glob("registry.db.corrupt-*")
    assert aside.read_bytes() == bytes(range(256)) * 40  # kept for a post-mortem
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT sha256 FROM fingerprints").fetchall() == [("abc",)]
