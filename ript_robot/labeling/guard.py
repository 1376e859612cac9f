"""What wraps every request to the tablet app: a bound on body size and a catch-all for the unexpected.

The app never answers 500 to what a client sends: inputs are checked in the routes and refused
with a 4xx and a message. These two ASGI middlewares cover the rest. `BodyLimit` reads a request's
body before the app parses anything and refuses one over `max_bytes` with 413 (the app's bodies
are a few dozen bytes; a declared or streamed larger one never reaches the JSON parser).
`CatchAll` turns anything the app did not expect into a generic 500 that names only a request
id, and logs the traceback under that id for whoever runs the workstation.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
# of a body over the limit this much is read and dropped before the 413, so that the client, still sending,
# reads the answer instead of a reset connection; a larger one is refused before it is read
DRAIN_BYTES = 1 << 20


class BodyLimit:
    """Refuse request bodies over `max_bytes` (413) before the app sees them; pass smaller ones through."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > DRAIN_BYTES:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:  # the whole body (a chunked upload declares no length), read to its end or DRAIN_BYTES
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_bytes:
                chunks.append(chunk)
            if not message.get("more_body", False) or size > DRAIN_BYTES:
                break
        if size > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body only a disconnect comes
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        reply = JSONResponse(
            {"error": f"request body too large: at most {self.max_bytes} bytes"},
            status_code=413,
            headers={"Connection": "close"},  # the unread rest of the body is not parsed as the next request
        )
        await reply(scope, receive, send)


class CatchAll:
    """Answer an exception the app did not handle with a bare 500 and a request id; log it under that id."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            request_id = uuid.uuid4().hex
            log.exception("request %s failed: %s %s", request_id, scope.get("method"), _printable(scope.get("path")))
            if not started:  # otherwise the reply is cut short: the client sees a broken response, not a 500
                reply = JSONResponse({"error": "internal error", "request_id": request_id}, status_code=500)
                await reply(scope, receive, send)


def _printable(text: Any) -> str:
    """A client's path as a log line may hold it: control characters escaped."""
    return str(text).encode("unicode_escape").decode("ascii")[:300]
