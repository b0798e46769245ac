"""`Client`: the operations (operations.py) over a blocking `httpx.Client`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any, Self

import httpx

from pixelpool.client.errors import ConnectionFailed
from pixelpool.client.flow import (
    Await,
    Emit,
    Flow,
    Open,
    ReadLine,
    Response,
    Send,
    Sleep,
    SyncDriver,
    T,
)
from pixelpool.client.operations import Operations

DEFAULT_SERVER = "http://127.0.0.1:8800"
# Reads wait for whole jobs (the sync routes) and event streams (a keepalive every 15 s).
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
_DONE = object()


def client_args(server: str | None, key: str | None, timeout: Any, **kwargs: Any) -> dict:
    """httpx arguments from the server URL and API key (else PIXELPOOL_SERVER and
    PIXELPOOL_KEY, else the local default server without a key)."""
    key = key if key is not None else os.environ.get("PIXELPOOL_KEY") or None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    base = server or os.environ.get("PIXELPOOL_SERVER") or DEFAULT_SERVER
    return {"base_url": base.rstrip("/"), "headers": headers, "timeout": timeout, **kwargs}


class Client(Operations, SyncDriver):
    """The native API, blocking. `with Client("http://host:8800", key=...) as c:
    c.generate("a fox", seed=1).save("fox.png")`."""

    def __init__(
        self, server: str | None = None, key: str | None = None,
        timeout: Any = DEFAULT_TIMEOUT, **httpx_kwargs: Any,
    ) -> None:  # fmt: skip
        self.http = httpx.Client(**client_args(server, key, timeout, **httpx_kwargs))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, flow: Flow[T]) -> T:
        for kind, value in self._steps(flow):
            if kind is _DONE:
                return value
        raise AssertionError("unreachable")

    def _iterate(self, flow: Flow[Any]) -> Iterator[Any]:
        for kind, value in self._steps(flow):
            if kind is _DONE:
                return
            yield value

    def _steps(self, flow: Flow[Any]) -> Iterator[tuple[object, Any]]:
        """Answer the flow's commands; yields (None, emitted) and finally (_DONE, result)."""
        with ExitStack() as stream:
            lines: Iterator[str] = iter(())
            reply: Any = None
            error: Exception | None = None
            try:
                while True:
                    try:
                        command = flow.throw(error) if error is not None else flow.send(reply)
                    except StopIteration as stop:
                        yield _DONE, stop.value
                        return
                    reply, error = None, None
                    if isinstance(command, Emit):
                        yield None, command.value
                        continue
                    try:
                        if isinstance(command, Open):
                            stream.close()
                            reply, lines = self._open(stream, command)
                        else:
                            reply = self._answer(command, lines)
                    except httpx.TransportError as exc:
                        error = ConnectionFailed(
                            f"{self.http.base_url}: {type(exc).__name__}: {exc}"
                        )
            finally:
                flow.close()

    def _open(self, stream: ExitStack, command: Open) -> tuple[Response, Iterator[str]]:
        response = stream.enter_context(self.http.stream(**command.request.httpx_args()))
        if response.status_code >= 400:
            response.read()
            return Response(response.status_code, response.headers, response.content), iter(())
        return Response(response.status_code, response.headers), response.iter_lines()

    def _answer(self, command: Any, lines: Iterator[str]) -> Any:
        if isinstance(command, Send):
            r = self.http.request(**command.request.httpx_args())
            return Response(r.status_code, r.headers, r.content)
        if isinstance(command, ReadLine):
            return next(lines, None)
        if isinstance(command, Sleep):
            time.sleep(command.seconds)
            return None
        if isinstance(command, Await):
            close = getattr(command.awaitable, "close", None)
            if close is not None:
                close()  # a coroutine never awaited would warn
            raise TypeError("an async callback needs AsyncClient")
        raise TypeError(f"unknown command {command!r}")
