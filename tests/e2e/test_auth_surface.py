"""The whole auth surface of a real server, route by route, listed from the app itself.

Every route of `create_app` (so a new route cannot escape) refuses a missing or
bad credential with 401 in its dialect's envelope (WebSocket: close 4401 after
accept); every admin route refuses a generate key with 403; no key reads,
cancels, follows or downloads another key's jobs (404); no secret reaches the log.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastapi.routing
import httpx
import jwt
import pytest
from fastapi.routing import APIWebSocketRoute
from starlette.routing import WebSocketRoute
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from pixelpool.api.app import create_app
from pixelpool.api.auth import ADMIN_PATHS, PUBLIC_PATHS
from pixelpool.api.openai.errors import is_openai_path
from pixelpool.api.selfhosted import PATHS as SELFHOSTED_PATHS
from pixelpool.api.vision.dialect import is_vision_path
from pixelpool.config import Settings
from pixelpool.jobs.keys import keys_exist
from pixelpool.testing.server import ServerProcess

from .auth_helpers import SECRET, stored_key, token

JOB = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "seed": 3}
IMAGE = {"prompt": "a cat", "size": "64x64", "steps": 2, "response_format": "url"}


def app_routes() -> list[tuple[str, str, bool]]:
    """(method, path template, is_websocket) of every route the app serves, included
    routers flattened (FastAPI's route contexts where it has them)."""
    app = create_app(Settings())
    flatten = getattr(fastapi.routing, "iter_route_contexts", list)
    routes = []
    for route in flatten(app.routes):
        if isinstance(getattr(route, "original_route", route), WebSocketRoute | APIWebSocketRoute):
            routes.append(("WS", route.path, True))
            continue
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                routes.append((method, route.path, False))
    return routes


ROUTES = app_routes()
PROTECTED = [r for r in ROUTES if r[1] not in PUBLIC_PATHS]
ADMIN = [r for r in ROUTES if r[1] in ADMIN_PATHS]


def concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", template)


@dataclass
class Secured:
    server: ServerProcess
    alice: str
    bob: str
    ops: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://")

    def get(self, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        return self.call("GET", path, key, **kw)

    def call(self, method: str, path: str, key: str | None = None, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.request(method, self.url + path, headers=headers, timeout=120, **kw)


@pytest.fixture(scope="module")
def secured(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    data = tmp_path_factory.mktemp("data")
    keys = {name: stored_key(data, name) for name in ("alice", "bob")}
    keys["ops"] = stored_key(data, "ops", ("admin",))
    env = {"PIXELPOOL_AUTH__JWT_SECRET": SECRET}
    with ServerProcess(models_dir, data, env=env) as server:
        yield Secured(server, **keys)


BAD_CREDENTIALS = {
    "none": {},
    "wrong key": {"Authorization": "Bearer pp_wrong"},
    "basic": {"Authorization": "Basic YWxpY2U6eA=="},
    "wrong secret": {"Authorization": f"Bearer {token('eve', secret='another-secret-' * 3)}"},
    "expired": {"Authorization": f"Bearer {token('eve', ttl=-60)}"},
    "alg none": {
        "Authorization": "Bearer "
        + jwt.encode({"sub": "eve", "exp": 2**31, "scopes": ["admin"]}, None, "none")
    },
}


def test_the_lists_match_the_app() -> None:
    templates = {path for _, path, _ in ROUTES}
    assert templates >= PUBLIC_PATHS
    assert templates >= ADMIN_PATHS and len(PROTECTED) > 30


@pytest.mark.parametrize(("method", "path", "websocket"), PROTECTED)
def test_every_route_refuses_a_missing_or_bad_credential(
    secured: Secured, method: str, path: str, websocket: bool
) -> None:
    target = concrete(path)
    for label, headers in BAD_CREDENTIALS.items():
        if websocket:
            with (
                connect(secured.ws + target, additional_headers=headers) as ws,
                pytest.raises(ConnectionClosed) as closed,
            ):
                ws.recv(timeout=30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401, label
            continue
        resp = httpx.request(method, secured.url + target, headers=headers, timeout=30)
        assert resp.status_code == 401, (label, resp.text)
        assert resp.headers["www-authenticate"] == "Bearer"
        body = resp.json()
        if is_openai_path(target):
            assert body["error"]["code"] == "invalid_api_key", body
        elif target in SELFHOSTED_PATHS or is_vision_path(target):
            assert isinstance(body["detail"], str), body
        else:
            assert isinstance(body["error"], str), body


def test_the_public_allow_list_answers_without_a_key(secured: Secured) -> None:
    for path in sorted(PUBLIC_PATHS):
        assert secured.get(path).status_code == 200, path


@pytest.mark.parametrize(("method", "path", "websocket"), ADMIN)
def test_generate_keys_get_403_on_every_admin_route(
    secured: Secured, method: str, path: str, websocket: bool
) -> None:
    for key in (secured.alice, token("carol"), token("dan", scopes=None)):
        resp = secured.call(method, concrete(path), key)
        body = resp.json()
        message = body["detail"] if is_vision_path(path) else body["error"]
        assert resp.status_code == 403 and "admin" in message, resp.text
    resp = secured.call(method, concrete(path), secured.ops)
    assert resp.status_code not in (401, 403), resp.text


def raw_request(url: str, head: str) -> bytes:
    """Send only a request head announcing a 10 MB body; return what comes back."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head.encode())
        return sock.recv(65536)


@pytest.mark.parametrize(
    ("path", "auth", "status"),
    [
        ("/api/enqueue/generate", "", b"401"),
        ("/v1/images/edits", "", b"401"),
        ("/generate", "Authorization: Bearer pp_nobody\r\n", b"401"),
        ("/api/models/load", "Authorization: Bearer {alice}\r\n", b"403"),
    ],
)
def test_refused_before_the_body_is_read(
    secured: Secured, path: str, auth: str, status: bytes
) -> None:
    """The body is never sent: an answer at all proves the check did not wait for it."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"{auth.format(alice=secured.alice)}Content-Length: {10 * 2**20}\r\n\r\n"
    )
    assert raw_request(secured.url, head).startswith(b"HTTP/1.1 " + status)


def test_no_key_sees_another_keys_jobs(secured: Secured) -> None:
    resp = secured.call("POST", "/api/generate", secured.alice, json=JOB)
    assert resp.status_code == 200, resp.text
    job_id = resp.headers["x-job-id"]
    assert secured.get(f"/api/job/{job_id}", secured.alice).status_code == 200
    for other in (secured.bob, secured.ops, token("alice")):  # a JWT sub is not a key name
        for path in (f"/api/job/{job_id}", f"/api/job/{job_id}/result",
                     f"/api/job/{job_id}/events"):  # fmt: skip
            resp = secured.get(path, other)
            assert resp.status_code == 404 and "not found" in resp.json()["error"], path
        resp = secured.call("POST", f"/api/job/{job_id}/cancel", other)
        assert resp.status_code == 404
    with connect(f"{secured.ws}/api/ws?apikey={secured.bob}") as ws:
        ws.send(json.dumps({"type": "subscribe", "job_ids": [job_id], "last_event_id": 0}))
        reply = next_reply(ws)
        assert reply == {"type": "error", "job_id": job_id, "error": "job not found"}
    own = {"Authorization": f"Bearer {secured.alice}"}
    with httpx.stream("GET", f"{secured.url}/api/job/{job_id}/events", headers=own) as events:
        assert "event: completed" in events.read().decode()


def test_no_key_downloads_another_keys_url_result(secured: Secured) -> None:
    resp = secured.call("POST", "/v1/images/generations", secured.alice, json=IMAGE)
    assert resp.status_code == 200, resp.text
    url = resp.json()["data"][0]["url"]
    assert httpx.get(url, headers={"Authorization": f"Bearer {secured.alice}"}).content[:4] == (
        b"\x89PNG"
    )
    assert httpx.get(f"{url}?apikey={secured.alice}").status_code == 200
    assert httpx.get(url).status_code == 401
    for other in (secured.bob, secured.ops):
        resp = httpx.get(url, headers={"Authorization": f"Bearer {other}"})
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_idempotency_keys_are_per_key(secured: Secured) -> None:
    idem = {"Idempotency-Key": "same-key"}
    first = httpx.post(f"{secured.url}/api/enqueue/generate?apikey={secured.alice}", json=JOB,
                       headers=idem).json()["job_id"]  # fmt: skip
    other = httpx.post(f"{secured.url}/api/enqueue/generate?apikey={secured.bob}", json=JOB,
                       headers=idem).json()["job_id"]  # fmt: skip
    assert first != other


def test_status_and_model_lists_show_no_pids_or_absolute_paths(
    secured: Secured, models_dir: Path
) -> None:
    assert secured.call("POST", "/api/generate", secured.bob, json=JOB).status_code == 200
    for key in (secured.alice, token("carol")):
        for path in ("/api/status", "/api/model-list", "/api/lora-list"):
            resp = secured.get(path, key)
            assert resp.status_code == 200 and str(models_dir) not in resp.text, path
        devices = secured.get("/api/status", key).json()["devices"]
        assert all("pid" not in d for d in devices)
        paths = {m["name"]: m["path"] for m in secured.get("/api/model-list", key).json()}
        assert paths["demo-sd"] == "sd15/demo-sd"
    admin = secured.get("/api/status", secured.ops).json()["devices"]
    assert all(isinstance(d["pid"], int) for d in admin)
    assert str(models_dir) in secured.get("/api/model-list", secured.ops).text


def test_switch_model_is_per_key_unless_admin(secured: Secured) -> None:
    def current(key: str | None) -> str:
        return secured.get("/models", key).json()["current"]

    server_default = current(secured.bob)
    other = "demo-sdxl" if server_default != "demo-sdxl" else "demo-sd"
    resp = secured.call("POST", "/switch-model", secured.alice, json={"model": other})
    assert resp.json() == {"status": "ok", "model": other, "applies_to": "key"}
    assert current(secured.alice) == other and current(secured.bob) == server_default
    assert secured.get("/health", secured.alice).json()["current_model"] == other
    assert secured.get("/health").json()["current_model"] == server_default
    generated = secured.call("POST", "/generate", secured.alice, json=JOB).json()
    assert generated["parameters"]["model"] == other
    resp = secured.call("POST", "/switch-model", secured.ops, json={"model": other})
    try:
        assert resp.json()["applies_to"] == "server"
        assert current(secured.bob) == other
    finally:
        secured.call("POST", "/switch-model", secured.ops, json={"model": server_default})


def next_reply(ws: ClientConnection) -> dict[str, Any]:
    """The next message that is not a periodic status update."""
    while True:
        message = json.loads(ws.recv(timeout=30))
        if message.get("type") != "status_update":
            return message


def test_websocket_answers_malformed_messages_and_stays_open(secured: Secured) -> None:
    with connect(f"{secured.ws}/api/ws?apikey={secured.alice}") as ws:
        for bad, word in [
            ("not json", "JSON"),
            ("[1, 2]", "JSON objects"),
            ('{"type": "subscribe", "job_ids": 5}', "job_ids"),
            ('{"type": "subscribe", "job_ids": [{"a": 1}]}', "job_ids"),
            ('{"type": "unsubscribe", "job_ids": "abc"}', "job_ids"),
            ('{"type": "subscribe", "job_ids": [], "last_event_id": "x"}', "last_event_id"),
        ]:
            ws.send(bad)
            reply = next_reply(ws)
            assert reply["type"] == "error" and word in reply["error"], (bad, reply)
        ws.send(json.dumps({"type": "ping"}))
        assert next_reply(ws) == {"type": "pong"}


def test_no_secret_in_the_log_or_in_error_messages(secured: Secured) -> None:
    carol = token("carol")
    forged = token("eve", secret="another-secret-" * 3)
    assert secured.get(f"/api/status?apikey={secured.alice}").status_code == 200
    assert secured.get(f"/api/status?apikey={carol}").status_code == 200
    assert secured.get("/api/status", secured.bob).status_code == 200
    assert secured.get(f"/api/job/nope?token={secured.ops}&key={secured.ops}").status_code == 401
    for bad in ("pp_wrong_but_secret", forged, carol[:-3] + "abc"):
        for resp in (secured.get(f"/api/status?apikey={bad}"), secured.get("/v1/models", bad)):
            assert resp.status_code == 401 and bad not in resp.text
            assert SECRET not in resp.text
    with connect(f"{secured.ws}/api/ws?apikey={secured.alice}") as ws:
        ws.send(json.dumps({"type": "ping"}))
        assert next_reply(ws) == {"type": "pong"}
    log = secured.server.log_path.read_text(errors="replace")
    assert "[redacted]" in log and "/api/status" in log  # the access log was written
    for secret in (secured.alice, secured.bob, secured.ops, carol, forged, SECRET,
                   "pp_wrong_but_secret"):  # fmt: skip
        assert secret not in log


@pytest.fixture
def keyless(server: ServerProcess) -> ServerProcess:
    """The shared server without keys (the test leaves it as it found it)."""
    return server


def test_a_keyless_server_refuses_key_management(keyless: ServerProcess) -> None:
    url = keyless.url
    create = {"name": "evil", "scopes": ["admin"]}
    for method, path, body in [("POST", "/api/keys", create), ("GET", "/api/keys", None),
                               ("DELETE", "/api/keys/evil", None)]:  # fmt: skip
        resp = httpx.request(method, url + path, json=body)
        assert resp.status_code == 403 and "pixelpool keys create" in resp.json()["error"]
    assert not keys_exist(keyless.data_dir)
    assert httpx.get(f"{url}/api/status").status_code == 200  # nobody was locked out
    with connect(url.replace("http://", "ws://") + "/api/ws") as ws:
        ws.send(json.dumps({"type": "ping"}))
        assert next_reply(ws) == {"type": "pong"}
