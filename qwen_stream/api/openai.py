"""OpenAI-compatible speech API: POST /v1/audio/speech, and the listings OpenAI clients read
(GET /v1/models, /v1/audio/models, /v1/audio/voices). Pipecat, LiveKit Agents and Open WebUI use this
server as their OpenAI base URL.

Same streaming contract as /tts/stream: the request joins its client's queue (X-Client-Id header, else the
`user` field, else a queue of its own), /tts/interrupt ends it, and a reader that leaves stops generation. Everything
is checked before the first byte (format, speed, voice, text) so errors are clean 4xx JSON.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, Mapping
from pathlib import Path

from fastapi import APIRouter, FastAPI, Header, Request

from ..audio import FORMATS, G711, MAX_SPEED, MIN_SPEED, AudioPipeline, encode_stream
from ..config import ServerSettings
from ..raw_audio import RawFormat
from ..registry import ModelRegistry
from ..settings import BYTES_PER_FRAME
from ..speech.errors import InvalidRequest, StreamFailed
from ..speech.queues import valid_client_id
from ..speech.service import SpeechService
from ..speech.startup import Server
from ..speech.utterance import Utterance
from .openai_protocol import (
    MODEL_ALIASES,
    OPENAI_VOICES,
    AudioModelList,
    AudioVoiceList,
    ModelList,
    SpeechRequest,
)
from .state import server, speech
from .streaming import RacingStreamingResponse, utterance_response
from .tts import PCM_HEADERS, raw_headers

log = logging.getLogger("qwen_stream.api")
router = APIRouter(tags=["openai"])

_STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
_PICKED_BY_VOICE = "choosing it changes nothing: the voice decides which served model speaks"


def install(app: FastAPI, settings: ServerSettings) -> None:
    app.state.openai = OpenAISpeech(settings)
    app.include_router(router)


def served_voices(registry: ModelRegistry) -> list[str]:
    """This server's own voice names for the table and the listing: the CustomVoice speakers when such a
    model is served (known from its config, loaded or not), else 'default'.

    The one place that reads voices off the models; the voice library takes over here."""
    speakers = list(registry.info("custom_voice").speakers) if registry.serves("custom_voice") else []
    return speakers or ["default"]


def model_sources(server: Server) -> list[tuple[str, str | None]]:
    """The checkpoints this server serves, as (source, family): all of them once ready; before that, what
    --model-path says (its family is known once it loads)."""
    if server.state == "ready":
        return [(spec.source, spec.family) for spec in server.engine.registry.specs.values()]
    return [(server.settings.model_path, None)] if server.settings.model_path else []


class OpenAISpeech:
    """The OpenAI routes' state: the voice table and the listing timestamp (on app.state)."""

    def __init__(self, settings: ServerSettings):
        configured = {k.lower(): v for k, v in (settings.openai_voices or {}).items()}
        self.table: dict[str, str] = {**{k.lower(): v for k, v in OPENAI_VOICES.items()}, **configured}
        self._configured = frozenset(configured)
        self.created = int(time.time())

    # -- voices ---------------------------------------------------------------------------------------
    def voice(self, name: str, served: list[str]) -> str:
        """An OpenAI name -> our voice, through the table; any other name is ours and passes through.
        A default entry whose speaker this model lacks becomes 'default'; a configured entry is taken as
        written (a wrong one is an unknown voice, not a silent substitute)."""
        key = name.lower()
        target = self.table.get(key)
        if target is None:
            return name
        if key in self._configured:
            return target
        return {v.lower(): v for v in served}.get(target.lower(), "default")

    def voice_table(self, served: list[str]) -> dict[str, str]:
        return {name: self.voice(name, served) for name in self.table}

    # -- models ---------------------------------------------------------------------------------------
    @staticmethod
    def models(server: Server) -> list[dict]:
        """What /v1/models and /v1/audio/models list. `model` in a request picks nothing (the voice decides
        which served model speaks), so every entry says so: the checkpoints this server runs come first, with
        their family; OpenAI's names follow as aliases, since OpenAI clients offer them and send one."""
        cards: dict[str, dict] = {}
        for source, family in model_sources(server):
            # A local checkpoint is named by its directory, not its path on this machine.
            name = Path(source).name if Path(source).expanduser().is_dir() else source
            cards.setdefault(
                name,
                {
                    "id": name,
                    "kind": "checkpoint",
                    "family": family,
                    "description": f"a {family or 'Qwen3-TTS'} checkpoint served here; {_PICKED_BY_VOICE}",
                },
            )
        for alias in MODEL_ALIASES:
            cards.setdefault(
                alias,
                {
                    "id": alias,
                    "kind": "alias",
                    "family": None,
                    "description": f"OpenAI's name, accepted for client compatibility; {_PICKED_BY_VOICE}",
                },
            )
        return list(cards.values())

    # -- speech ---------------------------------------------------------------------------------------
    async def speech(
        self, service: SpeechService, body: SpeechRequest, header_client_id: str | None
    ) -> RacingStreamingResponse:
        client_id = _client_id(header_client_id, body.user)
        if not MIN_SPEED <= body.speed <= MAX_SPEED:
            raise InvalidRequest(
                "invalid_speed", f"speed must be between {MIN_SPEED} and {MAX_SPEED}, got {body.speed}"
            )
        try:
            fmt = FORMATS[body.response_format].at(body.sample_rate)
        except ValueError as e:
            raise InvalidRequest("invalid_sample_rate", str(e)) from e
        voice = self.voice(body.voice_name, served_voices(service.engine.registry))
        try:
            utterance = await service.prepare(
                client_id, body.input, body.language, voice, body.instructions, body.normalize, sampling=body.sampling()
            )
        except InvalidRequest as e:
            if e.code != "unknown_voice":
                raise
            raise InvalidRequest("unknown_voice", f"{e}; or an OpenAI voice: {', '.join(self.table)}") from e
        try:
            pipeline = AudioPipeline(fmt, body.speed)
        except BaseException:
            service.discard(utterance)  # give the client's queue place back at once
            raise
        try:
            service.open(utterance)
        except BaseException:
            pipeline.close()
            raise
        audio = encode_stream(pipeline, service.stream(utterance))
        headers = dict(_STREAM_HEADERS, **{"X-Request-Id": utterance.id})
        if body.stream_format == "sse":
            usage = _Usage(service, utterance, pipeline)
            return utterance_response(
                service, utterance, _sse(audio, usage, utterance.id), "text/event-stream", headers
            )
        if fmt.name == "pcm":
            headers.update(PCM_HEADERS)
        elif fmt.name in G711:
            headers.update(raw_headers(RawFormat(G711[fmt.name], fmt.sample_rate)))
        return utterance_response(service, utterance, audio, fmt.media_type, headers)


