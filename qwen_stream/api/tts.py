"""/tts/stream and /tts/interrupt: the raw-PCM streaming API for voice-chat frontends.

Clients written for the other public Qwen3-TTS server with this API (see docs/clients.md) work unchanged:
`client_id: null` and a bare `POST /tts/interrupt` mean the default queue, `max_new_tokens` caps frames,
and the interrupt reply also carries that server's `status` and `queue` fields."""

from __future__ import annotations

from fastapi import APIRouter, Body, Query, Request

from ..settings import SAMPLE_RATE
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
    responses={200: {"content": {"audio/pcm": {}}, "description": "PCM16 LE 24 kHz mono, streamed"}},
)
async def tts_stream(body: StreamRequest, request: Request):
    service = speech(request)
    utterance = await service.prepare(
        body.client_id or DEFAULT_CLIENT,  # never None after validation; the type says what the JSON may hold
        body.text,
        body.language,
        body.voice,
        body.instruct,
        body.normalize,
        ref_audio=body.ref_audio,
        max_frames=body.max_new_tokens,
    )
    service.open(utterance)
    headers = dict(PCM_HEADERS, **{"X-Request-Id": utterance.id})
    return utterance_response(service, utterance, service.stream(utterance), "audio/pcm", headers)


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
