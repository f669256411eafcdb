"""The speech service behind the HTTP routes: model lifecycle, request preparation, streams, health.

Knows nothing of HTTP status codes: it raises the domain errors below, which api/errors.py maps."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import unicodedata
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalog import FAMILIES_BY_DEFAULT, Family, hub_id
from .clients import ClientQueues, Ended, QueueFull, Ticket, valid_client_id
from .config import ServerSettings
from .decoder import pcm16_to_float
from .engine import AudioChunk, Engine, StreamEnd, StreamError
from .generation import SynthesisError, SynthesisRequest, Voice, check_request, valid_unicode
from .metrics import Metrics
from .model import LoadedModel, ModelLoadError
from .registry import ModelRegistry, ModelSpec, info_from_source, parse_models
from .settings import FRAME_SECONDS, SAMPLE_RATE
from .voice_library import VoiceLibrary, VoiceRecord, builtin_voices
from .voices import (
    VoiceError,
    check_reference,
    clone_prompt,
    content_hash,
    decode_base64_audio,
    read_audio,
    to_model_rate,
    wav_bytes,
)

log = logging.getLogger("qwen_stream")

__all__ = ["InvalidRequest", "NotFound", "NotReady", "QueueFull", "TTSService", "model_specs"]


class InvalidRequest(ValueError):
    """Bad input; `code` names the problem for clients (empty_text, text_too_long, unknown_voice...)."""

    status = 400

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class TooLarge(InvalidRequest):
    """An upload over its limit (the body guard refuses most before they are read; this is the rest)."""

    status = 413

    def __init__(self, message: str):
        super().__init__("too_large", message)


class NotFound(LookupError):
    def __init__(self, what: str):
        super().__init__(what)


class NotReady(RuntimeError):
    def __init__(self, state: str, detail: str | None = None):
        super().__init__(detail or f"the model is {state}; retry when GET /health answers 200")
        self.state = state


def model_specs(settings: ServerSettings) -> list[ModelSpec]:
    """The models to serve, default first: --demo (tiny checkpoints of all three families), --models,
    --model-path, or else a hub id chosen by GPU memory (>= 12 GiB: 1.7B, else 0.6B)."""
    if settings.demo:
        from .tiny import ensure_checkpoint

        order: tuple[Family, ...] = (
            ("base", *(f for f in FAMILIES_BY_DEFAULT if f != "base")) if settings.ref_audio else FAMILIES_BY_DEFAULT
        )
        paths = {family: str(ensure_checkpoint(settings.demo_cache_dir(), family)) for family in order}
        return [ModelSpec(f, p, info_from_source(p)) for f, p in paths.items()]
    if settings.models:
        return [ModelSpec(f, src, info_from_source(src, f)) for f, src in parse_models(settings.models).items()]
    source = settings.model_path
    if not source:
        import torch

        big = torch.cuda.is_available() and torch.cuda.get_device_properties(0).total_memory >= 12 * 2**30
        source = hub_id("base" if settings.ref_audio else "custom_voice", "1.7b" if big else "0.6b")
    info = info_from_source(source)
    return [ModelSpec(info.family, source, info)]


@dataclass(frozen=True)
class PreparedRequest:
    client_id: str
    segments: list[SynthesisRequest]
    text_chars: int
    received: float
    ticket: Ticket  # the place in the client's queue, taken at arrival


class TTSService:
    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.state = "loading"
        self.error: str | None = None
        self.engine: Engine | None = None
        self.clients: ClientQueues | None = None
        self.library: VoiceLibrary | None = None
        self.default_family: str | None = None
        self.default_voice: Voice | None = None
        self._legacy_prompts: OrderedDict[str, object] = OrderedDict()
        self._decoding = asyncio.Semaphore(REFERENCE_DECODES)
        self.metrics = Metrics(
            active_streams=lambda: self.clients.active if self.clients else 0,
            queue_depth=lambda: self.clients.waiting if self.clients else 0,
        )

    @property
    def model(self) -> LoadedModel | None:
        """The default family's model (loaded at start)."""
        return self.engine.model if self.engine is not None else None

    @property
    def registry(self) -> ModelRegistry:
        assert self.engine is not None  # set by start(); requests arrive once the service is ready
        return self.engine.registry

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._load)
        except (ModelLoadError, SynthesisError, VoiceError, ValueError, OSError) as e:
            self.state, self.error = "failed", str(e)
            log.error("model failed to load: %s", e)
            return
        except Exception as e:  # e.g. out of GPU memory: /health must say so, not "loading" forever
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"
            log.exception("model failed to load")
            return
        assert self.engine is not None  # _load() set it
        self.clients = ClientQueues(
            self.engine,
            self.settings.max_queue,
            max_ahead_frames=math.ceil(self.settings.max_buffer_seconds / FRAME_SECONDS),
            send_timeout=self.settings.send_timeout,
            max_clients=self.settings.max_clients,
        )
        self.state = "ready"
        log.info(
            "ready: %s%s",
            self.model.describe() if self.model else self.registry.families,
            " (demo checkpoints: random weights, audio is noise)" if self.settings.demo else "",
        )

    def _load(self) -> None:
        import normalization

        started = time.perf_counter()
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        specs = model_specs(self.settings)
        engine_settings = self.settings.engine(specs[0].source)
        registry = ModelRegistry(specs, engine_settings.model, self.settings.max_loaded_models)
        self.engine = Engine(registry, engine_settings)
        speakers = registry.info("custom_voice").speakers if registry.serves("custom_voice") else ()
        self.library = VoiceLibrary(self.settings.voices_root(), builtin_voices(speakers))
        self.default_family, self.default_voice = self.engine.run_task(self._default_voice).result()
        registry.default_family = self.default_family
        normalization.warmup()
        if self.default_voice is not None:
            frames = self.settings.first_chunk_size + 2 * self.settings.chunk_size
            self.engine.warmup(
                SynthesisRequest("Hello.", "English", self.default_voice, max_frames=frames, family=self.default_family)
            )
        log.info("loaded and warmed up in %.1f s", time.perf_counter() - started)

    def _default_voice(self, registry: ModelRegistry) -> tuple[str, Voice | None]:
        """Runs on the engine thread: loads the default model (and builds the --ref-audio clone)."""
        if self.settings.ref_audio:
            if not registry.serves("base"):
                raise ModelLoadError("--ref-audio clones a voice: it needs a Base model")
            samples, rate = read_audio(Path(self.settings.ref_audio).expanduser().read_bytes())
            return "base", Voice(clone=clone_prompt(registry.get("base"), samples, rate, self.settings.ref_text))
        for family in FAMILIES_BY_DEFAULT:
            if registry.serves(family):
                model = registry.get(family)
                if family == "custom_voice":
                    speaker = "Vivian" if "Vivian" in model.speakers else model.speakers[0]
                    return family, Voice(speaker=speaker)
                if family == "voice_design":
                    return family, Voice(instruct="")
                return family, None  # a Base model without --ref-audio: voices come from the library
        raise ModelLoadError("no model to serve")

    async def stop(self) -> None:
        if self.clients is not None:
            self.clients.shutdown()
        if self.engine is not None:
            await asyncio.to_thread(self.engine.close)

    def require_ready(self) -> None:
        if self.state != "ready":
            raise NotReady(self.state, self.error)

    # -- requests -------------------------------------------------------------------------------------
    async def resolve_voice(
        self, name: str | None, instruct: str | None, ref_audio: str | None = None
    ) -> tuple[str, Voice]:
        """A request's voice -> (the family that speaks it, the Voice). Raises InvalidRequest."""
        registry = self.registry
        instruct = instruct or None
        if ref_audio is not None:
            if name is not None:
                raise InvalidRequest("invalid_request", "give either voice or ref_audio, not both")
            if instruct:
                raise InvalidRequest("instruct_unsupported", "a cloned voice (Base model) cannot follow instructions")
            return "base", Voice(clone=await self._legacy_clone(ref_audio))
        if name is None or name.lower() == "default":
            if self.default_voice is None:
                raise InvalidRequest("unknown_voice", "this server has no default voice; name one from /v1/voices")
            family, voice = self.default_family, self.default_voice
            assert family is not None  # set together with the default voice
            if instruct:
                voice = Voice(speaker=voice.speaker, instruct=instruct, clone=voice.clone)
            self._check_instruct(family, voice)
            return family, voice
        from .voice_library import BrokenVoice

        assert self.library is not None
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
        if not registry.serves(record.family):
            raise InvalidRequest("unknown_voice", f"voice {name!r} needs a {record.family} model, not served here")
        self._check_instruct(record.family, voice)
        return record.family, voice

    def _check_instruct(self, family: str, voice: Voice) -> None:
        if voice.instruct and family != "voice_design" and not self.registry.info(family).accepts_instruct:
            what = "a cloned voice (Base model)" if family == "base" else "this CustomVoice model (0.6B)"
            raise InvalidRequest(
                "instruct_unsupported",
                f"{what} cannot follow instructions"
                + ("; CustomVoice 1.7B and VoiceDesign can" if family != "voice_design" else ""),
            )

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

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 2**20)

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
            assert self.engine is not None
            future = self.engine.run_task(
                lambda registry: clone_prompt(registry.get("base"), samples, SAMPLE_RATE, transcript)
            )
            return await asyncio.wrap_future(future)
        except VoiceError as e:
            raise InvalidRequest("invalid_audio", str(e)) from e

    # -- the voice library ----------------------------------------------------------------------------
    def voices(self) -> list[VoiceRecord]:
        self.require_ready()
        assert self.library is not None
        return [v for v in self.library.list() if self.registry.serves(v.family)]

    def voice(self, voice_id: str) -> VoiceRecord:
        self.require_ready()
        assert self.library is not None
        record = self.library.get(voice_id)
        if record is None:
            damage = self.library.broken_reason(voice_id)
            raise NotFound(f"no voice {voice_id!r}" + (f" (it is damaged: {damage})" if damage else ""))
        return record

    async def add_voice(
        self, data: bytes, name: str, transcript: str | None, mode: str | None, language: str | None
    ) -> VoiceRecord:
        """An uploaded reference -> a stored cloned voice. Nothing is stored unless every check passes."""
        self.require_ready()
        if not self.registry.serves("base"):
            raise InvalidRequest("unsupported", "voice cloning needs a Base model: start with --models base:0.6b,...")
        transcript = (transcript or "").strip() or None
        mode = mode or ("icl" if transcript else "xvector")
        if mode == "icl" and not transcript:
            raise InvalidRequest("invalid_request", "mode icl needs the transcript of the reference audio")
        if len(data) > self.max_upload_bytes:
            raise TooLarge(f"upload exceeds {self.settings.max_upload_mb:g} MiB")
        language = self._language(language)
        samples = await self._decode_reference(data)
        prompt = await self._build_prompt(samples, transcript if mode == "icl" else None)
        assert self.library is not None
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

    async def design_voice(self, name: str, description: str, sample_text: str, language: str) -> VoiceRecord:
        """VoiceDesign speaks the sample; the Base model turns that clip into a reusable clone prompt."""
        import normalization

        self.require_ready()
        for family in ("voice_design", "base"):
            if not self.registry.serves(family):
                raise InvalidRequest(
                    "unsupported",
                    "designing a voice needs a VoiceDesign and a Base model (--models voice_design:1.7b,base:1.7b)",
                )
        check_text(description, "description")
        check_text(sample_text, "sample_text")
        language = self._language(language)
        segments = await asyncio.wrap_future(normalization.normalize_in_worker(sample_text, language))
        if not segments:
            raise InvalidRequest("empty_text", "sample_text has nothing to speak")
        spoken = " ".join(s.text for s in segments)
        request = SynthesisRequest(spoken, segments[0].language, Voice(instruct=description), family="voice_design")
        assert self.engine is not None and self.library is not None
        job, events = self.engine.submit_async(request)
        pcm = bytearray()
        try:
            while True:
                event = await events.get()
                if isinstance(event, AudioChunk):
                    pcm += event.pcm
                elif isinstance(event, StreamError):
                    raise event.error
                elif isinstance(event, StreamEnd):
                    break
        finally:
            job.cancel()
        samples = pcm16_to_float(bytes(pcm))
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

    async def delete_voice(self, voice_id: str) -> None:
        """Damaged voices can be deleted too: that is how an operator clears them."""
        self.require_ready()
        assert self.library is not None
        record = self.library.get(voice_id)
        if record is not None and record.kind == "builtin":
            raise InvalidRequest("invalid_request", f"{voice_id!r} is a built-in voice and cannot be deleted")
        if not await asyncio.to_thread(self.library.delete, voice_id):  # renames and removes files
            raise NotFound(f"no voice {voice_id!r}")

    @staticmethod
    def _language(language: str | None) -> str:
        import normalization

        try:
            return normalization.canonical_language(language or "Auto")
        except normalization.UnsupportedLanguage as e:
            raise InvalidRequest("unknown_language", str(e)) from e

    def check_input_text(self, text: str) -> None:
        """What any text route accepts: speakable, valid Unicode, within --max-text-chars."""
        check_text(text, "text")
        if len(text) > self.settings.max_text_chars:
            raise InvalidRequest(
                "text_too_long", f"text has {len(text)} characters; the limit is {self.settings.max_text_chars}"
            )

    async def prepare(
        self,
        client_id: str,
        text: str,
        language: str,
        voice: str | None,
        instruct: str | None,
        normalize: bool,
        ref_audio: str | None = None,
        max_frames: int | None = None,
    ) -> PreparedRequest:
        """Takes the client's place in line at arrival, then validates and normalizes. Raises InvalidRequest
        (the place is given back). Follow with open(), or discard() if the request will not be served."""
        received = time.perf_counter()
        self.require_ready()
        check_client_id(client_id)
        self.check_input_text(text)
        if instruct is not None:
            check_text(instruct, "instruct", required=False)
        assert self.clients is not None
        ticket = self.clients.reserve(client_id, len(text))
        try:
            requests = await self._segments(text, language, voice, instruct, normalize, ref_audio, max_frames)
        except BaseException:
            self.clients.cancel(ticket, "rejected")
            raise
        ticket.stats.received = received
        return PreparedRequest(client_id, requests, len(text), received, ticket)

    async def _segments(
        self,
        text: str,
        language: str,
        voice: str | None,
        instruct: str | None,
        normalize: bool,
        ref_audio: str | None,
        max_frames: int | None = None,
    ) -> list[SynthesisRequest]:
        """max_frames: the client's cap per sentence; it only shortens (the server's budget still bounds it)."""
        import normalization

        language = self._language(language)
        family, chosen = await self.resolve_voice(voice, instruct, ref_audio)
        segments = await asyncio.wrap_future(normalization.normalize_in_worker(text, language, enable_tn=normalize))
        if not segments:
            raise InvalidRequest("empty_text", "text has nothing to speak")
        assert self.engine is not None
        budget = self.engine.settings.budget
        requests = [
            SynthesisRequest(
                text=s.text,
                language=s.language,
                voice=chosen,
                family=family,
                max_frames=None if max_frames is None else min(max_frames, budget.for_text(s.text)),
            )
            for s in segments
        ]
        for request in requests:
            try:
                check_request(self.registry.info(family), request)
            except SynthesisError as e:
                raise InvalidRequest("invalid_request", str(e)) from e
        return requests

    def open(self, prepared: PreparedRequest) -> Ticket:
        """Lets the prepared utterance start when its turn in the client's queue comes."""
        assert self.clients is not None
        self.clients.fill(prepared.ticket, prepared.segments)
        return prepared.ticket

    def discard(self, prepared: PreparedRequest) -> None:
        """Gives back the queue place of a prepared request that will not be opened."""
        assert self.clients is not None
        self.clients.cancel(prepared.ticket, "rejected")

    async def pcm(self, ticket: Ticket) -> AsyncGenerator[bytes, None]:
        """The stream's body: PCM as it is made. A reader that leaves cancels the ticket (finally)."""
        held: list[bytes] = []
        pre_buffer = self.settings.pre_buffer
        ended: Ended | None = None
        try:
            async for item in ticket.events():
                if isinstance(item, AudioChunk):
                    if len(held) < pre_buffer:
                        held.append(item.pcm)
                        if len(held) < pre_buffer:
                            continue
                        data, held = b"".join(held), []
                        pre_buffer = 0
                    else:
                        data = item.pcm
                    if ticket.stats.first_audio is None:
                        ticket.stats.first_audio = time.perf_counter()
                    yield data
                else:
                    ended = item
            if held:
                if ticket.stats.first_audio is None:
                    ticket.stats.first_audio = time.perf_counter()
                yield b"".join(held)
            if ended is not None and ended.outcome in ("error", "stalled"):
                # After the first byte there is no status code left to send: the connection is cut instead
                # of ending the body, so the client cannot take a truncated stream for a whole one.
                raise StreamFailed(ticket.id) from ended.error
        finally:
            if not ticket.ended:
                assert self.clients is not None
                self.clients.cancel(ticket, "disconnected")

    def finished(self, ticket: Ticket) -> None:
        """The response has ended (its last byte sent, or cut): one log line and the metrics, once. Not at the
        end of generation: an encoder may still hold the audio (FLAC), and a reader may still stall."""
        if not ticket.recorded:
            ticket.recorded = True
            self._record(ticket)

    def stalled(self, ticket: Ticket) -> None:
        """Its reader took nothing for --send-timeout seconds: stop its work as for a disconnect."""
        log.warning(
            "request id=%s client=%s: the reader took nothing for %g s; dropping it",
            ticket.id,
            ticket.client_id,
            self.settings.send_timeout,
        )
        assert self.clients is not None
        self.clients.stalled(ticket)

    def interrupt(self, client_id: str) -> dict:
        self.require_ready()
        check_client_id(client_id)
        assert self.clients is not None
        interrupted, flushed = self.clients.interrupt(client_id)
        if interrupted or flushed:
            self.metrics.interrupts.inc()
        log.info("interrupt client=%s interrupted=%s flushed=%d", client_id, interrupted, flushed)
        return {"client_id": client_id, "interrupted": interrupted, "flushed": flushed}

    def _record(self, ticket: Ticket) -> None:
        s = ticket.stats
        ttfb = None if s.first_audio is None else s.first_audio - s.received
        outcome = ticket.outcome or "disconnected"
        assert ticket.segments is not None  # recorded once its response ended: it was filled
        self.metrics.requests.labels(outcome=outcome).inc()
        if ttfb is not None:
            self.metrics.ttfb.observe(ttfb)
        if s.rtf is not None:
            self.metrics.rtf.observe(s.rtf)
        self.metrics.audio_seconds.inc(s.audio_seconds)
        log.info(
            "request id=%s client=%s chars=%d segments=%d frames=%d ttfb_ms=%s engine_ttfb_ms=%s rtf=%s outcome=%s",
            ticket.id,
            ticket.client_id,
            ticket.text_chars,
            len(ticket.segments),
            s.frames,
            _ms(ttfb),
            _ms(s.engine_ttfb),
            "-" if s.rtf is None else f"{s.rtf:.2f}",
            outcome,
        )

    # -- health ---------------------------------------------------------------------------------------
    def health(self) -> tuple[int, dict]:
        if self.state != "ready":
            body: dict[str, Any] = {"status": self.state}
            if self.error:
                body["error"] = self.error
            return 503, body
        loaded = {m.family for m in self.registry.loaded()}
        assert self.clients is not None and self.library is not None
        body = {
            "status": "ready",
            "model": self.model.describe() if self.model else None,
            "models": [
                {"family": f, "source": spec.source, "loaded": f in loaded} for f, spec in self.registry.specs.items()
            ],
            "default_voice": self.default_family,
            "demo": self.settings.demo,
            "active_streams": self.clients.active,
            "queue_depth": self.clients.waiting,
            "clients": self.clients.client_count,
            "broken": self.library.broken(),  # stored voices left out of the library, and why
        }
        if self.settings.demo:
            body["note"] = "demo checkpoint with random weights: the audio is noise"
        return 200, body


LEGACY_PROMPT_CACHE = 32
REFERENCE_DECODES = 2  # uploads decoded at once: bounds their memory together


def check_client_id(client_id: str) -> None:
    if not valid_client_id(client_id):
        raise InvalidRequest("invalid_request", "client_id: 1 to 128 printable ASCII characters, no spaces")


def check_text(text: str, field: str, required: bool = True) -> None:
    """Text the tokenizer can take: UTF-8 encodable (no lone surrogates from JSON's \\ud800), and with
    something to say besides spaces, controls and format characters (zero-width spaces, NULs)."""
    if not valid_unicode(text):
        raise InvalidRequest("invalid_text", f"{field} is not valid Unicode (a lone surrogate)")
    if required and all(unicodedata.category(ch)[0] in "CZ" for ch in text):
        raise InvalidRequest("empty_text", f"{field} has nothing to speak" if text else f"{field} is empty")


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


class StreamFailed(RuntimeError):
    """Generation failed after the response started."""
