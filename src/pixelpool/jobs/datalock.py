"""One server per data dir: an OS file lock on `<data_dir>/pixelpool.lock`.

Two servers on one job store would both run its queued jobs, and a cancel sent to
one would not reach a job running in the other. The lock is `flock`-based, so the
kernel drops it when the holder exits in any way (kill -9 included): no stale lock
files to clean up. The file holds the holder's pid, for the refusal message only.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "pixelpool.lock"

# Locks this process holds, by resolved data dir: `flock` is per open file, so a second
# open in the same process would conflict with the first (the CLI takes the lock before
# the app's lifespan asks for it again).
_held: dict[Path, DataDirLock] = {}


class DataDirBusy(RuntimeError):
    """Another live process holds the data dir."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        holder = f"process {pid}" if pid else "another process"
        super().__init__(
            f"data dir {data_dir} is in use by {holder} (another pixelpool server?); "
            "stop it, or start this one with another --data-dir"
        )
        self.data_dir = data_dir
        self.pid = pid


class DataDirLock:
    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self._fd = fd
        self._users = 1

    def release(self) -> None:
        self._users -= 1
        if self._users > 0 or self._fd < 0:
            return
        _held.pop(self.data_dir, None)
        os.close(self._fd)  # closing the file drops the flock
        self._fd = -1


def _holder_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def acquire(data_dir: Path) -> DataDirLock:
    """Take the data dir for this process, or raise DataDirBusy naming the holder's pid."""
    data_dir = data_dir.resolve()
    held = _held.get(data_dir)
    if held is not None:
        held._users += 1
        return held
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirBusy(data_dir, _holder_pid(path)) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    lock = DataDirLock(data_dir, fd)
    _held[data_dir] = lock
    return lock
