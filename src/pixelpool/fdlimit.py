"""Enough open files for every connection: the soft limit raised to the hard one.

Each HTTP connection, WebSocket and event stream holds a file descriptor, and so do the
job store, the artifacts being written and the worker pipes. Many systems start a
process with a soft limit of 1024 while the hard limit is far higher; past the soft
limit the server accepts no connection and opens no file, silently: the kernel queues
the connection and the client sees it dropped (measured: with a soft limit of 256, the
228th WebSocket failed and a generate request was cut off, with nothing in the log).
Raising the soft limit up to the hard one needs no privilege; servers do it at start.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

CAP = 1 << 20  # when the hard limit is unlimited: plenty, and a size the kernel accepts
LOW = 4096  # under this, say how many connections the server can hold


def raise_open_files_limit(cap: int = CAP) -> tuple[int, int]:
    """Set the soft RLIMIT_NOFILE to the hard one (at most `cap`); (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    after = soft
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            after = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d: %s", soft, exc)
    if after < LOW:
        log.warning(
            "open files limit %d (hard %d): the server holds at most about that many "
            "connections at once; raise it (ulimit -n, LimitNOFILE=)", after, hard,
        )  # fmt: skip
    elif after > soft:
        log.info("open files limit raised from %d to %d", soft, after)
    return soft, after
