"""Per-client queues: one client's utterances play strictly in order; different clients share the engine fairly.

Fairness comes from the shape, not from a scheduler: each client has at most one utterance in the engine's
queue at a time (its head), and the next one joins the engine's FIFO only when the previous one ended. The
engine therefore takes the clients' heads in turn.

Everything here runs on the asyncio event loop thread; engine events hop onto it with
`call_soon_threadsafe`, so no locks are needed. Interrupt is a control action that overtakes data: it
cancels the running utterance and drops the queued ones at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from .engine import AudioChunk, Engine, Event, FlowControl, Job, StreamEnd, StreamError
from .generation import SynthesisRequest

log = logging.getLogger(__name__)

# Every client id, wherever it comes from (JSON field, query string, header, OpenAI `user`): printable ASCII
# without spaces, so an id can never forge a log line or a header.
CLIENT_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"
_CLIENT_ID = re.compile(CLIENT_ID_PATTERN)
DEFAULT_CLIENT = "default"


def valid_client_id(value: object) -> bool:
    return isinstance(value, str) and _CLIENT_ID.fullmatch(value) is not None


class QueueFull(Exception):
    code = "queue_full"

    def __init__(self, client_id: str, limit: int):
        super().__init__(f"client {client_id!r} already has {limit} requests waiting")
        self.client_id = client_id
        self.limit = limit


class ServerBusy(QueueFull):
    """Too many clients have work in flight: a bound on everything the queues hold, whoever sends it (requests
    without a client id each get a queue of their own)."""

    code = "server_busy"

    def __init__(self, client_id: str, limit: int):
        Exception.__init__(self, f"{limit} clients already have requests in flight; retry shortly")
        self.client_id = client_id
        self.limit = limit


@dataclass
class Ended:
    """Last item of a ticket's stream. outcome: done, interrupted, disconnected, stalled, error, shutdown."""

    outcome: str
    error: BaseException | None = None


@dataclass
class TicketStats:
    received: float = field(default_factory=time.perf_counter)
    started: float | None = None
    first_audio: float | None = None
    finished: float | None = None
    frames: int = 0
    compute_seconds: float = 0.0
    engine_ttfb: float | None = None  # the engine's own time to first chunk, first sentence
    eos: bool = False

    @property
    def audio_seconds(self) -> float:
        return self.frames * 0.08

    @property
    def rtf(self) -> float | None:
        return self.compute_seconds / self.audio_seconds if self.frames else None


class Ticket:
    """One HTTP request's utterance: one or more sentences (segments) spoken in a row."""

    def __init__(
        self,
        client_id: str,
        segments: Sequence[SynthesisRequest] | None,
        text_chars: int,
        flow: FlowControl | None = None,
    ):
        self.id = uuid.uuid4().hex
        self.client_id = client_id
        self.segments = list(segments) if segments is not None else None  # None: reserved, still preparing
        self.text_chars = text_chars
        self.stats = TicketStats()
        self.outcome: str | None = None
        self.recorded = False  # the request's log line and metrics were written
        self._next_segment = 0
        self._job: Job | None = None
        self._events: asyncio.Queue = asyncio.Queue()
        self.flow = flow
        # Set when the server gives up on the reader (stalled): a response blocked in a send to a reader
        # that takes nothing must be abandoned, since no further item of the stream can reach it.
        self.abandoned = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self.outcome is not None

    async def events(self) -> AsyncIterator[AudioChunk | Ended]:
        """Audio chunks, then exactly one Ended."""
        while True:
            item = await self._events.get()
            if isinstance(item, AudioChunk) and self.flow is not None:
                self.flow.taken(item.frames)
            yield item
            if isinstance(item, Ended):
                return


@dataclass
class _Client:
    running: Ticket | None = None
    engine_busy: bool = False  # the running ticket's job has not reported its end yet
    waiting: deque = field(default_factory=deque)

    @property
    def empty(self) -> bool:
        return self.running is None and not self.engine_busy and not self.waiting


