"""A streaming response that always races its body against the client's disconnect.

Starlette only listens for `http.disconnect` under ASGI spec < 2.4; otherwise it learns of a departed
client when a write fails, which for a request still waiting in its client's queue may be never. GPU
work must stop when the reader goes, so the race is not left to the server's spec version.

A reader that takes nothing is a departure too: a send blocked for `send_timeout` seconds (the socket's
buffers are full and the reader does not drain them) ends the response and calls `on_stall`, whatever the
stream was doing (generating, sending its last chunks, sending a FLAC file whole). `abandon` is the engine
giving up on such a reader first. Either way the body is dropped and the server closes the connection,
as for a disconnect (once the kernel has sent what it holds, or the peer goes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from ..speech.service import SpeechService
from ..speech.utterance import Utterance


class RacingStreamingResponse(StreamingResponse):
    # The signature is spelled out: FastAPI reads the default status_code off it for the OpenAPI schema.
    def __init__(
        self,
        content,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background=None,
        *,
        abandon: asyncio.Event | None = None,
        send_timeout: float | None = None,
        on_stall: Callable[[], None] | None = None,
        on_end: Callable[[], None] | None = None,
    ):
        super().__init__(content, status_code, headers, media_type, background)
        self._abandon = abandon
        self._send_timeout = send_timeout
        self._on_stall = on_stall
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._race(receive, send)
        finally:
            # A body cut off in a send is suspended at its yield: close it now, so its cleanup (cancel the
            # work, log the outcome) runs at once rather than whenever the generator is collected.
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
            if self._on_end is not None:
                self._on_end()

    async def _race(self, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:

            async def body() -> None:
                try:
                    await self.stream_response(self._bounded(send))
                except TimeoutError:
                    if self._on_stall is not None:
                        self._on_stall()
                group.cancel_scope.cancel()

            async def disconnect() -> None:
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()

            async def abandon() -> None:
                assert self._abandon is not None  # started only when there is one
                await self._abandon.wait()
                group.cancel_scope.cancel()

            group.start_soon(body)
            group.start_soon(disconnect)
            if self._abandon is not None:
                group.start_soon(abandon)

    def _bounded(self, send: Send) -> Send:
        if self._send_timeout is None:
            return send

        async def bounded(message: Message) -> None:
            with anyio.fail_after(self._send_timeout):
                await send(message)

        return bounded


def utterance_response(
    service: SpeechService, utterance: Utterance, body, media_type: str, headers: Mapping[str, str]
) -> RacingStreamingResponse:
    """The response of one speech stream: raced against disconnect, a stalled reader and the engine's
    giving up on it; a stall ends the utterance as `stalled`."""
    return RacingStreamingResponse(
        body,
        media_type=media_type,
        headers=headers,
        abandon=utterance.abandoned,
        send_timeout=service.settings.send_timeout,
        on_stall=lambda: service.stalled(utterance),
        on_end=lambda: service.finished(utterance),
    )
