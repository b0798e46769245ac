"""A Ray runtime the server starts for itself (`cluster.address` empty) listens on
127.0.0.1 only: every GCS, raylet, object manager and worker port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytest.importorskip("ray")

from pixelpool.engine.ray_backend import LOOPBACK

from .ray_sockets import sockets

pytestmark = pytest.mark.ray


def test_a_runtime_the_server_starts_listens_on_loopback_only(tmp_path: Path) -> None:
    """`cluster.address` empty: the server starts its own Ray runtime, on 127.0.0.1,
    its node named after this machine."""
    script = (
        "import json, os, sys, ray\n"
        "from pixelpool.engine.ray_backend import connect\n"
        "connect('')\n"
        "node = ray.nodes()[0]\n"
        "seen = [os.getpid(), node['NodeManagerAddress'], node['NodeName']]\n"
        "print(json.dumps(seen), flush=True)\n"
        "sys.stdin.readline()\n"
    )
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1"}
    for name in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS"):  # as a fresh server
        env.pop(name, None)  # sees them (the cluster above sets them here)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdin is not None
        pid, address, name = json.loads(proc.stdout.readline())
        family = {pid} | {c.pid for c in psutil.Process(pid).children(recursive=True)}
        listening, elsewhere = sockets(family)
        assert address == LOOPBACK and len(listening) >= 3, listening
        assert name == socket.gethostname().split(".")[0]  # not the address
        assert set(listening) == {LOOPBACK} and not elsewhere, (listening, elsewhere)
        proc.stdin.close()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
