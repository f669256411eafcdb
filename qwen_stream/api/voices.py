"""/v1/voices: list, clone from an upload, design from a description, fetch the reference, delete."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from pydantic import Field

from ..service import InvalidRequest, NotFound
from .protocol import _Strict

router = APIRouter(tags=["voices"])


class DesignRequest(_Strict):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field(min_length=1, max_length=2000, description="what the voice sounds like")
    sample_text: str = Field(min_length=1, max_length=500, description="what the designed voice says (1-30 s)")
    language: str = Field("Auto", max_length=32)


@router.get("/v1/voices")
async def list_voices(request: Request):
    return {"voices": [v.public() for v in request.app.state.service.voices()]}


@router.post("/v1/voices", status_code=201)
async def upload_voice(
    request: Request,
    file: UploadFile = File(description="reference audio: wav, mp3, flac or ogg, 1-30 s"),
    name: str = Form(min_length=1, max_length=100),
    transcript: str | None = Form(None, max_length=2000),
    mode: Literal["icl", "xvector"] | None = Form(None),
    language: str | None = Form(None, max_length=32),
):
    service = request.app.state.service
    data = await file.read(service.max_upload_bytes + 1)
    if not data:
        raise InvalidRequest("invalid_audio", "the uploaded file is empty")
    record = await service.add_voice(data, name.strip(), transcript, mode, language)
    return JSONResponse(record.public(), status_code=201)


@router.post("/v1/voices/design", status_code=201)
async def design_voice(body: DesignRequest, request: Request):
    record = await request.app.state.service.design_voice(body.name.strip(), body.description, body.sample_text,
                                                          body.language)
    return JSONResponse(record.public(), status_code=201)


@router.get("/v1/voices/{voice_id}")
async def get_voice(voice_id: str, request: Request):
    return request.app.state.service.voice(voice_id).public()


@router.get("/v1/voices/{voice_id}/audio")
async def voice_audio(voice_id: str, request: Request):
    service = request.app.state.service
    record = service.voice(voice_id)
    path = service.library.audio_path(record.id)
    if path is None:
        raise NotFound(f"voice {voice_id!r} has no reference audio (built-in voices have none)")
    return FileResponse(path, media_type="audio/wav", filename=f"{record.id}.wav")


@router.delete("/v1/voices/{voice_id}")
async def delete_voice(voice_id: str, request: Request):
    request.app.state.service.delete_voice(voice_id)
    return {"id": voice_id, "deleted": True}
