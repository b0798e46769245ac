"""An unexpected exception: a 500 in the dialect's envelope, and the connection stays open.

A small app with the project's error handling, served by a real uvicorn on a
thread, read over one raw keep-alive connection.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI

from pixelpool.api.errors import add_error_format, install_error_handlers
from pixelpool.api.limits import BodyLimitMiddleware
from pixelpool.api.openai.errors import is_openai_path, openai_error
from pixelpool.testing.server import free_port

MAX_BODY = 1024


def _app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY)
    install_error_handlers(app)
    add_error_format(app, is_openai_path, openai_error)

    @app.get("/api/boom")
    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.post("/api/ok")
    @app.post("/v1/ok")
    async def ok() -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    config = uvicorn.Config(_app(), host="127.0.0.1", port=free_port(), log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    yield config.port
    server.should_exit = True
    thread.join(10)


def _ask(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], object]:
    conn.request(method, path, body=body)
    resp = conn.getresponse()
    data = json.loads(resp.read())
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def test_unexpected_error_is_a_500_in_each_dialect_on_a_kept_connection(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    status, headers, body = _ask(conn, "GET", "/api/boom")
    assert (status, body) == (500, {"error": "internal server error"})
    assert headers.get("connection") != "close"
    sock = conn.sock
    status, _, body = _ask(conn, "GET", "/v1/boom")
    assert status == 500
    assert body == {"error": {"message": "internal server error", "type": "server_error",
                              "param": None, "code": None}}  # fmt: skip
    status, _, body = _ask(conn, "POST", "/api/ok", b"{}")
    assert (status, body) == (200, {"ok": True})
    assert conn.sock is sock  # the same connection served all three
    conn.close()


def test_oversized_body_is_a_413_in_the_dialect_of_the_path(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    status, _, body = _ask(conn, "POST", "/v1/ok", b"x" * (MAX_BODY + 1))
    assert status == 413
    assert body["error"]["code"] == "request_too_large"  # type: ignore[index]
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    status, _, body = _ask(conn, "POST", "/api/ok", b"x" * (MAX_BODY + 1))
    assert (status, body) == (413, {"error": f"request body is larger than {MAX_BODY} bytes"})
    conn.close()