def _client_id(header: str | None, user: str | None) -> str:
    """The named queue, or one of its own: OpenAI's requests are independent by contract, and Pipecat or
    LiveKit send no id, so two of their sessions must not wait behind each other's sentences."""
    for where, value in (("X-Client-Id", header), ("user", user)):
        if value is not None:
            if not valid_client_id(value):
                raise InvalidRequest("invalid_request", f"{where}: 1 to 128 printable ASCII characters, no spaces")
            return value
    return f"anonymous-{uuid.uuid4().hex}"


class _Usage:
    """speech.audio.done's usage: input tokens as the models' text tokenizer (one for every Qwen3-TTS model)
    counts the normalized text they read; output tokens = codec frames made (one per 80 ms of audio, before
    any speed change). Counted after the audio, so the first byte never waits for it."""

    def __init__(self, service: SpeechService, utterance: Utterance, pipeline: AudioPipeline):
        self._service, self._utterance, self._pipeline = service, utterance, pipeline

    def __call__(self) -> dict:
        input_tokens = self._service.count_tokens(self._utterance.texts)
        output_tokens = math.ceil(self._pipeline.pcm_bytes / BYTES_PER_FRAME)
        return {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        }


def _event(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def _sse(audio: AsyncGenerator[bytes, None], usage: _Usage, request_id: str) -> AsyncGenerator[bytes, None]:
    """speech.audio.delta events (base64 of the response_format's bytes), then speech.audio.done. If
    generation fails midway, an error event ends the stream instead of done."""
    try:
        async for data in audio:
            yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
    except StreamFailed:
        log.warning("request id=%s: generation failed after the stream started", request_id)
        yield _event(
            {
                "type": "error",
                "error": {"code": "generation_failed", "message": "generation failed midway; see the server log"},
            }
        )
        return
    finally:
        await audio.aclose()
    yield _event({"type": "speech.audio.done", "usage": usage()})


# -- routes ------------------------------------------------------------------------------------------


@router.post(
    "/v1/audio/speech",
    response_class=RacingStreamingResponse,
    responses={
        200: {
            "description": "audio in response_format (streamed), or text/event-stream for sse",
            "content": {fmt.media_type: {} for fmt in FORMATS.values()} | {"text/event-stream": {}},
        }
    },
)
async def create_speech(
    body: SpeechRequest,
    request: Request,
    x_client_id: str | None = Header(None, description="the caller's queue (wins over user)"),
):
    return await request.app.state.openai.speech(speech(request), body, x_client_id)


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request):
    openai: OpenAISpeech = request.app.state.openai
    cards = openai.models(server(request))
    return {
        "object": "list",
        "data": [dict(card, object="model", created=openai.created, owned_by="qwen-stream") for card in cards],
    }


@router.get("/v1/audio/models", response_model=AudioModelList)
async def list_audio_models(request: Request):
    cards = request.app.state.openai.models(server(request))
    return {
        "models": [{"id": c["id"], "name": f"{c['id']} ({_kind_label(c)}; the voice picks the model)"} for c in cards]
    }


def _kind_label(card: dict) -> str:
    return "alias" if card["kind"] == "alias" else f"{card['family'] or 'Qwen3-TTS'} checkpoint"


@router.get("/v1/audio/voices", response_model=AudioVoiceList)
async def list_audio_voices(request: Request):
    served = served_voices(server(request).engine.registry)
    table: Mapping[str, str] = request.app.state.openai.voice_table(served)
    ours = [{"id": v, "name": v} for v in served]
    aliases = [{"id": name, "name": f"{name} ({voice})"} for name, voice in table.items()]
    return {"voices": ours + aliases}
