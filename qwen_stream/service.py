"""The speech service behind the HTTP routes: model lifecycle, request preparation, streams, health.

Knows nothing of HTTP status codes: it raises the domain errors below, which api/errors.py maps."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from .clients import ClientQueues, Ended, QueueFull, Ticket
from .config import ServerSettings
from .engine import AudioChunk, Engine
from .generation import SynthesisError, SynthesisRequest, Voice, check_request
from .metrics import Metrics
from .model import LoadedModel, ModelLoadError, load_model

log = logging.getLogger("qwen_stream")

__all__ = ["InvalidRequest", "NotReady", "QueueFull", "TTSService", "resolve_model_path"]


class InvalidRequest(ValueError):
    """Bad input; `code` names the problem for clients (empty_text, text_too_long, unknown_voice...)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class NotReady(RuntimeError):
    def __init__(self, state: str, detail: str | None = None):
        super().__init__(detail or f"the model is {state}; retry when GET /health answers 200")
        self.state = state


def resolve_model_path(settings: ServerSettings) -> str:
    """--demo: a tiny local checkpoint; --model-path as given; else a hub id chosen by GPU memory."""
    if settings.demo:
        from .tiny import ensure_checkpoint

        return str(ensure_checkpoint(settings.demo_cache_dir(), "base" if settings.ref_audio else "custom_voice"))
    if settings.model_path:
        return settings.model_path
    import torch

    big = torch.cuda.is_available() and torch.cuda.get_device_properties(0).total_memory >= 12 * 2**30
    family = "Base" if settings.ref_audio else "CustomVoice"
    return f"Qwen/Qwen3-TTS-12Hz-{'1.7B' if big else '0.6B'}-{family}"


@dataclass(frozen=True)
class PreparedRequest:
    client_id: str
    segments: list[SynthesisRequest]
    text_chars: int
    received: float


