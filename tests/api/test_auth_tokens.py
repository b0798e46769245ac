"""Credential checks: JWT algorithms, secrets, expiry and claims; constant-time key
comparison; no secret in any error message. A real key store, settings and tokens."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import pytest

from pixelpool.api import auth
from pixelpool.api.auth import ALL_SCOPES, authenticate_token
from pixelpool.api.errors import ApiError
from pixelpool.config import AuthSettings, Settings
from pixelpool.jobs.keys import KeyStore

SECRET = "unit-secret-" + "s" * 40
CONFIG_KEYS = ["config-key-one", "config-key-two-is-longer"]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Any]:
    keys = KeyStore(tmp_path / "keys.db")
    settings = Settings(auth=AuthSettings(keys=CONFIG_KEYS, jwt_secret=SECRET))
    yield SimpleNamespace(settings=settings, keys=keys)
    keys.close()


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "carol", "exp": int(time.time()) + 600, **extra}


def refused(state: Any, token: str) -> str:
    with pytest.raises(ApiError) as info:
        authenticate_token(state, token)
    assert info.value.status == 401
    message = info.value.message
    assert token not in message and SECRET not in message
    return message


def test_a_valid_jwt_gives_its_subject_and_scopes(state: Any) -> None:
    principal = authenticate_token(state, jwt.encode(claims(scopes=["admin"]), SECRET, "HS256"))
    assert principal.name == "jwt:carol" and principal.scopes == {"admin", "generate"}


@pytest.mark.parametrize(
    ("token", "word"),
    [
        (jwt.encode(claims(scopes=["admin"]), None, "none"), "HS256"),
        (jwt.encode(claims(), "a-wrong-secret-" * 3, "HS256"), "signature"),
        (jwt.encode(claims(exp=int(time.time()) - 60), SECRET, "HS256"), "expired"),
        (jwt.encode({"sub": "carol"}, SECRET, "HS256"), "'exp'"),
        (jwt.encode({"exp": int(time.time()) + 600}, SECRET, "HS256"), "'sub'"),
        (jwt.encode(claims(sub=""), SECRET, "HS256"), "sub"),
        (jwt.encode(claims(nbf=int(time.time()) + 600), SECRET, "HS256"), "not valid yet"),
        ("a.b.c", "malformed"),
    ],
)
def test_bad_jwts_are_refused_without_echoing_anything(state: Any, token: str, word: str) -> None:
    assert word in refused(state, token)


@pytest.mark.filterwarnings("ignore:The HMAC key")
def test_hs256_signed_with_a_guessable_or_known_value_is_refused(state: Any) -> None:
    for key in ("x" * 32, "config-key-one"):
        refused(state, jwt.encode(claims(), key, "HS256"))


def test_config_keys_are_compared_as_digests_in_constant_time(
    state: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    principal = authenticate_token(state, "config-key-one")
    assert principal.scopes == ALL_SCOPES and principal.name == auth.key_name("config-key-one")
    # every configured key is compared (no early exit), always as equal-length digests
    assert len(calls) == len(CONFIG_KEYS)
    assert all(len(a) == len(b) == hashlib.sha256().digest_size for a, b in calls)
    calls.clear()
    refused(state, "config-key")  # a prefix of a key
    assert len(calls) == len(CONFIG_KEYS)


def test_stored_keys_work_until_revoked_and_are_kept_hashed(state: Any, tmp_path: Path) -> None:
    token, _ = state.keys.create("alice", ["generate"])
    assert authenticate_token(state, token).name == "alice"
    for stored in tmp_path.glob("keys.db*"):  # the database and its write-ahead log
        assert token.encode() not in stored.read_bytes()
    state.keys.revoke("alice")
    assert "API key" in refused(state, token)


def test_no_credential_is_401_with_a_bearer_challenge(state: Any) -> None:
    with pytest.raises(ApiError) as info:
        authenticate_token(state, None)
    assert info.value.status == 401 and info.value.headers == {"WWW-Authenticate": "Bearer"}
