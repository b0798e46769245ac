"""Give memory back once a burst of work has drained.

Under load the server's own memory is bounded (event logs leave memory shortly after
their job ends, recent results are capped in bytes), but glibc keeps the freed heap
of its per-thread arenas: encoding runs in a thread pool, so after a burst the
process RSS stays near its peak. When no job is queued or running any more, the
freed memory of finished jobs is dropped and `malloc_trim` hands the free pages
back to the OS (measured in docs/benchmarks.md, "Load").
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

CHECK_S = 1.0


def _libc_trim() -> Callable[[], None] | None:
    """glibc's malloc_trim(0), or None where there is no glibc (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


def freeze_startup_objects() -> None:
    """Move what the imports and the app's construction made (~100k objects: modules,
    classes, routes) out of the garbage collector's reach, after one collection.

    They live as long as the process, yet every full collection walked them all: ~30
    ms holding the GIL, so the event loop and every request stood still, at each drain
    (`release_memory`) and at each of Python's own full collections under load. After
    this a full collection walks only what was made since (measured in
    docs/benchmarks.md). For the server process only: a test process that builds many
    apps would keep each one's cycles forever.
    """
    gc.collect()
    gc.freeze()


def release_memory(trim: Callable[[], None] | None) -> None:
    """Blocking (run it off the loop): collect cycles, then return free heap pages."""
    gc.collect()
    if trim is not None:
        trim()


async def trim_when_idle(
    busy: Callable[[], bool], on_idle: Callable[[], None], settle_s: float = 0.0
) -> None:
    """Each time work drains (`busy()` goes from true to false): `on_idle()`, then
    release memory; and once more `settle_s` later if it stayed idle, for what memory
    keeps of the last jobs for a while after they end (their events, recent results).
    Runs until cancelled."""
    trim = _libc_trim()
    was_busy = False
    again_at: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(CHECK_S)
        now_busy = busy()
        drained = was_busy and not now_busy
        settled = not now_busy and again_at is not None and loop.time() >= again_at
        if drained or settled:
            again_at = loop.time() + settle_s if drained and settle_s > 0 else None
            try:
                on_idle()
                await asyncio.to_thread(release_memory, trim)
            except Exception:
                log.exception("releasing memory after a drain failed")
        if now_busy:
            again_at = None
        was_busy = now_busy
