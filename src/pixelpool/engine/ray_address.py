"""Is the Ray cluster the server is pointed at there? Asked before the server starts:
joining an address where nothing listens, Ray retries for minutes (every 40 s it logs
"Timed out while waiting for GCS"), so a typo in `cluster.ray_address` looked like a
server that hangs at start. Plain sockets: no `import ray` for the answer."""

from __future__ import annotations

import os
import socket

TIMEOUT_S = 5.0
RESOLVED_BY_RAY = ("", "auto", "local")  # Ray finds (or starts) these itself, and fails fast


def unreachable(address: str | None, timeout_s: float = TIMEOUT_S) -> str | None:
    """Why the cluster at `address` ("host:6379", "ray://host:10001"; empty: RAY_ADDRESS)
    cannot be reached, in a sentence; None when its port accepts a connection."""
    address = (address or os.environ.get("RAY_ADDRESS", "")).strip()
    if address in RESOLVED_BY_RAY:
        return None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # an IPv6 address: [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"cluster.ray_address {address!r} is not host:port, ray://host:port, auto or empty"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        return (
            f"cannot reach the Ray cluster at {address} (cluster.ray_address): {reason}; "
            f"is its head running (ray start --head --port={port}), and is the address "
            "right? (docs/deploy.md)"
        )
