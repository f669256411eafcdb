"""/v1/audio/jobs: long-form speech as durable jobs (docs/jobs.md)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ..jobs.service import JobInput, JobService
from .protocol import SamplingParams
from .state import server

router = APIRouter(tags=["jobs"])


class SegmentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(max_length=100_000)
    voice: str | None = Field(None, max_length=128)
    language: str | None = Field(None, max_length=32)
    instruct: str | None = Field(None, max_length=2000)


class JobParams(SamplingParams):
    """Generation parameters per job: sampling (laid over the server's settings), the cap per sentence, and
    the language and instruction of segments that name none."""

    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int | None = Field(None, ge=1, description="cap in frames (80 ms) per sentence")
    language: str | None = Field(None, max_length=32)
    instruct: str | None = Field(None, max_length=2000)


class S3Output(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bucket: str | None = Field(None, min_length=3, max_length=63, description="default: the server's S3_BUCKET")
    key: str | None = Field(None, min_length=1, max_length=1024, description="default: qwen-stream/<job id>.<format>")
    expires: int | None = Field(None, description="seconds the presigned URL stays valid (3600)")


class JobOutput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    s3: S3Output | None = None


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, max_length=200_000)
    segments: list[SegmentIn] | None = Field(None, max_length=2000)
    script: str | None = Field(None, max_length=200_000, description="[Speaker] line, one per line")
    voices: dict[str, str] = Field(default_factory=dict, description="script speakers -> voice ids")
    voice: str | None = Field(None, max_length=128, description="the voice of segments that name none")
    model: str | None = Field(None, max_length=256, description="accepted; the voice decides the model")
    language: str = Field("Auto", max_length=32)
    output_format: Literal["wav", "mp3", "opus", "aac", "flac", "pcm", "mulaw", "alaw"] = "wav"
    sample_rate: int | None = Field(None, description="mulaw and alaw only")
    pause_ms: int = Field(300, ge=0, le=10_000, description="silence between segments")
    params: JobParams | None = None
    output: JobOutput | None = None
    normalize: bool = True


def jobs(request: Request) -> JobService:
    return server(request).jobs


@router.post("/v1/audio/jobs", status_code=202)
async def create_job(body: JobRequest, request: Request):
    params = body.params or JobParams.model_validate({})
    record = await jobs(request).submit(
        JobInput(
            text=body.text,
            segments=None if body.segments is None else [s.model_dump() for s in body.segments],
            script=body.script,
            voices=body.voices,
            voice=body.voice,
            language=params.language or body.language,
            instruct=params.instruct,
            output_format=body.output_format,
            sample_rate=body.sample_rate,
            pause_ms=body.pause_ms,
            max_new_tokens=params.max_new_tokens,
            sampling=params.sampling(),
            normalize=body.normalize,
            s3=None if body.output is None or body.output.s3 is None else body.output.s3.model_dump(),
        )
    )
    return JSONResponse({"id": record.id, "status": record.status}, status_code=202)


@router.get("/v1/audio/jobs/{job_id}")
async def get_job(job_id: str, request: Request, include_audio: bool = False):
    service = jobs(request)
    return service.public(service.get(job_id), include_audio)


@router.get("/v1/audio/jobs/{job_id}/audio")
async def job_audio(job_id: str, request: Request):
    from ..audio import FORMATS

    record, path = jobs(request).result(job_id)
    fmt = record.spec["output_format"]
    # FileResponse answers Range requests (206 with Content-Range), so players can seek and downloads resume.
    return FileResponse(path, media_type=FORMATS[fmt].media_type, filename=f"{job_id}.{fmt}")


@router.delete("/v1/audio/jobs/{job_id}")
async def delete_job(job_id: str, request: Request):
    return {"id": job_id, "result": jobs(request).delete(job_id)}
