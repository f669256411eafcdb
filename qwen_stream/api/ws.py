"""GET /v1/tts/websocket (also /tts/websocket): Cartesia's context WebSocket, so voice-agent stacks that speak
it (Pipecat's CartesiaTTSService, the cartesia SDK with a custom URL) can use this server.

Client messages: `{"context_id", "transcript", "continue", "voice", "language", "output_format", "flush"}` (and
/tts/stream's sampling fields on a turn's first message), or `{"context_id", "cancel": true}`. Server messages
per context: `chunk` (base64 audio), `done`, `error` (the socket stays open). One socket is one client queue: its
contexts play in the order they were opened; closing the socket cancels them all. docs/websocket.md has the
details."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio
from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketDisconnect

from ..events import AudioChunk, Mark, Outcome
from ..raw_audio import RawConverter, RawFormat
from ..settings import SamplingSettings
from ..speech.errors import InvalidRequest, NotReady
from ..speech.queues import CLIENT_ID_PATTERN, QueueFull
from ..speech.session import Context, Flushed, SpeechSession, UnitSpoken
from .protocol import SAMPLING_FIELDS, SamplingParams
from .state import server

log = logging.getLogger("qwen_stream.api")
router = APIRouter(tags=["websocket"])

# Cartesia names languages by ISO 639-1 code; ours are names. Both are accepted.
ISO_LANGUAGES = {
    "en": "English",
    "zh": "Chinese",
    "ja": "Japanese",
    "ko": "Korean",
    "de": "German",
    "fr": "French",
    "ru": "Russian",
    "pt": "Portuguese",
    "es": "Spanish",
    "it": "Italian",
}


class OutputFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")
    container: Literal["raw"] = "raw"
    encoding: str = "pcm_s16le"
    sample_rate: int = 24_000


class VoiceById(BaseModel):
    model_config = ConfigDict(extra="ignore")
    mode: Literal["id"] = "id"
    id: str = Field(min_length=1, max_length=128)


class ContextMessage(SamplingParams):
    # Cartesia clients also send fields we do not use (model_id, duration, speed controls): ignored. Extension:
    # the sampling fields of /tts/stream (temperature, top_k, ...), for the turn, on its first message.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    context_id: str = Field(min_length=1, max_length=128, pattern=CLIENT_ID_PATTERN)
    transcript: str = Field("", max_length=100_000)
    more: bool = Field(False, alias="continue")
    voice: VoiceById | str | None = None
    language: str = Field("Auto", max_length=32)
    output_format: OutputFormat = Field(default_factory=OutputFormat)
    flush: bool = False
    cancel: bool = False
    add_timestamps: bool = False
    # Cartesia's buffering window. 0 ("custom buffering") means the client sends whole segments (Pipecat's
    # sentence aggregation, each sentence without a leading space) and each is spoken as it is sent, as with
    # `flush`. Other values are accepted: the server's own splitter decides when a unit is complete.
    max_buffer_delay_ms: int | None = Field(None, ge=0)
    # Extension: characters before a clause mark that let a clause be spoken before its sentence ends (default
    # 60; 15 in Chinese and Japanese). Lower starts audio sooner, higher keeps more prosody whole.
    min_clause_chars: int | None = Field(None, ge=5, le=1000)

    @property
    def voice_id(self) -> str | None:
        return self.voice.id if isinstance(self.voice, VoiceById) else self.voice

    @property
    def language_name(self) -> str:
        return ISO_LANGUAGES.get(self.language.lower(), self.language)


class Socket:
    """Sends one message at a time (a WebSocket takes no concurrent sends), each bounded by the send timeout:
    a reader that takes nothing for that long is dropped rather than buffered for."""

    def __init__(self, ws: WebSocket, send_timeout: float):
        self._ws = ws
        self._lock = asyncio.Lock()
        self._timeout = send_timeout
        self.gone = asyncio.Event()

    async def send(self, message: dict) -> None:
        await self._send({"type": "websocket.send", "text": json.dumps(message, separators=(",", ":"))})

    async def send_bytes(self, data: bytes) -> None:
        await self._send({"type": "websocket.send", "bytes": data})

    async def _send(self, message: dict) -> None:
        if self.gone.is_set():
            return
        async with self._lock:
            try:
                with anyio.fail_after(self._timeout):
                    await self._ws.send(message)
            except (TimeoutError, WebSocketDisconnect, RuntimeError, OSError):
                self.gone.set()  # stalled or closed: the receive loop ends the session

    async def error(self, code: str, message: str, context_id: str | None = None, status: int = 400) -> None:
        # `code` and `error` are ours; `error_code`, `title` and `message` are the names the cartesia SDK reads
        # (its Error event shows `title: message`).
        await self.send(
            {
                "type": "error",
                "context_id": context_id,
                "code": code,
                "error": message,
                "error_code": code,
                "title": code.replace("_", " ").capitalize(),
                "message": message,
                "status_code": status,
                "done": True,
            }
        )


# Cartesia's clients build their URL as base + "/tts/websocket" (the cartesia SDK's websocket_base_url, Pipecat's
# url default): both paths are the same route, so a client pointed at the server's root works unchanged.
@router.websocket("/tts/websocket")
@router.websocket("/v1/tts/websocket")
async def tts_websocket(ws: WebSocket, client_id: str | None = None):
    await ws.accept()
    backend = server(ws)
    socket = Socket(ws, backend.settings.send_timeout)
    try:
        speech = backend.speech
    except NotReady as e:
        await socket.error("not_ready", str(e), status=503)
        await ws.close(code=1013)
        return
    session = SpeechSession(speech, client_id or f"ws-{id(ws):x}")
    pumps: set[asyncio.Task] = set()

    async def binary() -> None:
        await socket.error("invalid_message", "binary frames are not accepted; send JSON text messages")

    try:
        await receive_messages(ws, socket, lambda text: _handle(text, socket, session, pumps), binary)
    finally:
        session.close()
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def receive_messages(
    ws: WebSocket,
    socket: Socket,
    on_text: Callable[[str], Awaitable[None]],
    on_binary: Callable[[], Awaitable[None]],
) -> None:
    """Hands each text message to `on_text`, in order, until the client leaves or stops reading (a send that
    timed out). A binary frame gets `on_binary` (these protocols take JSON only)."""
    gone = asyncio.ensure_future(socket.gone.wait())
    try:
        while True:
            receive = asyncio.ensure_future(ws.receive())
            await asyncio.wait({receive, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not receive.done():
                receive.cancel()
                return
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is None:
                await on_binary()
                continue
            await on_text(message["text"])
    finally:
        gone.cancel()


async def _handle(text: str, socket: Socket, session: SpeechSession, pumps: set[asyncio.Task]) -> None:
    try:
        request = ContextMessage.model_validate_json(text)
    except ValidationError as e:
        context_id = _context_id_of(text)
        problem = problems(e)
        await socket.error("invalid_request", problem, context_id)
        return
    if request.cancel:
        session.cancel(request.context_id)
        return
    try:
        context = session.get(request.context_id)
        if context is None:
            fmt = _raw_format(request.output_format)
            context = await session.open(
                request.context_id,
                request.voice_id,
                request.language_name,
                timestamps=request.add_timestamps,
                min_clause_chars=request.min_clause_chars,
                sampling=request.sampling(),
            )
            task = asyncio.ensure_future(_pump(context, fmt, socket, session))
            pumps.add(task)
            task.add_done_callback(pumps.discard)
        elif changed := _changed_sampling(request, context):
            raise InvalidRequest("invalid_params", f"a turn's sampling is set by its first message: {changed}")
        flush = request.flush or (request.max_buffer_delay_ms == 0 and bool(request.transcript))
        await session.feed(context, request.transcript, more=request.more, flush=flush)
    except InvalidRequest as e:
        await socket.error(e.code, str(e), request.context_id, status=e.status)
    except QueueFull as e:
        await socket.error(e.code, str(e), request.context_id, status=429)


def _changed_sampling(request: ContextMessage, context: Context) -> str:
    """The sampling fields of a later message of a turn that differ from what its first message set ("" when
    none does): repeating them, all or some, is fine."""
    first = context.sampling or SamplingSettings()
    return ", ".join(
        name
        for name in SAMPLING_FIELDS
        if (value := getattr(request, name)) is not None and value != getattr(first, name)
    )


def problems(error: ValidationError) -> str:
    """The first few field errors of a message, in one line a client can act on."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:3])


