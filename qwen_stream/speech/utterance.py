"""One client request: its place in its client's queue, its sentences, its events and its end.

An utterance takes its sentences all at once (an HTTP request, normalized and split before it is opened) or
over time (a WebSocket context whose text arrives as an LLM writes it): `append(segment)` adds one, and
`close_input()` says no more will come. It changes state only through its own methods; the queues call them
on the event loop thread, and so do the routes. Its events are audio chunks, then exactly one End.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable

from ..engine import FlowControl, Job
from ..events import AudioChunk, End, Mark, Outcome, Stats
from ..generation import SynthesisRequest
from ..playback import Playback


class InputClosed(RuntimeError):
    """A segment was appended after close_input()."""


class Utterance:
    def __init__(self, client_id: str, text_chars: int = 0, flow: FlowControl | None = None):
        self.id = uuid.uuid4().hex
        self.client_id = client_id
        self.text_chars = text_chars
        self.stats = Stats()  # submitted = arrival
        self.flow = flow  # shared by its jobs: how far generation may run ahead of the reader
        self.playback = Playback()  # shared by its jobs: its reader's audio left, as the engine estimates it
        # Set when the server gives up on the reader (stalled): a response blocked in a send to a reader that
        # takes nothing must be abandoned, since no further item of the stream can reach it.
        self.abandoned = asyncio.Event()
        self._pending: deque[SynthesisRequest | Mark] = deque()
        self._texts: list[str] = []  # every sentence given, as spoken (normalized)
        self._input_closed = False
        self._opened = False  # a reader exists: it may start when its turn comes
        self._job: Job | None = None
        self._events: asyncio.Queue[AudioChunk | Mark | End] = asyncio.Queue()
        self._outcome: Outcome | None = None
        self._recorded = False
        self._on_input: Callable[[Utterance], None] | None = None

    # -- state ----------------------------------------------------------------------------------------
    @property
    def outcome(self) -> Outcome | None:
        return self._outcome

    @property
    def ended(self) -> bool:
        return self._outcome is not None

    @property
    def segment_count(self) -> int:
        """Sentences given so far."""
        return len(self._texts)

    @property
    def texts(self) -> tuple[str, ...]:
        """The sentences given so far, as the model reads them."""
        return tuple(self._texts)

    @property
    def input_closed(self) -> bool:
        return self._input_closed

    @property
    def opened(self) -> bool:
        return self._opened

    @property
    def startable(self) -> bool:
        """Opened, with a sentence to speak or its end to report."""
        return self._opened and not self.ended and (bool(self._pending) or self._input_closed)

    @property
    def in_engine(self) -> bool:
        return self._job is not None

    # -- input (the route, or the session that feeds it) -----------------------------------------------
    def watch_input(self, callback: Callable[[Utterance], None]) -> None:
        """`callback(self)` runs after each append, close_input and open (the queues resume it)."""
        self._on_input = callback

    def append(self, segment: SynthesisRequest) -> None:
        """One more sentence to speak, after those already given. Ignored once the utterance ended
        (interrupted while the text was still coming); refused after close_input()."""
        if self.ended:
            return
        if self._input_closed:
            raise InputClosed(f"utterance {self.id}: no text may follow close_input()")
        self._pending.append(segment)
        self._texts.append(segment.text)
        self._notify()

    def mark(self, value: object) -> None:
        """A Mark in the events once the audio of every sentence given so far has been handed out."""
        if self.ended:
            return
        if self._input_closed:
            raise InputClosed(f"utterance {self.id}: no mark may follow close_input()")
        self._pending.append(Mark(value))
        self._notify()

    def close_input(self) -> None:
        """No more sentences: the utterance ends once those given are spoken."""
        if self._input_closed or self.ended:
            return
        self._input_closed = True
        self._notify()

    def open(self) -> None:
        """Its reader exists: it may start when its turn in the client's queue comes."""
        if not self._opened:
            self._opened = True
            self._notify()

    def _notify(self) -> None:
        if self._on_input is not None:
            self._on_input(self)

    # -- the engine side (the queues) ------------------------------------------------------------------
    def start(self) -> None:
        if self.stats.started is None:
            self.stats.started = time.perf_counter()

    def next_segment(self) -> SynthesisRequest | None:
        """The next sentence to speak; Marks met on the way are handed to the reader (the audio before them
        is all out: this is called when the previous sentence's job has ended)."""
        while self._pending:
            item = self._pending.popleft()
            if not isinstance(item, Mark):
                return item
            self._events.put_nowait(item)
        return None

    @property
    def finished_input(self) -> bool:
        """Every sentence it will ever have has been taken."""
        return self._input_closed and not self._pending

    def attach(self, job: Job) -> None:
        self._job = job

    def deliver(self, chunk: AudioChunk) -> None:
        if self.ended:
            return
        self.stats.frames += chunk.frames  # frames streamed (an interrupt may stop more, unsent)
        self._events.put_nowait(chunk)

    def job_ended(self, end: End) -> None:
        """Its running job's End: the job's compute joins the utterance's."""
        self._job = None
        self.stats.absorb(end.stats)
        self.stats.eos = end.outcome == Outcome.DONE

    def end(self, outcome: Outcome, error: BaseException | None = None) -> bool:
        """Ends the utterance (its running job is cancelled); its reader gets one End. False if it had ended."""
        if self.ended:
            return False
        if self._job is not None:
            self._job.cancel()
        self._outcome = outcome
        self._pending.clear()
        self.stats.finished = time.perf_counter()
        self._events.put_nowait(End(outcome, self.stats, error))
        if self.flow is not None:
            self.flow.close()
        if outcome == Outcome.STALLED:
            self.abandoned.set()
        return True

    def mark_stalled(self) -> None:
        """Its reader stalled after generation had ended: the audio never reached it, and the outcome says so."""
        if not self.end(Outcome.STALLED):
            self._outcome = Outcome.STALLED

    def first_audio_sent(self) -> None:
        if self.stats.first_audio is None:
            self.stats.first_audio = time.perf_counter()

    def claim_record(self) -> bool:
        """True exactly once: whoever gets it writes the request's log line and metrics."""
        claimed, self._recorded = not self._recorded, True
        return claimed

    # -- the reader ------------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[AudioChunk | Mark | End]:
        """Audio chunks (and the Marks asked for), then exactly one End."""
        while True:
            item = await self._events.get()
            if isinstance(item, AudioChunk) and self.flow is not None:
                self.flow.taken(item.frames)
            yield item
            if isinstance(item, End):
                return
