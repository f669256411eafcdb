"""A speech session: one connection's turns (contexts), each an open-ended utterance whose text arrives in
pieces as an LLM writes it. A piece is spoken as soon as a speakable unit is complete (a sentence, or a clause
once it is long enough: normalization.incremental), normalized per unit as HTTP text is. The session's
contexts share one client queue, so they play in the order they were opened; closing the session cancels
them all. Knows no protocol: the socket routes translate their messages into these calls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from normalization.incremental import SentenceBuffer

from ..events import Outcome
from ..settings import SamplingSettings
from .errors import InvalidRequest
from .service import Speaker, SpeechService
from .utterance import Utterance

MAX_CONTEXTS = 16  # open contexts per session: each holds a place in the client's queue
MAX_PENDING_CHARS = 4_000  # text buffered in one context before a unit completes


@dataclass(frozen=True)
class UnitSpoken:
    """Mark: the audio of one unit of text (a sentence or clause) starts or ends here."""

    text: str
    start: bool


@dataclass(frozen=True)
class Flushed:
    """Mark: the audio of every piece of text before flush number `flush_id` is out."""

    flush_id: int


@dataclass
class Context:
    id: str
    speaker: Speaker
    utterance: Utterance
    buffer: SentenceBuffer
    timestamps: bool = False  # mark each unit's start and end in the audio
    sampling: SamplingSettings | None = None  # the turn's own, laid over the server's
    chars: int = 0  # text received, all pieces together
    flushes: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # pieces are normalized and appended in order


class SpeechSession:
    def __init__(self, speech: SpeechService, client_id: str):
        self._speech = speech
        self.client_id = client_id
        self._contexts: dict[str, Context] = {}

    @property
    def context_ids(self) -> list[str]:
        return list(self._contexts)

    def get(self, context_id: str) -> Context | None:
        return self._contexts.get(context_id)

    async def open(
        self,
        context_id: str,
        voice: str | None,
        language: str,
        *,
        instruct: str | None = None,
        speaker: Speaker | None = None,
        timestamps: bool = False,
        min_clause_chars: int | None = None,
        sampling: SamplingSettings | None = None,
    ) -> Context:
        """A new turn, spoken by the named voice (or by `speaker`, a voice of this session's own), with its own
        `sampling` laid over the server's. Raises InvalidRequest (a bad voice, language or sampling setting,
        too many open turns) or QueueFull."""
        if len(self._contexts) >= MAX_CONTEXTS:
            raise InvalidRequest("too_many_contexts", f"at most {MAX_CONTEXTS} contexts may be open on one connection")
        if sampling is not None and (problems := sampling.problems()):
            raise InvalidRequest("invalid_params", "; ".join(problems))
        if speaker is None:
            speaker = await self._speech.speaker(voice, instruct, language)
        utterance = self._speech.open_ended(self.client_id)
        buffer = SentenceBuffer(speaker.language, min_clause_chars=min_clause_chars)
        context = Context(context_id, speaker, utterance, buffer, timestamps, sampling=sampling)
        self._contexts[context_id] = context
        return context

    async def feed(self, context: Context, text: str, *, more: bool, flush: bool = False) -> int | None:
        """A piece of the turn's text. `more` false: the turn's text is complete (what is left is spoken, then the
        turn ends); `flush`: speak what is buffered now, though more may follow, and return the flush's number
        (its Flushed mark follows the audio of everything before it). Raises InvalidRequest."""
        if context.utterance.ended or context.utterance.input_closed:
            raise InvalidRequest("context_closed", f"context {context.id!r} takes no more text")
        context.chars += len(text)
        if context.chars > self._speech.settings.max_text_chars:
            limit = self._speech.settings.max_text_chars
            raise InvalidRequest("text_too_long", f"context {context.id!r} has more than {limit} characters of text")
        async with context.lock:
            units = context.buffer.feed(text) if text else []
            if flush or not more:
                units += context.buffer.flush()
            if len(context.buffer.pending) > MAX_PENDING_CHARS:
                units += context.buffer.flush()
            for unit in units:
                requests = await self._speech.requests_for(unit, context.speaker, sampling=context.sampling)
                if context.timestamps and requests:
                    context.utterance.mark(UnitSpoken(unit, start=True))
                for request in requests:
                    context.utterance.append(request)
                if context.timestamps and requests:
                    context.utterance.mark(UnitSpoken(unit, start=False))
            flush_id = None
            if flush and more:
                context.flushes += 1
                flush_id = context.flushes
                context.utterance.mark(Flushed(flush_id))
            if not more:
                context.utterance.close_input()
            return flush_id

    def cancel(self, context_id: str) -> bool:
        """Stops the turn within one frame step and drops its text; False if there is no such open turn."""
        context = self._contexts.pop(context_id, None)
        if context is None or context.utterance.ended:
            return False
        self._speech.queues.cancel(context.utterance, Outcome.INTERRUPTED)
        return True

    def forget(self, context_id: str) -> None:
        """The turn ended and its last message went out: its id may be used again."""
        self._contexts.pop(context_id, None)

    def close(self) -> None:
        """The connection went away: every turn stops."""
        for context in list(self._contexts.values()):
            if not context.utterance.ended:
                self._speech.queues.cancel(context.utterance, Outcome.DISCONNECTED)
        self._contexts.clear()
