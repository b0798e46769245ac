"""The data dir's disk: refuse new work before it is full, and name a full disk when met.

Every accepted job writes its row to the job store and its inputs and results to the
artifact folder. On a full disk SQLite raises "database or disk is full" and file
writes ENOSPC: a job accepted then fails at once (a 500 before this module) or, worse,
after its run, with the GPU time spent on a result that cannot be kept. So new jobs
are refused with 503 (and `/ready` fails) while the free space of the disks holding
the data dir and the job store is under `storage.min_free_mb`; and a write that still
meets a full disk (the space went between the check and the write) is reported as
exactly that, not as an internal error.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
from collections.abc import Iterable
from pathlib import Path

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
RETRY_AFTER_S = 60
MESSAGE = "the server's storage is full"


class StorageFull(Exception):
    """New work refused: too little free space where jobs are stored."""

    retry_after_s = RETRY_AFTER_S


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is a full disk (or quota)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in FULL_ERRNOS:
            return True
        if isinstance(current, sqlite3.OperationalError) and (
            getattr(current, "sqlite_errorname", "") == "SQLITE_FULL"
            or "disk is full" in str(current)
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def _existing(path: Path) -> Path:
    """The path, or its nearest existing parent (the data dir may not exist yet)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


class DiskSpace:
    """Free space on the disks that hold `paths`; `check` refuses work when it is low."""

    def __init__(self, paths: Iterable[Path], min_free_bytes: int) -> None:
        self.paths = tuple(paths)
        self.min_free_bytes = min_free_bytes

    def free_bytes(self) -> int:
        """The least free space among the paths' disks (one statvfs each: microseconds)."""
        return min(shutil.disk_usage(_existing(p)).free for p in self.paths)

    def low(self, free: int | None = None) -> bool:
        """Under the threshold; `free`: a reading already taken (else one is taken)."""
        if self.min_free_bytes <= 0:
            return False
        return (self.free_bytes() if free is None else free) < self.min_free_bytes

    def check(self) -> None:
        if self.min_free_bytes <= 0:
            return
        free = self.free_bytes()
        if self.low(free):
            raise StorageFull(
                f"{MESSAGE}: {free // 2**20} MB free where jobs are stored, "
                f"{self.min_free_bytes // 2**20} MB needed to accept new work; retry later"
            )
