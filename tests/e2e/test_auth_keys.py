"""Keys made with `pixelpool keys`, JWTs, scopes, per-key rate limits, on every dialect.

One secured server for the whole module: keys are created with the real command
before and while it runs; JWTs are signed with the configured secret.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import openai
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from pixelpool.testing.server import ServerProcess

from .auth_helpers import SECRET, keys_cli, new_key, stored_key, token

JOB = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "seed": 3}
IMAGE = {"prompt": "a cat", "size": "64x64", "steps": 2}
SDK_IMAGE = {"prompt": "a cat", "size": "64x64", "extra_body": {"steps": 2}}


@dataclass
class Secured:
    url: str
    data_dir: Path
    alice: str
    bob: str
    ops: str
    limited: str

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def secured(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    data = tmp_path_factory.mktemp("data")
    keys = {
        "alice": stored_key(data, "alice"),
        "bob": stored_key(data, "bob"),
        "ops": stored_key(data, "ops", ("admin",)),
        "limited": stored_key(data, "limited", rate=3),
    }
    env = {"PIXELPOOL_AUTH__JWT_SECRET": SECRET}
    with ServerProcess(models_dir, data, env=env) as server:
        yield Secured(server.url, data, **keys)


def test_cli_lists_keys_without_secrets(secured: Secured) -> None:
    listing = keys_cli(secured.data_dir, "list")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
    assert rows["ops"][1] == "admin,generate" and rows["limited"][2] == "3"
    assert secured.alice not in listing.stdout and secured.alice[3:20] not in listing.stdout
    again = keys_cli(secured.data_dir, "create", "--name", "alice")
    assert again.returncode == 1 and "exists" in again.stderr
    assert keys_cli(secured.data_dir, "revoke", "nobody").returncode == 1


ROUTES = [
    ("GET", "/api/status", None), ("GET", "/api/model-list", None),
    ("POST", "/api/enqueue/generate", JOB), ("POST", "/api/models/load", {"model": "demo-sd"}),
    ("GET", "/api/keys", None), ("POST", "/v1/images/generations", IMAGE),
    ("GET", "/v1/models", None), ("GET", "/v1/models/demo-sd", None),
    ("POST", "/v1/infer", {"id": "1", "model_id": "demo-sd", "prompt": "a"}),
    ("POST", "/infer", {"id": "1", "model_id": "demo-sd", "prompt": "a"}),
    ("POST", "/generate", JOB), ("GET", "/models", None), ("GET", "/loras", None),
    ("POST", "/switch-model", {"model": "demo-sd"}),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_family_needs_a_key(
    secured: Secured, method: str, path: str, body: object
) -> None:
    for headers in ({}, secured.auth("wrong"), secured.auth(token("x")[:-4] + "abcd")):
        resp = httpx.request(method, secured.url + path, json=body, headers=headers)
        assert resp.status_code == 401, (path, resp.text)
        assert resp.headers["www-authenticate"] == "Bearer"
        err = resp.json()
        if path.startswith("/v1/"):
            assert err["error"]["code"] == "invalid_api_key"
        elif path.startswith("/api/") or path == "/infer":
            assert isinstance(err["error"], str)
        else:
            assert isinstance(err["detail"], str)


def test_liveness_and_service_info_stay_open(secured: Secured) -> None:
    for path in ("/health", "/ready", "/v1/health", "/", "/v1"):
        assert httpx.get(secured.url + path).status_code == 200, path


def test_a_key_created_while_running_works_and_revoking_stops_it(secured: Secured) -> None:
    late = new_key(secured.data_dir, "late")
    assert httpx.get(f"{secured.url}/api/status?apikey={late}").status_code == 200
    assert httpx.get(f"{secured.url}/v1/models", headers=secured.auth(late)).status_code == 200
    revoked = keys_cli(secured.data_dir, "revoke", "late")
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(f"{secured.url}/api/status?apikey={late}").status_code == 401
    client = openai.OpenAI(base_url=secured.url + "/v1", api_key=late, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_openai_sdk_wrong_key_and_jwt(secured: Secured) -> None:
    wrong = openai.OpenAI(base_url=secured.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.images.generate(**SDK_IMAGE)
    assert info.value.code == "invalid_api_key"
    good = openai.OpenAI(base_url=secured.url + "/v1", api_key=token("carol"), max_retries=0)
    assert len(good.images.generate(**SDK_IMAGE).data) == 1
    expired = openai.OpenAI(
        base_url=secured.url + "/v1", api_key=token("carol", ttl=-60), max_retries=0
    )
    with pytest.raises(openai.AuthenticationError, match="expired"):
        expired.models.list()


@pytest.mark.parametrize(
    "bad",
    [
        jwt.encode({"sub": "eve", "exp": int(time.time()) + 600}, "another-secret" * 4, "HS256"),
        jwt.encode({"sub": "eve"}, SECRET, "HS256"),  # no exp
        jwt.encode({"exp": int(time.time()) + 600}, SECRET, "HS256"),  # no sub
        jwt.encode({"sub": "eve", "exp": int(time.time()) + 600}, None, "none"),
        token("eve", scopes=5),
    ],
)
def test_bad_jwts_are_401(secured: Secured, bad: str) -> None:
    resp = httpx.get(f"{secured.url}/api/status", headers=secured.auth(bad))
    assert resp.status_code == 401, resp.text


def test_scopes_guard_admin_routes(secured: Secured) -> None:
    admin_calls = [("POST", "/api/rescan-models", None), ("GET", "/api/keys", None),
                   ("POST", "/api/models/load", {"model": "demo-sd"})]  # fmt: skip
    for who in (secured.alice, token("carol"), token("dan", scopes=None)):
        for method, path, body in admin_calls:
            resp = httpx.request(method, secured.url + path, json=body, headers=secured.auth(who))
            assert resp.status_code == 403 and "admin" in resp.json()["error"], path
    for who in (secured.ops, token("root", scopes="admin")):
        for method, path, body in admin_calls:
            resp = httpx.request(
                method, secured.url + path, json=body, headers=secured.auth(who), timeout=120
            )
            assert resp.status_code == 200, (path, resp.text)
    no_scope = secured.auth(token("guest", scopes=[]))
    assert httpx.get(f"{secured.url}/api/model-list", headers=no_scope).status_code == 200
    resp = httpx.post(f"{secured.url}/v1/images/generations", json=IMAGE, headers=no_scope)
    assert resp.status_code == 403 and resp.json()["error"]["param"] is None


def test_key_management_over_http(secured: Secured) -> None:
    admin = secured.auth(secured.ops)
    resp = httpx.post(f"{secured.url}/api/keys", json={"name": "web"}, headers=admin)
    assert resp.status_code == 201, resp.text
    key = resp.json()["key"]
    assert resp.json()["scopes"] == ["generate"]
    assert httpx.get(f"{secured.url}/api/status?apikey={key}").status_code == 200
    listed = httpx.get(f"{secured.url}/api/keys", headers=admin).json()
    assert "web" in {k["name"] for k in listed} and key not in json.dumps(listed)
    again = httpx.post(f"{secured.url}/api/keys", json={"name": "web"}, headers=admin)
    assert again.status_code == 409
    bad = httpx.post(f"{secured.url}/api/keys", json={"name": "w", "scopes": ["x"]}, headers=admin)
    assert bad.status_code == 422 and "scope" in bad.json()["error"]
    assert httpx.delete(f"{secured.url}/api/keys/web", headers=admin).status_code == 200
    assert httpx.get(f"{secured.url}/api/status?apikey={key}").status_code == 401
    assert httpx.delete(f"{secured.url}/api/keys/web", headers=admin).status_code == 404


def test_a_key_sees_only_its_own_jobs(secured: Secured) -> None:
    resp = httpx.post(
        f"{secured.url}/api/enqueue/generate", json=JOB, headers=secured.auth(secured.alice)
    )
    job_id = resp.json()["job_id"]
    own = httpx.get(f"{secured.url}/api/job/{job_id}", headers=secured.auth(secured.alice))
    assert own.status_code == 200
    for other in (secured.bob, token("alice"), token("carol")):  # a JWT sub is not a key name
        for path in (f"/api/job/{job_id}", f"/api/job/{job_id}/result"):
            resp = httpx.get(secured.url + path, headers=secured.auth(other))
            assert resp.status_code == 404, path
        resp = httpx.post(f"{secured.url}/api/job/{job_id}/cancel", headers=secured.auth(other))
        assert resp.status_code == 404


def test_rate_limit_is_per_key_with_retry_after(secured: Secured) -> None:
    headers = secured.auth(secured.limited)
    codes = [httpx.get(f"{secured.url}/api/status", headers=headers) for _ in range(4)]
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]
    limited = codes[3]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "rate limit" in limited.json()["error"]
    assert httpx.get(f"{secured.url}/api/status", headers=secured.auth(secured.bob)).is_success
    client = openai.OpenAI(base_url=secured.url + "/v1", api_key=secured.limited, max_retries=0)
    with pytest.raises(openai.RateLimitError) as info:
        client.models.list()
    assert info.value.code == "rate_limit_exceeded"
    assert int(info.value.response.headers["retry-after"]) >= 1


def test_websocket_handshake_checks_keys_and_jwts(secured: Secured) -> None:
    base = secured.url.replace("http://", "ws://") + "/api/ws"
    for good in (secured.alice, token("carol")):
        with connect(f"{base}?apikey={good}") as ws:
            ws.send(json.dumps({"type": "subscribe", "job_ids": []}))
    for bad in ("wrong", token("carol", ttl=-60)):
        with connect(f"{base}?apikey={bad}") as ws, pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=30)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4401  # after accept