class ClientQueues:
    def __init__(
        self,
        engine: Engine,
        max_queue: int,
        max_ahead_frames: int | None = None,
        send_timeout: float = 10.0,
        max_clients: int = 1024,
    ):
        """max_ahead_frames: how far generation may run ahead of a stream's reader (None: no bound);
        send_timeout: how long the engine waits for a reader that takes nothing before it gives up."""
        self._engine = engine
        self._max_queue = max_queue
        self._max_clients = max_clients
        self._max_ahead = max_ahead_frames
        self._send_timeout = send_timeout
        self._idle = asyncio.Event()  # set while no client has anything in flight
        self._idle.set()
        self._clients: dict[str, _Client] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- inspection -----------------------------------------------------------------------------------
    @property
    def client_count(self) -> int:
        """Clients with anything running or waiting: idle clients leave no state behind."""
        return len(self._clients)

    @property
    def active(self) -> int:
        return sum(1 for c in self._clients.values() if c.running is not None)

    @property
    def waiting(self) -> int:
        return sum(len(c.waiting) for c in self._clients.values())

    # -- requests -------------------------------------------------------------------------------------
    def enqueue(self, client_id: str, segments: Sequence[SynthesisRequest], text_chars: int) -> Ticket:
        """Joins the client's queue; starts at once if the client has nothing running. Raises QueueFull."""
        ticket = self.reserve(client_id, text_chars)
        self.fill(ticket, segments)
        return ticket

    def reserve(self, client_id: str, text_chars: int = 0, expire_after: float = 60.0) -> Ticket:
        """Takes the client's next place in line at arrival, before the text is prepared, so requests
        play in the order they arrived even when an earlier one takes longer to prepare. A reservation
        that is neither filled nor cancelled within `expire_after` seconds is dropped (never blocks)."""
        self._loop = asyncio.get_running_loop()
        client = self._clients.get(client_id)
        if client is not None and len(client.waiting) >= self._max_queue:
            raise QueueFull(client_id, self._max_queue)
        if client is None and len(self._clients) >= self._max_clients:
            raise ServerBusy(client_id, self._max_clients)
        if client is None:
            client = self._clients[client_id] = _Client()
            self._idle.clear()
        flow = None if self._max_ahead is None else FlowControl(self._max_ahead, self._send_timeout)
        ticket = Ticket(client_id, None, text_chars, flow)
        client.waiting.append(ticket)
        self._loop.call_later(expire_after, self._expire, ticket)
        return ticket

    def fill(self, ticket: Ticket, segments: Sequence[SynthesisRequest]) -> None:
        """The reserved ticket's sentences are ready: it may start when its turn comes."""
        if ticket.ended:
            return  # interrupted while it was being prepared
        ticket.segments = list(segments)
        self._advance(ticket.client_id)

    def _expire(self, ticket: Ticket) -> None:
        if ticket.segments is None and not ticket.ended:
            log.warning("dropping reservation %s of client %s: never filled", ticket.id, ticket.client_id)
            self.cancel(ticket, "expired")

    def interrupt(self, client_id: str) -> tuple[bool, int]:
        """Stops the client's running utterance and drops its queued ones; their streams end now.
        Returns (a running utterance was stopped, number of queued ones dropped)."""
        client = self._clients.get(client_id)
        if client is None:
            return False, 0
        flushed = 0
        while client.waiting:
            self._end(client.waiting.popleft(), Ended("interrupted"))
            flushed += 1
        interrupted = False
        if client.running is not None:
            ticket = client.running
            if ticket._job is not None:
                ticket._job.cancel()
            self._end(ticket, Ended("interrupted"))
            client.running = None
            interrupted = True
        self._drop_if_idle(client_id)
        return interrupted, flushed

    def cancel(self, ticket: Ticket, outcome: str = "disconnected") -> None:
        """The reader of one ticket went away: stop its work, leave the client's other requests alone."""
        if ticket.ended:
            return
        client = self._clients.get(ticket.client_id)
        if client is None:
            return
        if client.running is ticket:
            if ticket._job is not None:
                ticket._job.cancel()
            client.running = None
        else:
            try:
                client.waiting.remove(ticket)
            except ValueError:
                pass
        self._end(ticket, Ended(outcome))
        self._advance(ticket.client_id)

    def stalled(self, ticket: Ticket) -> None:
        """Its reader took nothing for the send timeout: stop its work if any is left, and let its outcome say
        so even when generation had already ended (the audio never reached the reader)."""
        if ticket.ended:
            ticket.outcome = "stalled"
            return
        self.cancel(ticket, "stalled")

    def shutdown(self) -> None:
        for client_id in list(self._clients):
            client = self._clients[client_id]
            for ticket in [client.running, *client.waiting]:
                if ticket is not None:
                    if ticket._job is not None:
                        ticket._job.cancel()
                    self._end(ticket, Ended("shutdown"))
        # Nothing of any client is wanted any more: their state goes, and drained() returns.
        self._clients.clear()
        self._idle.set()

    # -- internals (event loop thread) ----------------------------------------------------------------
    def _advance(self, client_id: str) -> None:
        """Starts the client's next utterance if nothing of it is running in the engine."""
        client = self._clients.get(client_id)
        if client is None:
            return
        if (
            client.running is None
            and not client.engine_busy
            and client.waiting
            and client.waiting[0].segments is not None
        ):
            ticket = client.waiting.popleft()
            client.running = ticket
            ticket.stats.started = time.perf_counter()
            self._submit_segment(client, ticket)
        self._drop_if_idle(client_id)

    def _submit_segment(self, client: _Client, ticket: Ticket) -> None:
        assert ticket.segments is not None  # only filled tickets start
        request = ticket.segments[ticket._next_segment]
        ticket._next_segment += 1
        loop = self._loop
        assert loop is not None  # set when the first ticket was reserved

        def emit(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(self._on_engine_event, ticket, event)
            except RuntimeError:  # event loop closed: the server is going down
                pass

        client.engine_busy = True
        try:
            ticket._job = self._engine.submit(request, emit, flow=ticket.flow)
        except Exception as error:  # refused by the engine (closed, invalid): this ticket fails alone
            client.engine_busy = False
            client.running = None
            self._end(ticket, Ended("error", error))
            self._advance(ticket.client_id)

    def _on_engine_event(self, ticket: Ticket, event: Event) -> None:
        if isinstance(event, AudioChunk):
            if not ticket.ended:
                ticket.stats.frames += event.frames  # frames streamed (an interrupt may stop more unsent)
                ticket._events.put_nowait(event)
            return
        client = self._clients.get(ticket.client_id)
        stats = event.stats
        if stats.started is not None and stats.finished is not None:
            ticket.stats.compute_seconds += stats.finished - stats.started
        if ticket.stats.engine_ttfb is None:
            ticket.stats.engine_ttfb = stats.ttfb
        if client is not None:
            client.engine_busy = False
        if isinstance(event, StreamError):
            if client is not None and client.running is ticket:
                client.running = None
            self._end(ticket, Ended("error", event.error))
        elif isinstance(event, StreamEnd):
            ticket.stats.eos = event.outcome == "done"
            assert ticket.segments is not None  # it was running, so it was filled
            more = ticket._next_segment < len(ticket.segments)
            stopped = event.outcome in ("cancelled", "stalled")
            if not ticket.ended and not stopped and more and client is not None:
                self._submit_segment(client, ticket)
                return
            if client is not None and client.running is ticket:
                client.running = None
            # A job the engine itself cancelled (it is closing) while the ticket still wanted audio: not done.
            ended = {"stalled": "stalled", "cancelled": "shutdown"}.get(event.outcome, "done")
            self._end(ticket, Ended(ended))
        self._advance(ticket.client_id)

    def _end(self, ticket: Ticket, ended: Ended) -> None:
        if ticket.ended:
            return
        ticket.outcome = ended.outcome
        ticket.stats.finished = time.perf_counter()
        ticket._events.put_nowait(ended)
        if ticket.flow is not None:
            ticket.flow.close()
        if ended.outcome == "stalled":
            ticket.abandoned.set()

    def _drop_if_idle(self, client_id: str) -> None:
        client = self._clients.get(client_id)
        if client is not None and client.empty:
            del self._clients[client_id]
            if not self._clients:
                self._idle.set()

    async def drained(self) -> None:
        """Returns once no client has anything running, waiting or still in the engine."""
        await self._idle.wait()