def _raw_format(requested: OutputFormat) -> RawFormat:
    try:
        return RawFormat(requested.encoding, requested.sample_rate)
    except ValueError as e:
        raise InvalidRequest("invalid_output_format", str(e)) from e


def _context_id_of(text: str) -> str | None:
    """The context a malformed message meant, when it can be read, so its error can name it."""
    try:
        value = json.loads(text).get("context_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and len(value) <= 128 else None


async def _pump(context: Context, fmt: RawFormat, socket: Socket, session: SpeechSession) -> None:
    """The context's audio to the socket, in its format, with its flush acknowledgements and unit timestamps,
    then its done (or error)."""
    converter = RawConverter(fmt)
    last = time.perf_counter()
    spoken = 0.0  # seconds of this context's audio handed out so far: the timeline of its timestamps
    unit_start = 0.0
    try:
        async for item in context.utterance.events():
            if isinstance(item, AudioChunk):
                now = time.perf_counter()
                await _send_audio(socket, context.id, converter.push(item.pcm), 1000 * (now - last))
                last, spoken = now, spoken + item.seconds
                continue
            if isinstance(item, Mark):
                if isinstance(item.value, UnitSpoken) and item.value.start:
                    unit_start = spoken
                elif isinstance(item.value, UnitSpoken):
                    await socket.send(_timestamps(context.id, item.value.text, unit_start, spoken))
                elif isinstance(item.value, Flushed):
                    await socket.send(
                        {
                            "type": "flush_done",
                            "context_id": context.id,
                            "flush_id": item.value.flush_id,
                            "flush_done": True,
                            "done": False,
                            "status_code": 206,
                        }
                    )
                continue
            if item.outcome == Outcome.DONE:
                await _send_audio(socket, context.id, converter.finish(), 0.0)
                await socket.send({"type": "done", "context_id": context.id, "done": True, "status_code": 200})
            elif item.outcome == Outcome.ERROR:
                await socket.error("generation_failed", f"generation failed: {item.error}", context.id, status=500)
            # Cancelled (by the client or its connection): nothing more is said for this context.
    finally:
        session.forget(context.id)


def _timestamps(context_id: str, text: str, start: float, end: float) -> dict:
    """One spoken unit (a sentence or clause: the model has no word alignment) with its place in the context's
    audio, in Cartesia's word-timestamp shape."""
    return {
        "type": "timestamps",
        "context_id": context_id,
        "done": False,
        "status_code": 206,
        "word_timestamps": {"words": [text], "start": [round(start, 3)], "end": [round(end, 3)]},
    }


async def _send_audio(socket: Socket, context_id: str, data: bytes, step_ms: float) -> None:
    if data:
        await socket.send(
            {
                "type": "chunk",
                "context_id": context_id,
                "data": base64.b64encode(data).decode("ascii"),
                "done": False,
                "status_code": 206,
                "step_time": round(step_ms, 1),
            }
        )
