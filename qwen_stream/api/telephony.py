"""GET /ws: the telephony protocol. A phone gateway sends text and gets G.711 mu-law at 8 kHz in binary
frames of exactly 160 bytes (20 ms), the frame size telephony stacks forward as they are.

Client messages (JSON text frames):
  {"type": "init", "ref_audio_base64"?, "ref_text"?, "x_vector_only"?, "voice"?, "language"?}
      -> {"type": "ready", "voice_loaded": bool}: the session's voice (a clone of the reference audio, never a path
         or URL; else the named or default voice)
  {"type": "generate", "text", "language"?}: one whole turn
  {"type": "text", "text", "final"}: a turn's text in pieces (final true ends the turn)
  {"type": "cancel"}: barge-in: every turn of the session stops within one frame step
Server messages: {"type": "audio_start"}, binary frames, {"type": "audio_end"} per turn (with "cancelled": true
after a cancel), {"type": "error", "code", "message"} (the socket stays open). Turns play in order. docs/websocket.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Literal

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..events import AudioChunk, Mark, Outcome
from ..raw_audio import RawConverter, RawFormat
from ..speech.checks import canonical_language
from ..speech.errors import InvalidRequest, NotReady
from ..speech.queues import QueueFull
from ..speech.service import Speaker, SpeechService
from ..speech.session import Context, SpeechSession
from .state import server
from .ws import Socket, problems, receive_messages

log = logging.getLogger("qwen_stream.api")
router = APIRouter(tags=["websocket"])

FRAME_BYTES = 160  # 20 ms of 8 kHz mu-law
MULAW_SILENCE = b"\xff"  # the code of zero


class Init(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["init"]
    ref_audio_base64: str | None = Field(None, max_length=64 * 2**20)
    ref_text: str | None = Field(None, max_length=2000)
    x_vector_only: bool = False
    voice: str | None = Field(None, max_length=128)
    language: str = Field("Auto", max_length=32)


class Generate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["generate"]
    text: str = Field(max_length=100_000)
    language: str | None = Field(None, max_length=32)


class Text(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str = Field(max_length=100_000)
    final: bool = False
    language: str | None = Field(None, max_length=32)


class Cancel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["cancel"]


MESSAGES: dict[object, type[BaseModel]] = {"init": Init, "generate": Generate, "text": Text, "cancel": Cancel}


class _Call:
    """One telephony connection: its voice, its turns, the turn that is taking text in pieces."""

    def __init__(self, speech: SpeechService, socket: Socket, client_id: str):
        self.speech = speech
        self.socket = socket
        self.session = SpeechSession(speech, client_id)
        self.speaker: Speaker | None = None
        self.language = "Auto"
        self.streaming: Context | None = None  # the turn fed by "text" messages
        self.pumps: set[asyncio.Task] = set()
        self._ids = itertools.count(1)

    async def handle(self, text: str) -> None:
        try:
            kind = json.loads(text).get("type")
        except (ValueError, AttributeError):
            await self.error("invalid_request", "messages are JSON objects with a type")
            return
        model = MESSAGES.get(kind)
        if model is None:
            await self.error("invalid_request", f"unknown message type {kind!r}: init, generate, text or cancel")
            return
        try:
            message = model.model_validate_json(text)
        except ValidationError as e:
            await self.error("invalid_request", problems(e))
            return
        try:
            await self._dispatch(message)
        except InvalidRequest as e:
            await self.error(e.code, str(e))
        except QueueFull as e:
            await self.error(e.code, str(e))

    async def _dispatch(self, message: BaseModel) -> None:
        if isinstance(message, Init):
            await self._init(message)
        elif isinstance(message, Cancel):
            self.cancel()
        elif isinstance(message, Generate):
            context = await self._open(message.language)
            await self.session.feed(context, message.text, more=False)
        elif isinstance(message, Text):
            if self.streaming is None or self.streaming.utterance.input_closed:
                self.streaming = await self._open(message.language)
            await self.session.feed(self.streaming, message.text, more=not message.final)

    async def _init(self, message: Init) -> None:
        language = canonical_language(message.language)
        voices = self.speech.voices
        if message.ref_audio_base64:
            if message.voice:
                raise InvalidRequest("invalid_request", "give either voice or ref_audio_base64, not both")
            family, voice = await voices.session_voice(
                message.ref_audio_base64, message.ref_text, message.x_vector_only
            )
        else:
            family, voice = await voices.resolve(message.voice, None)
        self.speaker, self.language = Speaker(family, voice, language), language
        await self.socket.send({"type": "ready", "voice_loaded": message.ref_audio_base64 is not None})

    async def _open(self, language: str | None) -> Context:
        speaker = self.speaker
        if speaker is None:  # no init: the default voice
            family, voice = await self.speech.voices.resolve(None, None)
            speaker = self.speaker = Speaker(family, voice, self.language)
        if language is not None:
            speaker = Speaker(speaker.family, speaker.voice, canonical_language(language))
        context = await self.session.open(f"turn-{next(self._ids)}", None, speaker.language, speaker=speaker)
        task = asyncio.ensure_future(self._pump(context))
        self.pumps.add(task)
        task.add_done_callback(self.pumps.discard)
        return context

    def cancel(self) -> None:
        self.streaming = None
        for context_id in list(self.session.context_ids):
            self.session.cancel(context_id)

    async def _pump(self, context: Context) -> None:
        converter = RawConverter(RawFormat("pcm_mulaw", 8000))
        held = b""
        started = False
        try:
            async for item in context.utterance.events():
                if isinstance(item, Mark):
                    continue
                if isinstance(item, AudioChunk):
                    if not started:
                        started = True
                        await self.socket.send({"type": "audio_start"})
                    held = await self._frames(held + converter.push(item.pcm))
                    continue
                if item.outcome == Outcome.DONE:
                    tail = held + converter.finish()
                    if tail:
                        tail += MULAW_SILENCE * (-len(tail) % FRAME_BYTES)  # whole frames only
                        await self._frames(tail)
                    if started:
                        await self.socket.send({"type": "audio_end"})
                elif item.outcome == Outcome.ERROR:
                    await self.error("generation_failed", f"generation failed: {item.error}")
                elif started:
                    await self.socket.send({"type": "audio_end", "cancelled": True})
        finally:
            self.session.forget(context.id)

    async def _frames(self, data: bytes) -> bytes:
        """Sends every whole 160-byte frame of `data`; returns the rest."""
        whole = len(data) - len(data) % FRAME_BYTES
        for start in range(0, whole, FRAME_BYTES):
            await self.socket.send_bytes(data[start : start + FRAME_BYTES])
        return data[whole:]

    async def error(self, code: str, message: str) -> None:
        await self.socket.send({"type": "error", "code": code, "message": message})


@router.websocket("/ws")
async def telephony(ws: WebSocket, client_id: str | None = None):
    await ws.accept()
    backend = server(ws)
    socket = Socket(ws, backend.settings.send_timeout)
    try:
        speech = backend.speech
    except NotReady as e:
        await socket.send({"type": "error", "code": "not_ready", "message": str(e)})
        await ws.close(code=1013)
        return
    call = _Call(speech, socket, client_id or f"tel-{id(ws):x}")

    async def binary() -> None:
        await call.error("invalid_message", "binary frames are not accepted; send JSON text messages")

    try:
        await receive_messages(ws, socket, call.handle, binary)
    finally:
        call.session.close()
        for task in call.pumps:
            task.cancel()
        await asyncio.gather(*call.pumps, return_exceptions=True)