class TTSService:
    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.state = "loading"
        self.error: str | None = None
        self.model: LoadedModel | None = None
        self.engine: Engine | None = None
        self.clients: ClientQueues | None = None
        self.default_voice: Voice | None = None
        self.metrics = Metrics(active_streams=lambda: self.clients.active if self.clients else 0,
                               queue_depth=lambda: self.clients.waiting if self.clients else 0)

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._load)
        except (ModelLoadError, SynthesisError, ValueError, OSError) as e:
            self.state, self.error = "failed", str(e)
            log.error("model failed to load: %s", e)
            return
        self.clients = ClientQueues(self.engine, self.settings.max_queue)
        self.state = "ready"
        log.info("ready: %s%s", self.model.describe(), " (demo checkpoint: random weights, audio is noise)"
                 if self.settings.demo else "")

    def _load(self) -> None:
        import normalization

        started = time.perf_counter()
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        path = resolve_model_path(self.settings)
        engine_settings = self.settings.engine(path)
        self.model = load_model(engine_settings.model)
        self.default_voice = self._default_voice(self.model)
        self.engine = Engine(self.model, engine_settings)
        normalization.warmup()
        warm = SynthesisRequest("Hello.", "English", self.default_voice,
                                max_frames=self.settings.first_chunk_size + 2 * self.settings.chunk_size)
        self.engine.warmup(warm)
        log.info("loaded and warmed up in %.1f s", time.perf_counter() - started)

    def _default_voice(self, model: LoadedModel) -> Voice:
        if model.family == "custom_voice":
            return Voice(speaker=model.speakers[0] if "Vivian" not in model.speakers else "Vivian")
        if model.family == "voice_design":
            return Voice(instruct="")
        if not self.settings.ref_audio:
            raise ModelLoadError("a Base model clones a voice: give --ref-audio (and --ref-text for ICL mode)")
        from .voices import clone_prompt, read_audio

        samples, rate = read_audio(Path(self.settings.ref_audio).expanduser().read_bytes())
        return Voice(clone=clone_prompt(model, samples, rate, self.settings.ref_text))

    async def stop(self) -> None:
        if self.clients is not None:
            self.clients.shutdown()
        if self.engine is not None:
            await asyncio.to_thread(self.engine.close)

    def require_ready(self) -> None:
        if self.state != "ready":
            raise NotReady(self.state, self.error)

    # -- requests -------------------------------------------------------------------------------------
    def voice_for(self, name: str | None, instruct: str | None) -> Voice:
        model = self.model
        if model.family == "custom_voice":
            if name is None or name.lower() == "default":
                speaker = self.default_voice.speaker
            else:
                match = {s.lower(): s for s in model.speakers}.get(name.lower())
                if match is None:
                    raise InvalidRequest("unknown_voice", f"unknown voice {name!r}; voices: {', '.join(model.speakers)}")
                speaker = match
            return Voice(speaker=speaker, instruct=instruct or None)
        if name is not None and name.lower() != "default":
            raise InvalidRequest("unknown_voice", f"unknown voice {name!r}; this server has only 'default'")
        if model.family == "voice_design":
            return Voice(instruct=instruct or "")
        if instruct:
            raise InvalidRequest("instruct_unsupported", "a Base (voice clone) model cannot follow instructions")
        return self.default_voice

    async def prepare(self, client_id: str, text: str, language: str, voice: str | None, instruct: str | None,
                      normalize: bool) -> PreparedRequest:
        """Validates and normalizes; raises InvalidRequest. Nothing is queued here."""
        import normalization

        received = time.perf_counter()
        self.require_ready()
        if not text.strip():
            raise InvalidRequest("empty_text", "text is empty")
        if len(text) > self.settings.max_text_chars:
            raise InvalidRequest("text_too_long",
                                 f"text has {len(text)} characters; the limit is {self.settings.max_text_chars}")
        try:
            language = normalization.canonical_language(language)
        except normalization.UnsupportedLanguage as e:
            raise InvalidRequest("unknown_language", str(e)) from e
        chosen = self.voice_for(voice, instruct)
        segments = await asyncio.wrap_future(
            normalization.normalize_in_worker(text, language, enable_tn=normalize)
        )
        if not segments:
            raise InvalidRequest("empty_text", "text has nothing to speak")
        requests = [SynthesisRequest(text=s.text, language=s.language, voice=chosen) for s in segments]
        for request in requests:
            try:
                check_request(self.model, request)
            except SynthesisError as e:
                raise InvalidRequest("invalid_request", str(e)) from e
        return PreparedRequest(client_id, requests, len(text), received)

    def open(self, prepared: PreparedRequest) -> Ticket:
        """Queues the utterance for its client. Raises QueueFull."""
        self.require_ready()
        ticket = self.clients.enqueue(prepared.client_id, prepared.segments, prepared.text_chars)
        ticket.stats.received = prepared.received
        return ticket

    async def pcm(self, ticket: Ticket) -> AsyncIterator[bytes]:
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
            if ended is not None and ended.outcome == "error":
                # After the first byte there is no status code left to send: the connection is cut instead
                # of ending the body, so the client cannot take a truncated stream for a whole one.
                raise StreamFailed(ticket.id) from ended.error
        finally:
            if not ticket.ended:
                self.clients.cancel(ticket, "disconnected")
            self._record(ticket)

    def interrupt(self, client_id: str) -> dict:
        self.require_ready()
        interrupted, flushed = self.clients.interrupt(client_id)
        if interrupted or flushed:
            self.metrics.interrupts.inc()
        log.info("interrupt client=%s interrupted=%s flushed=%d", client_id, interrupted, flushed)
        return {"client_id": client_id, "interrupted": interrupted, "flushed": flushed}

    def _record(self, ticket: Ticket) -> None:
        s = ticket.stats
        ttfb = None if s.first_audio is None else s.first_audio - s.received
        outcome = ticket.outcome or "disconnected"
        self.metrics.requests.labels(outcome=outcome).inc()
        if ttfb is not None:
            self.metrics.ttfb.observe(ttfb)
        if s.rtf is not None:
            self.metrics.rtf.observe(s.rtf)
        self.metrics.audio_seconds.inc(s.audio_seconds)
        log.info("request id=%s client=%s chars=%d segments=%d frames=%d ttfb_ms=%s engine_ttfb_ms=%s rtf=%s "
                 "outcome=%s", ticket.id, ticket.client_id, ticket.text_chars, len(ticket.segments), s.frames,
                 _ms(ttfb), _ms(s.engine_ttfb), "-" if s.rtf is None else f"{s.rtf:.2f}", outcome)

    # -- health ---------------------------------------------------------------------------------------
    def health(self) -> tuple[int, dict]:
        if self.state != "ready":
            body = {"status": self.state}
            if self.error:
                body["error"] = self.error
            return 503, body
        body = {
            "status": "ready",
            "model": self.model.describe(),
            "demo": self.settings.demo,
            "active_streams": self.clients.active,
            "queue_depth": self.clients.waiting,
            "clients": self.clients.client_count,
        }
        if self.settings.demo:
            body["note"] = "demo checkpoint with random weights: the audio is noise"
        return 200, body


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


class StreamFailed(RuntimeError):
    """Generation failed after the response started."""
