"""/tts/stream and /tts/interrupt: the raw-PCM streaming API for voice-chat frontends."""

from __future__ import annotations

from fastapi import APIRouter, Body, Query, Request

from ..settings import SAMPLE_RATE
from .protocol import InterruptRequest, InterruptResponse, StreamRequest
from .streaming import RacingStreamingResponse

router = APIRouter(tags=["tts"])

PCM_HEADERS = {
    "X-Sample-Rate": str(SAMPLE_RATE),
    "X-Sample-Width": "2",
    "X-Channels": "1",
    "X-Sample-Format": "s16le",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",  # tell reverse proxies not to buffer the stream
}


@router.post("/tts/stream", response_class=RacingStreamingResponse,
             responses={200: {"content": {"audio/pcm": {}}, "description": "PCM16 LE 24 kHz mono, streamed"}})
async def tts_stream(body: StreamRequest, request: Request):
    service = request.app.state.service
    prepared = await service.prepare(body.client_id, body.text, body.language, body.voice, body.instruct,
                                     body.normalize, ref_audio=body.ref_audio)
    ticket = service.open(prepared)
    headers = dict(PCM_HEADERS, **{"X-Request-Id": ticket.id})
    return RacingStreamingResponse(service.pcm(ticket), media_type="audio/pcm", headers=headers)


@router.post("/tts/interrupt", response_model=InterruptResponse)
async def tts_interrupt(request: Request, client_id: str | None = Query(None, min_length=1, max_length=128),
                        body: InterruptRequest | None = Body(None)):
    from .errors import error_response

    target = client_id or (body.client_id if body is not None else None)
    if target is None:
        return error_response(400, "invalid_request", "client_id is required (query parameter or JSON body)")
    return request.app.state.service.interrupt(target)
