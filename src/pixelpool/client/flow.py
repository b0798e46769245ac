"""The client's one implementation, without I/O: every operation is a generator (a
"flow") that yields commands (send this request, open this stream, read a line,
sleep, emit a value) and gets their results back. `Client` and `AsyncClient` only
run commands (drivers in sync.py and aio.py), so the two cannot drift apart.
"""

from __future__ import annotations

import functools
import json
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from pixelpool.client.errors import ConnectionFailed, PixelpoolError, error_for
from pixelpool.client.types import ImageResult, JobEvent

P = ParamSpec("P")
T = TypeVar("T")
E = TypeVar("E")

# An image input: its bytes, or a path to read them from.
ImageInput = bytes | str | Path
ImageInputs = ImageInput | list[ImageInput] | None


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, str] | None = None
    headers: dict[str, str] | None = None

    def httpx_args(self) -> dict[str, Any]:
        """Keyword arguments for httpx's `request`/`stream` (both clients take the same)."""
        args: dict[str, Any] = {"method": self.method, "url": self.path}
        for name in ("params", "json", "content", "files", "data", "headers"):
            if getattr(self, name) is not None:
                args[name] = getattr(self, name)
        return args


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    content: bytes = b""

    def json(self) -> Any:
        return json.loads(self.content)


# Commands a flow yields; the driver answers each (the reply is what `yield` returns).
@dataclass(frozen=True)
class Send:
    """Send a request, read the whole answer -> Response."""

    request: Request


@dataclass(frozen=True)
class Open:
    """Open a streamed answer (closing any open one) -> Response (body read on error)."""

    request: Request


@dataclass(frozen=True)
class ReadLine:
    """The open stream's next line -> str, or None at its end."""


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Await:
    """An awaitable a callback returned (AsyncClient only)."""

    awaitable: Any


@dataclass(frozen=True)
class Emit:
    """A value for the caller of an iterating operation (`events`)."""

    value: Any


Command = Send | Open | ReadLine | Sleep | Await | Emit
Flow = Generator[Command, Any, T]


class SyncDriver:
    """Runs flows with blocking I/O (see sync.py)."""

    def _run(self, flow: Flow[T]) -> T:
        raise NotImplementedError

    def _iterate(self, flow: Flow[Any]) -> Iterator[Any]:
        raise NotImplementedError


class AsyncDriver:
    """Runs flows with asyncio (see aio.py)."""

    async def _run(self, flow: Flow[T]) -> T:
        raise NotImplementedError

    def _iterate(self, flow: Flow[Any]) -> AsyncIterator[Any]:
        raise NotImplementedError


class operation(Generic[P, T]):
    """A flow method that becomes `method(...) -> T` on `Client` and
    `async method(...) -> T` on `AsyncClient`."""

    def __init__(self, fn: Callable[Concatenate[Any, P], Flow[T]]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @overload
    def __get__(self, obj: SyncDriver, owner: type | None = None) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: AsyncDriver, owner: type | None = None) -> Callable[P, Awaitable[T]]: ...
    @overload
    def __get__(self, obj: Any, owner: type | None = None) -> Any: ...
    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        fn = self.fn

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return obj._run(fn(obj, *args, **kwargs))

        return call


class iteration(Generic[P, E]):
    """A flow method whose `Emit`s become an iterator on `Client` and an async iterator
    on `AsyncClient`."""

    def __init__(self, fn: Callable[Concatenate[Any, P], Flow[None]]) -> None:
        self.fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @overload
    def __get__(self, obj: SyncDriver, owner: type | None = None) -> Callable[P, Iterator[E]]: ...
    @overload
    def __get__(
        self, obj: AsyncDriver, owner: type | None = None
    ) -> Callable[P, AsyncIterator[E]]: ...
    @overload
    def __get__(self, obj: Any, owner: type | None = None) -> Any: ...
    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        fn = self.fn

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            return obj._iterate(fn(obj, *args, **kwargs))

        return call


def checked(response: Response) -> Response:
    """The response, or its typed error."""
    if response.status >= 400:
        raise error_for(response.status, response.headers, response.content)
    return response


def as_result(response: Response) -> ImageResult | Any:
    """A finished operation's answer: JSON (tags, vision results) or an ImageResult."""
    media_type = response.headers.get("content-type", "application/octet-stream")
    if media_type.startswith("application/json"):
        return response.json()
    seed = response.headers.get("x-seed")
    return ImageResult(
        data=response.content,
        media_type=media_type.split(";")[0],
        job_id=response.headers.get("x-job-id"),
        seed=int(seed) if seed and seed.lstrip("-").isdigit() else None,
    )


# ---- request bodies -------------------------------------------------------------------

