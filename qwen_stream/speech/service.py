"""Speech: prepare a request (validate, resolve its voice, normalize, take its client's place in line), open
it, stream its audio, interrupt a client. Built once the models are loaded; knows nothing of HTTP."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import normalization

from ..config import ServerSettings
from ..decoder import chunk_schedule
from ..engine import Engine
from ..events import AudioChunk, Mark, Outcome
from ..generation import SynthesisError, SynthesisRequest, Voice, check_request
from ..metrics import Metrics
from ..settings import SamplingSettings
from .checks import canonical_language, check_client_id, check_input_text, check_text
from .errors import InvalidRequest, StreamFailed
from .queues import ClientQueues
from .utterance import Utterance
from .voices import VoiceService

log = logging.getLogger("qwen_stream")


@dataclass(frozen=True)
class Speaker:
    """Who speaks: the family of the model that speaks the voice, the voice, and the language asked for."""

    family: str
    voice: Voice
    language: str


class SpeechService:
    def __init__(
        self,
        settings: ServerSettings,
        engine: Engine,
        queues: ClientQueues,
        voices: VoiceService,
        metrics: Metrics,
    ):
        self.settings = settings
        self.engine = engine
        self.queues = queues
        self.voices = voices
        self.metrics = metrics

    # -- a request ------------------------------------------------------------------------------------
    def check_input_text(self, text: str) -> None:
        check_input_text(text, self.settings.max_text_chars)

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
        sampling: SamplingSettings | None = None,
    ) -> Utterance:
        """Takes the client's place in line at arrival, then validates and normalizes. Raises InvalidRequest
        (the place is given back). Follow with open(), or discard() if the request will not be served.

        max_frames: the client's cap per sentence; it only shortens (the server's budget still bounds it).
        sampling: the client's own settings, laid over the server's."""
        received = time.perf_counter()
        check_client_id(client_id)
        self.check_input_text(text)
        if instruct is not None:
            check_text(instruct, "instruct", required=False)
        utterance = self.queues.reserve(client_id, len(text))
        utterance.stats.submitted = received
        try:
            segments = await self._segments(text, language, voice, instruct, normalize, ref_audio, max_frames, sampling)
        except BaseException:
            self.queues.cancel(utterance, Outcome.REJECTED)
            raise
        for segment in segments:
            utterance.append(segment)
        utterance.close_input()
        return utterance

    async def _segments(
        self,
        text: str,
        language: str,
        voice: str | None,
        instruct: str | None,
        normalize: bool,
        ref_audio: str | None,
        max_frames: int | None,
        sampling: SamplingSettings | None,
    ) -> list[SynthesisRequest]:
        language = canonical_language(language)
        family, chosen = await self.voices.resolve(voice, instruct, ref_audio)
        speaker = Speaker(family, chosen, language)
        requests = await self.requests_for(text, speaker, normalize, max_frames, sampling)
        if not requests:
            raise InvalidRequest("empty_text", "text has nothing to speak")
        return requests

    async def requests_for(
        self,
        text: str,
        speaker: Speaker,
        normalize: bool = True,
        max_frames: int | None = None,
        sampling: SamplingSettings | None = None,
    ) -> list[SynthesisRequest]:
        """Normalizes and splits `text` (off the event loop) into checked sentences for the speaker; [] when
        nothing in it is speakable. max_frames: the client's cap per sentence; it only shortens. sampling: the
        client's own settings (out-of-range values are refused here, before anything is queued)."""
        if sampling is not None and (problems := sampling.problems()):
            raise InvalidRequest("invalid_params", "; ".join(problems))
        segments = await asyncio.wrap_future(
            normalization.normalize_in_worker(text, speaker.language, enable_tn=normalize)
        )
        budget = self.engine.settings.budget
        requests = [
            SynthesisRequest(
                text=s.text,
                language=s.language,
                voice=speaker.voice,
                family=speaker.family,
                max_frames=None if max_frames is None else min(max_frames, budget.for_text(s.text)),
                sampling=sampling,
            )
            for s in segments
        ]
        info = self.engine.registry.info(speaker.family)
        for request in requests:
            try:
                check_request(info, request)
            except SynthesisError as e:
                raise InvalidRequest("invalid_request", str(e)) from e
        return requests

    async def speaker(self, voice: str | None, instruct: str | None, language: str) -> Speaker:
        """Who speaks an open-ended utterance, resolved once for all of its text. Raises InvalidRequest."""
        if instruct is not None:
            check_text(instruct, "instruct", required=False)
        language = canonical_language(language)
        family, chosen = await self.voices.resolve(voice, instruct)
        return Speaker(family, chosen, language)

    def open_ended(self, client_id: str) -> Utterance:
        """An utterance whose text will come over time (append / close_input), opened at once: it starts when
        its first sentence arrives and its turn in the client's queue comes. Raises QueueFull."""
        check_client_id(client_id)
        utterance = self.queues.reserve(client_id, expire_after=None)
        utterance.open()
        return utterance

    @staticmethod
    def open(utterance: Utterance) -> Utterance:
        """Lets the prepared utterance start when its turn in the client's queue comes."""
        utterance.open()
        return utterance

    def discard(self, utterance: Utterance) -> None:
        """Gives back the queue place of a prepared request that will not be opened."""
        self.queues.cancel(utterance, Outcome.REJECTED)

    async def stream(self, utterance: Utterance) -> AsyncGenerator[bytes, None]:
        """The response body: PCM as it is made, after the audio of --pre-buffer chunks. A reader that leaves
        cancels the utterance (finally)."""
        held: list[bytes] = []
        # Counted in frames, the audio of the schedule's first --pre-buffer chunks, so that chunks sent early
        # (smaller, when the engine judges the reader short of audio) hold back as much.
        hold = sum(itertools.islice(chunk_schedule(self.engine.settings.streaming), self.settings.pre_buffer))
        held_frames = 0
        failed: BaseException | None = None
        try:
            async for item in utterance.events():
                if isinstance(item, Mark):
                    continue
                if not isinstance(item, AudioChunk):
                    if item.outcome in (Outcome.ERROR, Outcome.STALLED):
                        failed = item.error or StreamFailed(utterance.id)
                    continue
                if held_frames < hold:
                    held.append(item.pcm)
                    held_frames += item.frames
                    if held_frames < hold:
                        continue
                    data, held, hold = b"".join(held), [], 0
                else:
                    data = item.pcm
                utterance.first_audio_sent()
                yield data
            if held:
                utterance.first_audio_sent()
                yield b"".join(held)
            if failed is not None:
                # After the first byte there is no status code left to send: the connection is cut instead
                # of ending the body, so the client cannot take a truncated stream for a whole one.
                raise StreamFailed(utterance.id) from failed
        finally:
            if not utterance.ended:
                self.queues.cancel(utterance, Outcome.DISCONNECTED)

    def finished(self, utterance: Utterance) -> None:
        """The response has ended (its last byte sent, or cut): one log line and the metrics, once. Not at the
        end of generation: an encoder may still hold the audio (FLAC), and a reader may still stall."""
        if utterance.claim_record():
            self._record(utterance)

    def stalled(self, utterance: Utterance) -> None:
        """Its reader took nothing for --send-timeout seconds: stop its work as for a disconnect."""
        log.warning(
            "request id=%s client=%s: the reader took nothing for %g s; dropping it",
            utterance.id,
            utterance.client_id,
            self.settings.send_timeout,
        )
        self.queues.stalled(utterance)

    def interrupt(self, client_id: str) -> dict:
        check_client_id(client_id)
        interrupted, flushed = self.queues.interrupt(client_id)
        if interrupted or flushed:
            self.metrics.interrupts.inc()
        log.info("interrupt client=%s interrupted=%s flushed=%d", client_id, interrupted, flushed)
        return {"client_id": client_id, "interrupted": interrupted, "flushed": flushed}

    def count_tokens(self, texts: tuple[str, ...]) -> int:
        """Input tokens as the models' text tokenizer (one for every Qwen3-TTS model) counts them; characters
        when every model was unloaded meanwhile (LRU) and no tokenizer is at hand."""
        loaded = self.engine.registry.loaded()
        if not loaded:
            return sum(len(text) for text in texts)
        tokenizer = loaded[0].tts.processor.tokenizer
        return sum(len(tokenizer(text)["input_ids"]) for text in texts)

    def _record(self, utterance: Utterance) -> None:
        s = utterance.stats
        outcome = utterance.outcome or Outcome.DISCONNECTED
        self.metrics.requests.labels(outcome=str(outcome)).inc()
        if s.ttfb is not None:
            self.metrics.ttfb.observe(s.ttfb)
        if s.rtf is not None:
            self.metrics.rtf.observe(s.rtf)
        self.metrics.audio_seconds.inc(s.audio_seconds)
        log.info(
            "request id=%s client=%s chars=%d segments=%d frames=%d ttfb_ms=%s engine_ttfb_ms=%s rtf=%s outcome=%s",
            utterance.id,
            utterance.client_id,
            utterance.text_chars,
            utterance.segment_count,
            s.frames,
            _ms(s.ttfb),
            _ms(s.engine_ttfb),
            "-" if s.rtf is None else f"{s.rtf:.2f}",
            outcome,
        )


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"
