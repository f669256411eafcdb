"""Request and response shapes of the /tts and /v1/normalize routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..settings import SamplingSettings
from ..speech.queues import CLIENT_ID_PATTERN, DEFAULT_CLIENT


class _Strict(BaseModel):
    # Unknown fields and coerced types are refused: a typo in a field name must not pass silently.
    model_config = ConfigDict(extra="forbid", strict=True)


ClientId = Field(
    DEFAULT_CLIENT,
    min_length=1,
    max_length=128,
    pattern=CLIENT_ID_PATTERN,
    description="the caller's queue: its requests play in order; null means default",
)


class _NamesClient(_Strict):
    # Clients written for the other public server with this API may send `"client_id": null` (its model
    # types the field Optional): that is the default queue, never a queue named "None".
    @field_validator("client_id", mode="after", check_fields=False)
    @classmethod
    def _null_is_default(cls, value: str | None) -> str:
        return DEFAULT_CLIENT if value is None else value


class SamplingParams(BaseModel):
    """A request's own sampling settings, laid over the server's (--temperature and friends; unset: the
    server's, else the checkpoint's). Ranges are checked by the engine's settings, one place for every route."""

    temperature: float | None = Field(None, description="talker temperature, > 0 and <= 10")
    top_k: int | None = Field(None, description="talker top-k; 0: none")
    top_p: float | None = Field(None, description="talker nucleus, > 0 and <= 1")
    repetition_penalty: float | None = Field(None, description="> 0 and <= 10; 1: none")
    do_sample: bool | None = Field(None, description="false: the talker is greedy")
    subtalker_temperature: float | None = Field(None, description="code predictor temperature")
    subtalker_top_k: int | None = Field(None, description="code predictor top-k")
    subtalker_top_p: float | None = Field(None, description="code predictor nucleus")

    def sampling(self) -> SamplingSettings | None:
        """The settings this request gave, or None when it gave none (then it batches with anyone)."""
        given = {name: getattr(self, name) for name in SAMPLING_FIELDS if getattr(self, name) is not None}
        return SamplingSettings(**given) if given else None


SAMPLING_FIELDS = tuple(SamplingSettings.__dataclass_fields__)


class StreamRequest(_NamesClient, SamplingParams):
    text: str = Field(description="what to say; normalized and split into sentences unless normalize is false")
    language: str = Field("Auto", max_length=32)
    client_id: str | None = ClientId
    voice: str | None = Field(None, max_length=128, description="built-in speaker name, or 'default'")
    instruct: str | None = Field(
        None, max_length=2000, description="voice description (VoiceDesign) or style instruction (CustomVoice 1.7B)"
    )
    normalize: bool = True
    ref_audio: str | None = Field(
        None, description="legacy: base64 reference audio, cloned in x-vector mode; paths and URLs are refused"
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        description="cap on codec frames (80 ms each) per sentence; the server's "
        "own budget still applies, so it can only shorten",
    )
    encoding: Literal["pcm_s16le", "pcm_f32le", "pcm_mulaw", "pcm_alaw"] = Field(
        "pcm_s16le", description="raw sample encoding of the stream; G.711 (mulaw, alaw) for telephony"
    )
    sample_rate: int = Field(24_000, description="8000, 16000, 22050, 24000, 44100 or 48000 Hz")


class InterruptRequest(_NamesClient):
    client_id: str | None = ClientId


class InterruptResponse(BaseModel):
    client_id: str
    interrupted: bool = Field(description="a running utterance was stopped")
    flushed: int = Field(description="queued utterances dropped")
    # The same facts in the other server's words, so its clients read the reply they expect.
    status: Literal["interrupted", "idle"] = Field(
        description="interrupted when a running utterance was stopped, else idle"
    )
    queue: Literal["flushed"] = Field("flushed", description="always flushed: the queue is emptied either way")


class NormalizeRequest(_Strict):
    text: str = Field(max_length=100_000)
    language: str = Field("Auto", max_length=32)
    normalize: bool = Field(
        True,
        description="false: only split into sentences and pick each one's language (no character changes): "
        "the sentences a client sends one by one, as an LLM frontend does",
    )


class SegmentOut(BaseModel):
    text: str
    language: str


class NormalizeResponse(BaseModel):
    segments: list[SegmentOut]
