"""Keys made with the real `pixelpool keys` command, and JWTs, for the auth tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import jwt

from pixelpool.jobs.keys import KeyStore, keys_path

SECRET = "test-secret-" + "x" * 40
# The static keys of the shared `keyed_server`: each module presents its own.
CLIENT_KEY = "client-test-key-0123456789"
CHAIN_KEYS = ["key-one", "key-two"]
VIEWER_KEY = "status-page-viewer-key-0123456789"


def keys_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixelpool.cli", "keys", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def new_key(data_dir: Path, name: str, *extra: str) -> str:
    result = keys_cli(data_dir, "create", "--name", name, *extra)
    assert result.returncode == 0, result.stderr
    (key,) = result.stdout.split()  # the key alone on stdout
    return key


def stored_key(
    data_dir: Path, name: str, scopes: tuple[str, ...] = ("generate",), rate: float | None = None
) -> str:
    """A key written straight to the data dir's key store, as `pixelpool keys create` does,
    without its ~2 s process start: for fixtures (the command itself is tested)."""
    store = KeyStore(keys_path(data_dir))
    try:
        return store.create(name, scopes, rate_per_min=rate)[0]
    finally:
        store.close()


def token(
    sub: str,
    scopes: object = ("generate",),
    ttl: float = 600,
    secret: str = SECRET,
    **claims: object,
) -> str:
    body = {"sub": sub, "exp": int(time.time() + ttl), "scopes": scopes, **claims}
    if scopes is None:
        del body["scopes"]
    return jwt.encode(body, secret, algorithm="HS256")
