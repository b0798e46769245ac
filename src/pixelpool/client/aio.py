"""`AsyncClient`: the operations (operations.py) over an `httpx.AsyncClient`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any, Self

import httpx

from pixelpool.client.errors import ConnectionFailed
from pixelpool.client.flow import (
    AsyncDriver,
    Await,
    Emit,
    Flow,
    Open,
    ReadLine,
    Response,
    Send,
    Sleep,
    T,
)
from pixelpool.client.operations import Operations
from pixelpool.client.sync import DEFAULT_TIMEOUT, client_args

_DONE = object()


async def _no_lines() -> AsyncIterator[str]:
    return
    yield  # an empty async generator


class AsyncClient(Operations, AsyncDriver):
    """The native API for asyncio: the same methods as `Client`, awaited
    (`events` is an async iterator)."""

    def __init__(
        self, server: str | None = None, key: str | None = None,
        timeout: Any = DEFAULT_TIMEOUT, **httpx_kwargs: Any,
    ) -> None:  # fmt: skip
        self.http = httpx.AsyncClient(**client_args(server, key, timeout, **httpx_kwargs))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, flow: Flow[T]) -> T:
        async for kind, value in self._steps(flow):
            if kind is _DONE:
                return value
        raise AssertionError("unreachable")

    async def _iterate(self, flow: Flow[Any]) -> AsyncIterator[Any]:
        async for kind, value in self._steps(flow):
            if kind is _DONE:
                return
            yield value

    async def _steps(self, flow: Flow[Any]) -> AsyncIterator[tuple[object, Any]]:
        """Answer the flow's commands; yields (None, emitted) and finally (_DONE, result)."""
        async with AsyncExitStack() as stream:
            lines: AsyncIterator[str] = _no_lines()
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
                            await stream.aclose()
                            reply, lines = await self._open(stream, command)
                        else:
                            reply = await self._answer(command, lines)
                    except httpx.TransportError as exc:
                        error = ConnectionFailed(
                            f"{self.http.base_url}: {type(exc).__name__}: {exc}"
                        )
                    except Exception as exc:  # a callback's error, for the flow
                        if not isinstance(command, Await):
                            raise
                        error = exc
            finally:
                flow.close()

    async def _open(
        self, stream: AsyncExitStack, command: Open
    ) -> tuple[Response, AsyncIterator[str]]:
        request = command.request.httpx_args()
        response = await stream.enter_async_context(self.http.stream(**request))
        if response.status_code >= 400:
            await response.aread()
            return Response(response.status_code, response.headers, response.content), _no_lines()
        return Response(response.status_code, response.headers), response.aiter_lines()

    async def _answer(self, command: Any, lines: AsyncIterator[str]) -> Any:
        if isinstance(command, Send):
            r = await self.http.request(**command.request.httpx_args())
            return Response(r.status_code, r.headers, r.content)
        if isinstance(command, ReadLine):
            return await anext(lines, None)
        if isinstance(command, Sleep):
            await asyncio.sleep(command.seconds)
            return None
        if isinstance(command, Await):
            return await command.awaitable
        raise TypeError(f"unknown command {command!r}")
