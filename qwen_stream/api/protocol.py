"""Request and response shapes of the /tts and /v1/normalize routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    # Unknown fields and coerced types are refused: a typo in a field name must not pass silently.
    model_config = ConfigDict(extra="forbid", strict=True)


ClientId = Field("default", min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$",
                 description="the caller's queue: its requests play in order")


class StreamRequest(_Strict):
    text: str = Field(description="what to say; normalized and split into sentences unless normalize is false")
    language: str = Field("Auto", max_length=32)
    client_id: str = ClientId
    voice: str | None = Field(None, max_length=128, description="built-in speaker name, or 'default'")
    instruct: str | None = Field(None, max_length=2000,
                                 description="voice description (VoiceDesign) or style instruction (CustomVoice 1.7B)")
    normalize: bool = True
    ref_audio: str | None = Field(None, description="legacy: base64 reference audio, cloned in x-vector mode; "
                                                    "paths and URLs are refused")


class InterruptRequest(_Strict):
    client_id: str = ClientId


class InterruptResponse(BaseModel):
    client_id: str
    interrupted: bool
    flushed: int


class NormalizeRequest(_Strict):
    text: str = Field(max_length=100_000)
    language: str = Field("Auto", max_length=32)


class SegmentOut(BaseModel):
    text: str
    language: str


class NormalizeResponse(BaseModel):
    segments: list[SegmentOut]
