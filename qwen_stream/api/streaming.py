"""A streaming response that always races its body against the client's disconnect.

Starlette only listens for `http.disconnect` under ASGI spec < 2.4; otherwise it learns of a departed
client when a write fails, which for a request still waiting in its client's queue may be never. GPU
work must stop when the reader goes, so the race is not left to the server's spec version."""

from __future__ import annotations

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class RacingStreamingResponse(StreamingResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def body() -> None:
                await self.stream_response(send)
                group.cancel_scope.cancel()

            async def disconnect() -> None:
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()

            group.start_soon(body)
            group.start_soon(disconnect)
