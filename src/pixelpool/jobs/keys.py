"""API keys: named, scoped, stored hashed in SQLite (`<data_dir>/keys.db`).

The `pixelpool keys` command and the server open the same file. The server
keeps the active keys in memory and reloads them when SQLite's `data_version`
says another connection committed, so keys created or revoked from the command
line take effect on the next request, without a restart.

Keys are 256-bit random tokens, so a plain SHA-256 is a sound way to store them
(no password stretching needed); the token itself is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCOPES = ("generate", "admin")
KEY_PREFIX = "pp_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    rate_per_min REAL,
    created REAL NOT NULL,
    revoked REAL
);
"""


class KeyStoreError(ValueError):
    """A key operation was refused (bad name, unknown scope); says why."""


class DuplicateKeyName(KeyStoreError):
    """Key names are never reused, so a new key cannot inherit a revoked key's jobs."""


@dataclass(frozen=True)
class KeyRecord:
    name: str
    scopes: frozenset[str]
    rate_per_min: float | None
    created: float
    revoked: float | None
    hint: str  # the first characters of the hash: tells keys apart without revealing them

    @property
    def active(self) -> bool:
        return self.revoked is None


def keys_path(data_dir: Path) -> Path:
    return data_dir / "keys.db"


def keys_exist(data_dir: Path) -> bool:
    """Whether `pixelpool keys create` ever made a key for this data dir (auth is then on)."""
    path = keys_path(data_dir)
    if not path.is_file():
        return False
    store = KeyStore(path)
    try:
        return store.has_keys()
    finally:
        store.close()


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)  # 256 bits


def normalise_scopes(scopes: list[str] | tuple[str, ...]) -> frozenset[str]:
    """Validated scopes; `admin` includes `generate`."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise KeyStoreError(f"unknown scope(s) {', '.join(unknown)}; valid: {', '.join(SCOPES)}")
    chosen = set(scopes) or {"generate"}
    if "admin" in chosen:
        chosen.add("generate")
    return frozenset(chosen)


def _record(row: tuple[str, str, str, float | None, float, float | None]) -> KeyRecord:
    name, digest, scopes, rate, created, revoked = row
    return KeyRecord(name, frozenset(json.loads(scopes)), rate, created, revoked, digest[:8])


class KeyStore:
    """Thread-safe access to the key table; `lookup` answers from memory."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._version: int | None = None
        self._active: dict[str, KeyRecord] = {}  # hash -> record
        self._any = False

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def create(
        self, name: str, scopes: list[str] | tuple[str, ...] = (), rate_per_min: float | None = None
    ) -> tuple[str, KeyRecord]:
        """A new key: returns the token (shown once) and its record. Names are never reused,
        so a new key cannot inherit the jobs of a revoked one."""
        if not NAME_PATTERN.match(name) or name.startswith("key-"):
            raise KeyStoreError(
                f"invalid key name {name!r}: 1-64 of A-Z a-z 0-9 _ . @ -, not starting with 'key-'"
            )
        if rate_per_min is not None and rate_per_min <= 0:
            raise KeyStoreError("rate limit must be positive")
        chosen = normalise_scopes(scopes)
        token = new_token()
        row = (name, hash_key(token), json.dumps(sorted(chosen)), rate_per_min, time.time(), None)
        with self._lock:
            try:
                self._conn.execute("INSERT INTO api_keys VALUES (?,?,?,?,?,?)", row)
            except sqlite3.IntegrityError as exc:
                raise DuplicateKeyName(
                    f"a key named {name!r} exists (names are never reused)"
                ) from exc
            self._version = None  # our own writes do not bump data_version
        return token, _record(row)

    def all(self) -> list[KeyRecord]:
        with self._lock:
            rows = self._conn.execute("SELECT * FROM api_keys ORDER BY created").fetchall()
        return [_record(r) for r in rows]

    def revoke(self, name: str) -> bool:
        """True if an active key of that name was revoked."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE api_keys SET revoked=? WHERE name=? AND revoked IS NULL",
                (time.time(), name),
            )
            self._version = None
        return cur.rowcount > 0

    def lookup(self, token: str) -> KeyRecord | None:
        """The active key for this token, if any. Called on the event loop: one
        `PRAGMA data_version` (shared memory, no disk read) and a dict lookup; the
        small table is re-read only after another connection committed a change.

        The lookup is by SHA-256 digest, never by the token: its timing can depend
        only on the digest, which tells nothing about a key (preimage resistance),
        so it is as safe as hmac.compare_digest over every stored hash."""
        with self._lock:
            self._refresh()
            return self._active.get(hash_key(token))

    def has_keys(self) -> bool:
        """Whether any key was ever created: then auth stays on, even if all are revoked."""
        with self._lock:
            self._refresh()
            return self._any

    def _refresh(self) -> None:
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._version:
            return
        rows = self._conn.execute("SELECT * FROM api_keys").fetchall()
        self._active = {r[1]: _record(r) for r in rows if r[5] is None}
        self._any = bool(rows)
        self._version = version
