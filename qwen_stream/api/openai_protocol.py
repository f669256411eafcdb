"""Request and response shapes of the OpenAI-compatible routes, and the OpenAI voice-name table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..audio import MAX_SPEED, MIN_SPEED
from .protocol import SamplingParams

ResponseFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm", "mulaw", "alaw"]

# OpenAI's voice names -> this server's voices, by rough gender and character (the CustomVoice speakers'
# characters are in catalog.SPEAKER_TRAITS; a test checks every value here is one of them). A model without
# a named speaker (Base, VoiceDesign, or other speakers) maps it to 'default'.
# --openai-voices overrides or adds entries.
OPENAI_VOICES: Mapping[str, str] = {
    "alloy": "Serena",
    "ash": "Ryan",
    "ballad": "Dylan",
    "cedar": "Eric",
    "coral": "Sohee",
    "echo": "Aiden",
    "fable": "Dylan",
    "marin": "Vivian",
    "nova": "Vivian",
    "onyx": "Uncle_Fu",
    "sage": "Serena",
    "shimmer": "Ono_Anna",
    "verse": "Ryan",
}

# Model ids OpenAI clients send or offer; any string is accepted in requests, and none picks a model (the
# voice does). Listed as aliases so that clients which offer or check them keep working.
MODEL_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")


class VoiceRef(BaseModel):
    """OpenAI's custom-voice form: {"id": "..."}."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(min_length=1, max_length=128)


class SpeechRequest(SamplingParams):
    # Unknown fields are refused (OpenAI refuses them too); a typo must not pass silently. The sampling fields
    # (temperature, top_k, ...) are this server's extensions, as the OpenAI SDKs send them: extra_body.
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(max_length=256, description="any string: one model serves every name (tts-1, ...)")
    input: str = Field(description="what to say; at most --max-text-chars characters")
    voice: str | VoiceRef = Field(description="an OpenAI voice name (mapped), a speaker name, or 'default'")
    instructions: str | None = Field(
        None, max_length=2000, description="voice description (VoiceDesign) or style (CustomVoice 1.7B)"
    )
    response_format: ResponseFormat = "mp3"
    speed: float = Field(1.0, description=f"{MIN_SPEED} to {MAX_SPEED}; changes tempo, keeps pitch")
    stream_format: Literal["audio", "sse"] = "audio"
    user: str | None = Field(None, max_length=128, description="the caller's queue, unless X-Client-Id is given")
    # Extensions of this server.
    language: str = Field("Auto", max_length=32)
    normalize: bool = True
    sample_rate: int | None = Field(None, description="mulaw and alaw only: 8000 (default), 16000, ... 48000")

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice


ModelKind = Literal["checkpoint", "alias"]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # Extensions (the openai SDK keeps fields it does not know): `model` in a request selects nothing, so
    # each card says what it is, a checkpoint this server runs or an OpenAI name kept as an alias.
    kind: ModelKind
    family: str | None = Field(None, description="custom_voice, base or voice_design; null for an alias")
    description: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class AudioModel(BaseModel):
    id: str
    name: str  # shown by pickers such as Open WebUI's: the id and what it is


class AudioModelList(BaseModel):
    models: list[AudioModel]


class AudioVoice(BaseModel):
    id: str
    name: str


class AudioVoiceList(BaseModel):
    voices: list[AudioVoice]
