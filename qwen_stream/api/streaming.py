"""A streaming response that always races its body against the client's disconnect.

Starlette only listens for `http.disconnect` under ASGI spec < 2.4; otherwise it learns of a departed
client when a write fails, which for a request still waiting in its client's queue may be never. GPU
work must stop when the reader goes, so the race is not left to the server's spec version.

A third racer, `abandon`, is the server giving up on a reader that takes nothing (a stalled stream): the
body is then blocked in a send that may never return, so the response is dropped and the server closes the
connection, as for a disconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class RacingStreamingResponse(StreamingResponse):
    # The signature is spelled out: FastAPI reads the default status_code off it for the OpenAPI schema.
    def __init__(self, content, status_code: int = 200, headers: Mapping[str, str] | None = None,
                 media_type: str | None = None, background=None, *, abandon: asyncio.Event | None = None):
        super().__init__(content, status_code, headers, media_type, background)
        self._abandon = abandon

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._race(receive, send)
        finally:
            # A body cut off in a send is suspended at its yield: close it now, so its cleanup (cancel the
            # work, log the outcome) runs at once rather than whenever the generator is collected.
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()

    async def _race(self, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def body() -> None:
                await self.stream_response(send)
                group.cancel_scope.cancel()

            async def disconnect() -> None:
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()

            async def abandon() -> None:
                await self._abandon.wait()
                group.cancel_scope.cancel()

            group.start_soon(body)
            group.start_soon(disconnect)
            if self._abandon is not None:
                group.start_soon(abandon)