JSON_OPS = frozenset({"generate", "generate-hires", "generate-latents"})
RAW_OPS = frozenset({"decode-latents", "encode-latents", "hires-latents"})
MULTIPART_OPS = frozenset({"img2img", "inpaint", "enhance", "upscale", "bgremove", "tag",
                           "segment", "detect", "depth", "embed"})  # fmt: skip


def _image_part(name: str, index: int, value: ImageInput) -> tuple[str, tuple[str, bytes, str]]:
    if isinstance(value, bytes):
        return name, (f"{name}{index}.png", value, "application/octet-stream")
    path = Path(value)
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return name, (path.name, path.read_bytes(), media)


def _parts(name: str, value: ImageInputs) -> list[tuple[str, tuple[str, bytes, str]]]:
    values = [] if value is None else value if isinstance(value, list) else [value]
    return [_image_part(name, i, v) for i, v in enumerate(values)]


@dataclass(frozen=True)
class Inputs:
    """An operation's files: `image` (one or several), `mask`, `reference` (IP-Adapter
    images), or a raw `body` (latents, or the image of encode-latents)."""

    image: ImageInputs = None
    mask: ImageInputs = None
    reference: ImageInputs = None
    body: ImageInput | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def op_request(
    op: str,
    fields: dict[str, Any],
    inputs: Inputs = Inputs(),
    enqueue: bool = False,
    idempotency_key: str | None = None,
) -> Request:
    """The request for `op` (`POST /api/<op>`, or `/api/enqueue/<op>`): JSON, multipart
    (`image`/`mask`/`reference` parts + `params` JSON) or a raw body + query, as the
    server's route for `op` takes it."""
    fields = {k: v for k, v in fields.items() if v is not None}
    path = f"/api/enqueue/{op}" if enqueue else f"/api/{op}"
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    if op in JSON_OPS:
        return Request("POST", path, json=fields, headers=headers)
    if op in RAW_OPS:
        body = inputs.body
        if body is None:
            raise PixelpoolError(f"{op} needs a body (latents or an image)", field="body")
        content = body if isinstance(body, bytes) else Path(body).read_bytes()
        return Request("POST", path, params=fields, content=content, headers=headers)
    if op not in MULTIPART_OPS:
        raise PixelpoolError(f"unknown operation {op!r}", field="operation")
    files = [*_parts("image", inputs.image), *_parts("mask", inputs.mask),
             *_parts("reference", inputs.reference)]  # fmt: skip
    files += [p for name, v in inputs.extra.items() for p in _parts(name, v)]
    data = {"params": json.dumps(fields)}
    return Request("POST", path, files=files, data=data, headers=headers)


# ---- server-sent events ---------------------------------------------------------------


class SSEParser:
    """Server-sent events, one line at a time (`id:`, `event:`, `data:`, blank = end)."""

    def __init__(self) -> None:
        self.data: list[str] = []
        self.event_id: int | None = None

    def feed(self, line: str) -> JobEvent | None:
        if line.startswith(":"):
            return None  # a keepalive comment
        if line == "":
            if not self.data:
                return None
            body = json.loads("\n".join(self.data))
            self.data = []
            return JobEvent.from_json(body, self.event_id)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "id" and value.isdigit():
            self.event_id = int(value)
        return None


def follow(job_id: str, last_event_id: int | None = None, reconnects: int = 5) -> Flow[None]:
    """Emit the job's events until its terminal one; after a dropped connection,
    resume after the last event seen (`Last-Event-ID`), a few times."""
    seen = last_event_id
    failures = 0
    while True:
        headers = {"Last-Event-ID": str(seen)} if seen is not None else None
        try:
            checked((yield Open(Request("GET", f"/api/job/{job_id}/events", headers=headers))))
            parser = SSEParser()
            while (line := (yield ReadLine())) is not None:
                event = parser.feed(line)
                if event is None:
                    continue
                failures = 0
                seen = event.id if event.id is not None else seen
                yield Emit(event)
                if event.terminal:
                    return None
        except ConnectionFailed:
            failures += 1
            if failures > reconnects:
                raise
            yield Sleep(min(0.2 * 2**failures, 5.0))
            continue
        failures += 1  # the stream ended without a terminal event
        if failures > reconnects:
            raise ConnectionFailed(f"job {job_id}: the event stream ended early")


def intercept(flow: Flow[T], handle: Callable[[Any], Flow[None]]) -> Flow[T]:
    """Run `flow`, giving each value it emits to `handle` (a flow) instead of the caller."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            command = flow.throw(error) if error is not None else flow.send(reply)
        except StopIteration as stop:
            return stop.value
        reply, error = None, None
        if isinstance(command, Emit):
            yield from handle(command.value)
            continue
        try:
            reply = yield command
        except GeneratorExit:
            flow.close()
            raise
        except Exception as exc:  # the driver's error, for `flow` to handle
            error = exc
