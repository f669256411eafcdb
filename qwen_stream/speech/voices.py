"""Voices for speech: which voice a request names (resolve), per-request clones, and the voice library's
operations (list, get, clone an upload, design from a description, delete). Built once the models are loaded."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

import normalization

from ..cloning import (
    VoiceError,
    check_reference,
    clone_prompt,
    content_hash,
    decode_base64_audio,
    read_audio,
    to_model_rate,
    wav_bytes,
)
from ..config import ServerSettings
from ..decoder import pcm16_to_float
from ..engine import Engine, acollect
from ..generation import SynthesisRequest, Voice
from ..registry import ModelRegistry
from ..settings import SAMPLE_RATE
from .checks import canonical_language, check_text
from .errors import InvalidRequest, NotFound, TooLarge
from .voice_store import BrokenVoice, VoiceLibrary, VoiceRecord

LEGACY_PROMPT_CACHE = 32
DESIGN_VOICE = "design"  # reserved: the VoiceDesign model with the request's instruct as the description
REFERENCE_DECODES = 2  # uploads decoded at once: bounds their memory together


@dataclass(frozen=True)
class DefaultVoice:
    family: str
    voice: Voice | None  # None: a Base model without --ref-audio; voices come from the library


class VoiceService:
    def __init__(self, settings: ServerSettings, engine: Engine, library: VoiceLibrary, default: DefaultVoice):
        self.settings = settings
        self.engine = engine
        self.library = library
        self.default = default
        self._legacy_prompts: OrderedDict[str, object] = OrderedDict()
        self._decoding = asyncio.Semaphore(REFERENCE_DECODES)

    @property
    def registry(self) -> ModelRegistry:
        return self.engine.registry

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 2**20)

    # -- a request's voice ------------------------------------------------------------------------------
    async def resolve(self, name: str | None, instruct: str | None, ref_audio: str | None = None) -> tuple[str, Voice]:
        """A request's voice -> (the family that speaks it, the Voice). Raises InvalidRequest."""
        instruct = instruct or None
        if ref_audio is not None:
            if name is not None:
                raise InvalidRequest("invalid_request", "give either voice or ref_audio, not both")
            if instruct:
                raise InvalidRequest("instruct_unsupported", "a cloned voice (Base model) cannot follow instructions")
            return "base", Voice(clone=await self._legacy_clone(ref_audio))
        if name is None or name.lower() == "default":
            return self._default(instruct)
        if name.lower() == DESIGN_VOICE:
            return self._designed(instruct)
        record = self.library.get(name)
        if record is None:
            if (damage := self.library.broken_reason(name)) is not None:
                raise InvalidRequest("broken_voice", str(BrokenVoice(name, damage)))
            known = ", ".join(v.id for v in self.library.list()[:20])
            raise InvalidRequest("unknown_voice", f"unknown voice {name!r}; voices: {known or 'none yet'}")
        if record.kind == "builtin":
            voice = Voice(speaker=record.name, instruct=instruct)
        else:
            try:
                clone = await asyncio.to_thread(self.library.prompt, record.id)
            except BrokenVoice as e:  # its file is damaged: this request fails, the voice leaves the library
                raise InvalidRequest("broken_voice", str(e)) from e
            voice = Voice(clone=clone, instruct=instruct)
        if not self.registry.serves(record.family):
            raise InvalidRequest("unknown_voice", f"voice {name!r} needs a {record.family} model, not served here")
        self._check_instruct(record.family, voice)
        return record.family, voice

    def _designed(self, instruct: str | None) -> tuple[str, Voice]:
        """The reserved voice "design": the VoiceDesign model speaking `instruct` as the voice's description, on any
        server that serves it (a preview before a designed voice is saved)."""
        if not self.registry.serves("voice_design"):
            raise InvalidRequest("unknown_voice", f"voice {DESIGN_VOICE!r} needs a VoiceDesign model, not served here")
        if not instruct:
            raise InvalidRequest("invalid_request", f"voice {DESIGN_VOICE!r} speaks a description: give instruct")
        return "voice_design", Voice(instruct=instruct)

    def _default(self, instruct: str | None) -> tuple[str, Voice]:
        voice = self.default.voice
        if voice is None:
            raise InvalidRequest("unknown_voice", "this server has no default voice; name one from /v1/voices")
        if instruct:
            voice = Voice(speaker=voice.speaker, instruct=instruct, clone=voice.clone)
        self._check_instruct(self.default.family, voice)
        return self.default.family, voice

    def _check_instruct(self, family: str, voice: Voice) -> None:
        if voice.instruct and family != "voice_design" and not self.registry.info(family).accepts_instruct:
            what = "a cloned voice (Base model)" if family == "base" else "this CustomVoice model (0.6B)"
            raise InvalidRequest(
                "instruct_unsupported",
                f"{what} cannot follow instructions"
                + ("; CustomVoice 1.7B and VoiceDesign can" if family != "voice_design" else ""),
            )

    async def session_voice(self, ref_audio: str, ref_text: str | None, x_vector_only: bool) -> tuple[str, Voice]:
        """A voice cloned for one connection from base64 reference audio (never a path or URL): ICL with the
        transcript unless `x_vector_only`. Raises InvalidRequest."""
        if not self.registry.serves("base"):
            raise InvalidRequest("unsupported", "cloning a voice needs a Base model, not served here")
        transcript = (ref_text or "").strip() or None
        if not x_vector_only and transcript is None:
            raise InvalidRequest("invalid_request", "ref_text is needed unless x_vector_only is true")
        if transcript is not None:
            check_text(transcript, "ref_text")
        try:
            data = decode_base64_audio(ref_audio, self.max_upload_bytes)
        except VoiceError as e:
            raise InvalidRequest("invalid_ref_audio", str(e)) from e
        samples = await self._decode_reference(data)
        prompt = await self._build_prompt(samples, None if x_vector_only else transcript)
        return "base", Voice(clone=prompt)

    async def _legacy_clone(self, ref_audio: str):
        """Per-request base64 reference audio: an x-vector clone, cached by content hash (bounded LRU)."""
        if not self.registry.serves("base"):
            raise InvalidRequest("unknown_voice", "ref_audio needs a Base model, not served here")
        try:
            data = decode_base64_audio(ref_audio, self.max_upload_bytes)
        except VoiceError as e:
            raise InvalidRequest("invalid_ref_audio", str(e)) from e
        key = content_hash(data)
        if key in self._legacy_prompts:
            self._legacy_prompts.move_to_end(key)
            return self._legacy_prompts[key]
        prompt = await self._build_prompt(await self._decode_reference(data), transcript=None)
        self._legacy_prompts[key] = prompt
        while len(self._legacy_prompts) > LEGACY_PROMPT_CACHE:
            self._legacy_prompts.popitem(last=False)
        return prompt

    async def _decode_reference(self, data: bytes):
        """Uploaded audio bytes -> checked mono samples at 24 kHz. Raises InvalidRequest."""
        try:
            async with self._decoding:  # each decode may hold up to 30 s of audio at the file's rate
                raw, rate = await asyncio.to_thread(read_audio, data)
            check_reference(raw, rate)
        except VoiceError as e:
            raise InvalidRequest("invalid_audio", str(e)) from e
        return await asyncio.to_thread(to_model_rate, raw, rate)

    async def _build_prompt(self, samples, transcript: str | None):
        """24 kHz samples -> clone prompt (ICL with a transcript, else x-vector), on the engine thread."""
        try:
            check_reference(samples, SAMPLE_RATE)
            future = self.engine.run_task(
                lambda registry: clone_prompt(registry.get("base"), samples, SAMPLE_RATE, transcript)
            )
            return await asyncio.wrap_future(future)
        except VoiceError as e:
            raise InvalidRequest("invalid_audio", str(e)) from e

    # -- the library ------------------------------------------------------------------------------------
    def list(self) -> list[VoiceRecord]:
        return [v for v in self.library.list() if self.registry.serves(v.family)]

    def get(self, voice_id: str) -> VoiceRecord:
        record = self.library.get(voice_id)
        if record is None:
            damage = self.library.broken_reason(voice_id)
            raise NotFound(f"no voice {voice_id!r}" + (f" (it is damaged: {damage})" if damage else ""))
        return record

    async def add(
        self, data: bytes, name: str, transcript: str | None, mode: str | None, language: str | None
    ) -> VoiceRecord:
        """An uploaded reference -> a stored cloned voice. Nothing is stored unless every check passes."""
        if not self.registry.serves("base"):
            raise InvalidRequest("unsupported", "voice cloning needs a Base model: start with --models base:0.6b,...")
        transcript = (transcript or "").strip() or None
        mode = mode or ("icl" if transcript else "xvector")
        if mode == "icl" and not transcript:
            raise InvalidRequest("invalid_request", "mode icl needs the transcript of the reference audio")
        if len(data) > self.max_upload_bytes:
            raise TooLarge(f"upload exceeds {self.settings.max_upload_mb:g} MiB")
        language = canonical_language(language)
        samples = await self._decode_reference(data)
        prompt = await self._build_prompt(samples, transcript if mode == "icl" else None)
        return await asyncio.to_thread(
            self.library.add,
            name=name,
            kind="cloned",
            family="base",
            prompt=prompt,
            reference_wav=wav_bytes(samples),
            language=language,
            ref_text=transcript if mode == "icl" else None,
        )

    async def design(self, name: str, description: str, sample_text: str, language: str) -> VoiceRecord:
        """VoiceDesign speaks the sample; the Base model turns that clip into a reusable clone prompt."""
        for family in ("voice_design", "base"):
            if not self.registry.serves(family):
                raise InvalidRequest(
                    "unsupported",
                    "designing a voice needs a VoiceDesign and a Base model (--models voice_design:1.7b,base:1.7b)",
                )
        check_text(description, "description")
        check_text(sample_text, "sample_text")
        language = canonical_language(language)
        segments = await asyncio.wrap_future(normalization.normalize_in_worker(sample_text, language))
        if not segments:
            raise InvalidRequest("empty_text", "sample_text has nothing to speak")
        spoken = " ".join(s.text for s in segments)
        request = SynthesisRequest(spoken, segments[0].language, Voice(instruct=description), family="voice_design")
        pcm, _ = await acollect(self.engine.astream(request))  # raises the job's error; leaving cancels it
        samples = pcm16_to_float(pcm)
        prompt = await self._build_prompt(samples, spoken)
        return await asyncio.to_thread(
            self.library.add,
            name=name,
            kind="designed",
            family="base",
            prompt=prompt,
            reference_wav=wav_bytes(samples),
            language=language if language != "Auto" else None,
            ref_text=spoken,
            description=description,
        )

    async def rename(self, voice_id: str, name: str) -> VoiceRecord:
        record = self.get(voice_id)
        if record.kind == "builtin":
            raise InvalidRequest("invalid_request", f"{voice_id!r} is a built-in voice and cannot be renamed")
        renamed = await asyncio.to_thread(self.library.rename, record.id, name)
        if renamed is None:  # deleted meanwhile
            raise NotFound(f"no voice {voice_id!r}")
        return renamed

    async def delete(self, voice_id: str) -> None:
        """Damaged voices can be deleted too: that is how an operator clears them."""
        record = self.library.get(voice_id)
        if record is not None and record.kind == "builtin":
            raise InvalidRequest("invalid_request", f"{voice_id!r} is a built-in voice and cannot be deleted")
        if not await asyncio.to_thread(self.library.delete, voice_id):  # renames and removes files
            raise NotFound(f"no voice {voice_id!r}")
