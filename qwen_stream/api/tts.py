"""/tts/stream and /tts/interrupt: the raw-PCM streaming API for voice-chat frontends.

Clients written for the other public Qwen3-TTS server with this API (see docs/clients.md) work unchanged:
`client_id: null` and a bare `POST /tts/interrupt` mean the default queue, `max_new_tokens` caps frames,
and the interrupt reply also carries that server's `status` and `queue` fields."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

from fastapi import APIRouter, Body, Query, Request

from ..raw_audio import RawConverter, RawFormat
from ..settings import SAMPLE_RATE
from ..speech.errors import InvalidRequest
from ..speech.queues import CLIENT_ID_PATTERN, DEFAULT_CLIENT
from .protocol import InterruptRequest, InterruptResponse, StreamRequest
from .state import speech
from .streaming import RacingStreamingResponse, utterance_response

router = APIRouter(tags=["tts"])

PCM_HEADERS = {
    "X-Sample-Rate": str(SAMPLE_RATE),
    "X-Sample-Width": "2",
    "X-Channels": "1",
    "X-Sample-Format": "s16le",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # tell reverse proxies not to buffer the stream
}


@router.post(
    "/tts/stream",
    response_class=RacingStreamingResponse,
    responses={
        200: {
            "content": {"audio/pcm": {}, "audio/basic": {}, "audio/x-alaw-basic": {}},
            "description": "raw mono samples, streamed: PCM16 LE 24 kHz unless encoding and sample_rate say otherwise",
        }
    },
)
async def tts_stream(body: StreamRequest, request: Request):
    service = speech(request)
    try:
        raw = RawFormat(body.encoding, body.sample_rate)
    except ValueError as e:
        raise InvalidRequest("invalid_output_format", str(e)) from e
    utterance = await service.prepare(
        body.client_id or DEFAULT_CLIENT,  # never None after validation; the type says what the JSON may hold
        body.text,
        body.language,
        body.voice,
        body.instruct,
        body.normalize,
        ref_audio=body.ref_audio,
        max_frames=body.max_new_tokens,
        sampling=body.sampling(),
    )
    service.open(utterance)
    headers = dict(raw_headers(raw), **{"X-Request-Id": utterance.id})
    body_stream = service.stream(utterance)
    if raw != RawFormat():
        body_stream = converted(body_stream, RawConverter(raw))
    return utterance_response(service, utterance, body_stream, RAW_MEDIA_TYPES[raw.encoding], headers)


RAW_MEDIA_TYPES = {
    "pcm_s16le": "audio/pcm",
    "pcm_f32le": "audio/pcm",
    "pcm_mulaw": "audio/basic",
    "pcm_alaw": "audio/x-alaw-basic",
}


def raw_headers(raw: RawFormat) -> dict[str, str]:
    """The stream's format, stated: what a client needs to play headerless samples."""
    return dict(
        PCM_HEADERS,
        **{
            "X-Sample-Rate": str(raw.sample_rate),
            "X-Sample-Width": str(raw.bytes_per_sample),
            "X-Sample-Format": raw.encoding.removeprefix("pcm_"),
        },
    )


async def converted(pcm: AsyncGenerator[bytes, None], converter: RawConverter) -> AsyncGenerator[bytes, None]:
    """The stream in another raw format; closing it closes the source (its cleanup cancels the work)."""
    async with contextlib.aclosing(pcm):
        async for chunk in pcm:
            if data := converter.push(chunk):
                yield data
    if tail := converter.finish():
        yield tail


@router.post("/tts/interrupt", response_model=InterruptResponse)
async def tts_interrupt(
    request: Request,
    client_id: str | None = Query(None, min_length=1, max_length=128, pattern=CLIENT_ID_PATTERN),
    body: InterruptRequest | None = Body(None),
):
    # The query wins, then the JSON body; with neither (a bare POST, as the other server's clients send it)
    # the default queue is meant, the same one a /tts/stream request without client_id joins.
    target = client_id or (body.client_id if body is not None else None) or DEFAULT_CLIENT
    return with_peer_fields(speech(request).interrupt(target))


def with_peer_fields(reply: dict) -> dict:
    """Adds the other server's words for the same facts: `status` interrupted or idle, `queue` flushed."""
    return dict(reply, status="interrupted" if reply["interrupted"] else "idle", queue="flushed")
