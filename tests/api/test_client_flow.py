"""The client's I/O-free core, driven by hand: what `Client` and `AsyncClient` both run."""

from __future__ import annotations

import json

import pytest

from pixelpool.client import BadRequest, ConnectionFailed, RateLimited, ServerBusy, Unauthorized
from pixelpool.client.errors import error_for
from pixelpool.client.flow import (
    Emit,
    Inputs,
    Open,
    ReadLine,
    Response,
    Sleep,
    follow,
    op_request,
)


def sse(event_id: int, kind: str, **fields: object) -> list[str]:
    body = {"type": kind, "job_id": "j", "id": event_id, **fields}
    return [f"id: {event_id}", f"event: {kind}", f"data: {json.dumps(body)}", ""]


def test_events_resume_after_a_dropped_connection_with_last_event_id() -> None:
    flow = follow("j")
    opened = flow.send(None)
    assert isinstance(opened, Open) and opened.request.headers is None
    assert flow.send(Response(200, {})) == ReadLine()
    emitted = []
    command = None
    for line in [": keepalive", *sse(3, "progress", step=1, total=2)]:
        command = flow.send(line)
        if isinstance(command, Emit):
            emitted.append(command.value)
            command = flow.send(None)
    assert [(e.id, e.step) for e in emitted] == [(3, 1)] and command == ReadLine()
    assert isinstance(flow.throw(ConnectionFailed("reset")), Sleep)
    again = flow.send(None)
    assert isinstance(again, Open) and again.request.headers == {"Last-Event-ID": "3"}
    flow.send(Response(200, {}))
    for line in sse(4, "completed")[:-1]:
        assert flow.send(line) == ReadLine()
    done = flow.send("")
    assert isinstance(done, Emit) and done.value.terminal
    with pytest.raises(StopIteration):
        flow.send(None)


def test_a_refused_stream_is_a_typed_error() -> None:
    flow = follow("j")
    flow.send(None)
    body = json.dumps({"error": "job not found: j", "detail": [{"field": "job_id"}]}).encode()
    with pytest.raises(BadRequest) as caught:
        flow.send(Response(404, {}, body))
    assert caught.value.field == "job_id" and caught.value.status == 404


def test_errors_by_status_with_field_and_retry_after() -> None:
    detail = [{"field": "width", "message": "must be a multiple of 8"}]
    body = json.dumps({"error": "width: must be a multiple of 8", "detail": detail})
    bad = error_for(422, {}, body.encode())
    assert isinstance(bad, BadRequest) and bad.field == "width" and bad.status == 422
    limited = error_for(429, {"retry-after": "7"}, b'{"error": "slow down"}')
    assert isinstance(limited, RateLimited) and limited.retry_after == 7
    busy = error_for(503, {}, b"<html>proxy</html>")
    assert isinstance(busy, ServerBusy) and busy.message == "<html>proxy</html>"
    assert isinstance(error_for(401, {}, b'{"error": "no key"}'), Unauthorized)


def test_requests_take_each_routes_shape() -> None:
    gen = op_request("generate", {"prompt": "fox", "seed": None, "steps": 2}, enqueue=True)
    assert (gen.path, gen.json) == ("/api/enqueue/generate", {"prompt": "fox", "steps": 2})
    up = op_request("upscale", {"scale": 2}, Inputs(image=b"png"))
    assert up.files == [("image", ("image0.png", b"png", "application/octet-stream"))]
    assert up.data == {"params": '{"scale": 2}'}
    raw = op_request("decode-latents", {"model": "m"}, Inputs(body=b"lat"))
    assert (raw.content, raw.params) == (b"lat", {"model": "m"})
