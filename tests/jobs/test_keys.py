"""The key store: hashed at rest, names never reused, changes seen across connections."""

import sqlite3
from pathlib import Path

import pytest

from pixelpool.jobs.keys import (
    DuplicateKeyName,
    KeyStore,
    KeyStoreError,
    hash_key,
    keys_exist,
    keys_path,
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return keys_path(tmp_path)


def test_create_lookup_and_hashing(path: Path) -> None:
    store = KeyStore(path)
    token, record = store.create("alice")
    assert token.startswith("pp_") and len(token) > 40
    assert record.scopes == {"generate"} and record.active
    assert store.lookup(token) == record
    assert store.lookup(token + "x") is None and store.lookup("") is None
    store.close()
    raw = b"".join(p.read_bytes() for p in path.parent.glob("keys.db*"))
    assert token.encode() not in raw  # only the hash is kept
    rows = sqlite3.connect(path).execute("SELECT hash FROM api_keys").fetchall()
    assert rows == [(hash_key(token),)]


def test_scopes_admin_includes_generate_and_unknown_is_refused(path: Path) -> None:
    store = KeyStore(path)
    _, admin = store.create("ops", ["admin"], rate_per_min=30)
    assert admin.scopes == {"admin", "generate"} and admin.rate_per_min == 30
    with pytest.raises(KeyStoreError, match="unknown scope"):
        store.create("x", ["root"])
    for bad in ("", "has space", "a:b", "key-abc", "x" * 65):
        with pytest.raises(KeyStoreError, match="invalid key name"):
            store.create(bad)
    with pytest.raises(KeyStoreError, match="positive"):
        store.create("y", rate_per_min=0)


def test_revoked_names_are_never_reused(path: Path) -> None:
    store = KeyStore(path)
    token, _ = store.create("alice")
    assert store.revoke("alice") and not store.revoke("alice") and not store.revoke("nobody")
    assert store.lookup(token) is None
    with pytest.raises(DuplicateKeyName):
        store.create("alice")
    assert store.has_keys()  # auth stays on with every key revoked
    assert [(r.name, r.active) for r in store.all()] == [("alice", False)]


def test_another_connection_sees_creates_and_revokes_at_once(path: Path) -> None:
    server, cli = KeyStore(path), KeyStore(path)
    assert not server.has_keys()
    token, _ = cli.create("bob")
    assert server.has_keys() and server.lookup(token) is not None
    cli.revoke("bob")
    assert server.lookup(token) is None


def test_keys_exist_for_the_serve_check(tmp_path: Path) -> None:
    assert not keys_exist(tmp_path)
    KeyStore(keys_path(tmp_path)).create("a")
    assert keys_exist(tmp_path)
