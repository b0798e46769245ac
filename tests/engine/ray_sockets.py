"""Which addresses Ray's processes listen on and talk to (the loopback-only checks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil

from pixelpool.engine.ray_backend import is_loopback


def ray_pids() -> set[int]:
    return {
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any("ray" in Path(part).name for part in p.info["cmdline"] or [])
    }


def sockets(pids: set[int]) -> tuple[list[str], list[tuple[Any, Any]]]:
    """The addresses `pids` listen on (IPv4-mapped ones as IPv4), and their connections
    with an end off loopback."""
    listening, elsewhere = [], []
    for c in psutil.net_connections("inet"):
        if c.pid not in pids:
            continue
        if c.status == psutil.CONN_LISTEN:
            listening.append(c.laddr.ip.removeprefix("::ffff:"))
        elif not all(is_loopback(a.ip) for a in (c.laddr, c.raddr) if a):
            elsewhere.append((c.laddr, c.raddr))
    return listening, elsewhere
