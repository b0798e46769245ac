"""Request body guards, before any route reads the body: size (413) and JSON nesting (400).

The size is checked by Content-Length at once, else while streaming. JSON bodies
(any `json` content type) are buffered (they are bounded by the size limit) and
refused when nested deeper than `validation.MAX_JSON_DEPTH`, so no route's parser
recurses on them. Errors use the envelope of the dialect that serves the path.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pixelpool.api.errors import ErrorInfo, render_error
from pixelpool.api.validation import MAX_JSON_DEPTH, json_depth


class BodyLimitMiddleware:
    """Rejects bodies over `max_bytes`, and JSON bodies nested too deeply."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(
                scope, send, 413, f"request body is larger than {self.max_bytes} bytes"
            )
            return
        is_json = b"json" in headers.get(b"content-type", b"").lower()
        if declared is not None and not is_json:
            await self.app(scope, receive, send)  # the server stops at Content-Length
            return
        # Chunked, or JSON: buffer up to the limit, check, then replay to the app.
        buffered: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await self._reject(
                    scope, send, 413, f"request body is larger than {self.max_bytes} bytes"
                )
                return
            if not message.get("more_body", False):
                break
        if is_json:
            body = b"".join(m.get("body", b"") for m in buffered if m["type"] == "http.request")
            if json_depth(body) > MAX_JSON_DEPTH:
                await self._reject(
                    scope, send, 400, f"body: JSON is nested deeper than {MAX_JSON_DEPTH}", "body"
                )
                return
        replay = iter(buffered)

        async def replaying_receive() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replaying_receive, send)

    async def _reject(
        self, scope: Scope, send: Send, status: int, message: str, field: str | None = None
    ) -> None:
        response = render_error(scope["app"], scope["path"], ErrorInfo(status, message, field))
        await response(scope, self._no_receive, send)

    @staticmethod
    async def _no_receive() -> Message:
        return {"type": "http.disconnect"}
