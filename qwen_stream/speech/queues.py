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
import math
import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..engine import Engine, FlowControl
from ..events import AudioChunk, Event, Outcome
from ..generation import SynthesisRequest
from .utterance import Utterance

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


class Overloaded(QueueFull):
    """The engine's estimated wait for a new utterance is over --max-wait-ms: refused at once, nothing queued
    (a QueueFull, so whoever handles a full queue handles this too; HTTP answers it with 503)."""

    code = "overloaded"

    def __init__(self, client_id: str, wait: float, limit: float):
        Exception.__init__(self, f"the server is overloaded: about {wait:.1f} s to wait (limit {limit:.1f} s)")
        self.client_id = client_id
        self.limit = 0  # no queue bound was hit: the engine's wait was
        self.wait = wait

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.wait))


@dataclass
class _Client:
    running: Utterance | None = None
    engine_busy: bool = False  # the running utterance's job has not reported its end yet
    waiting: deque[Utterance] = field(default_factory=deque)

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
        max_wait: float | None = None,
    ):
        """max_ahead_frames: how far generation may run ahead of a stream's reader (None: no bound);
        send_timeout: how long the engine waits for a reader that takes nothing before it gives up;
        max_wait: seconds of estimated engine wait beyond which a new utterance is refused (None: never)."""
        self._engine = engine
        self._max_queue = max_queue
        self._max_clients = max_clients
        self._max_ahead = max_ahead_frames
        self._send_timeout = send_timeout
        self._max_wait = max_wait
        self._idle = asyncio.Event()  # set while no client has anything in flight
        self._idle.set()
        self._clients: dict[str, _Client] = {}

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
    def enqueue(self, client_id: str, segments: Sequence[SynthesisRequest], text_chars: int) -> Utterance:
        """An utterance whose sentences are all known: reserve, fill and open in one call. Raises QueueFull."""
        utterance = self.reserve(client_id, text_chars)
        self.fill(utterance, segments)
        return utterance

    def reserve(self, client_id: str, text_chars: int = 0, expire_after: float | None = 60.0) -> Utterance:
        """Takes the client's next place in line at arrival, before the text is prepared, so requests
        play in the order they arrived even when an earlier one takes longer to prepare. A reservation
        that is not opened within `expire_after` seconds is dropped (never blocks); None: never."""
        client = self._clients.get(client_id)
        if client is not None and len(client.waiting) >= self._max_queue:
            raise QueueFull(client_id, self._max_queue)
        if client is None and len(self._clients) >= self._max_clients:
            raise ServerBusy(client_id, self._max_clients)
        if self._max_wait is not None:
            wait = self._engine.estimated_wait()
            if wait > self._max_wait:
                raise Overloaded(client_id, wait, self._max_wait)
        loop = asyncio.get_running_loop()
        if client is None:
            client = self._clients[client_id] = _Client()
            self._idle.clear()
        flow = None if self._max_ahead is None else FlowControl(self._max_ahead, self._send_timeout)
        utterance = Utterance(client_id, text_chars, flow)
        utterance.watch_input(self._resume)
        client.waiting.append(utterance)
        if expire_after is not None:
            loop.call_later(expire_after, self._expire, utterance)
        return utterance

    @staticmethod
    def fill(utterance: Utterance, segments: Sequence[SynthesisRequest]) -> None:
        """All of the reserved utterance's sentences at once: it may start when its turn comes."""
        for segment in segments:
            utterance.append(segment)
        utterance.close_input()
        utterance.open()

    def _expire(self, utterance: Utterance) -> None:
        if not utterance.opened and not utterance.ended:
            log.warning("dropping reservation %s of client %s: never filled", utterance.id, utterance.client_id)
            self.cancel(utterance, Outcome.EXPIRED)

    def interrupt(self, client_id: str) -> tuple[bool, int]:
        """Stops the client's running utterance and drops its queued ones; their streams end now.
        Returns (a running utterance was stopped, number of queued ones dropped)."""
        client = self._clients.get(client_id)
        if client is None:
            return False, 0
        flushed = 0
        while client.waiting:
            client.waiting.popleft().end(Outcome.INTERRUPTED)
            flushed += 1
        interrupted = False
        if client.running is not None:
            client.running.end(Outcome.INTERRUPTED)
            client.running = None
            interrupted = True
        self._drop_if_idle(client_id)
        return interrupted, flushed

    def cancel(self, utterance: Utterance, outcome: Outcome = Outcome.DISCONNECTED) -> None:
        """The reader of one utterance went away: stop its work, leave the client's other requests alone."""
        if utterance.ended:
            return
        client = self._clients.get(utterance.client_id)
        if client is None:
            return
        if client.running is utterance:
            client.running = None
        else:
            try:
                client.waiting.remove(utterance)
            except ValueError:
                pass
        utterance.end(outcome)
        self._advance(utterance.client_id)

    def stalled(self, utterance: Utterance) -> None:
        """Its reader took nothing for the send timeout: stop its work if any is left, and let its outcome say
        so even when generation had already ended (the audio never reached the reader)."""
        if utterance.ended:
            utterance.mark_stalled()
            return
        self.cancel(utterance, Outcome.STALLED)

    def shutdown(self) -> None:
        for client in self._clients.values():
            for utterance in [client.running, *client.waiting]:
                if utterance is not None:
                    utterance.end(Outcome.SHUTDOWN)
        # Nothing of any client is wanted any more: their state goes, and drained() returns.
        self._clients.clear()
        self._idle.set()

    # -- internals (event loop thread) ----------------------------------------------------------------
    def _resume(self, utterance: Utterance) -> None:
        """New input (or its opening): start it if its turn has come, or go on if it was waiting for text."""
        client = self._clients.get(utterance.client_id)
        if client is None or utterance.ended:
            return
        if client.running is utterance:
            if not client.engine_busy:
                self._continue(client, utterance)
        else:
            self._advance(utterance.client_id)

    def _advance(self, client_id: str) -> None:
        """Starts the client's next utterance if nothing of it is running in the engine."""
        client = self._clients.get(client_id)
        if client is None:
            return
        if client.running is None and not client.engine_busy and client.waiting and client.waiting[0].startable:
            utterance = client.waiting.popleft()
            client.running = utterance
            utterance.start()
            self._continue(client, utterance)
        self._drop_if_idle(client_id)

    def _continue(self, client: _Client, utterance: Utterance) -> None:
        """The running utterance has nothing in the engine: its next sentence goes in, or it ends when its
        input is finished, or it waits for more text (an open-ended utterance; the client's next one waits)."""
        segment = utterance.next_segment()
        if segment is not None:
            self._submit(client, utterance, segment)
        elif utterance.finished_input:
            client.running = None
            utterance.end(Outcome.DONE)
            self._advance(utterance.client_id)

    def _submit(self, client: _Client, utterance: Utterance, segment: SynthesisRequest) -> None:
        loop = asyncio.get_running_loop()

        def emit(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(self._on_engine_event, utterance, event)
            except RuntimeError:  # event loop closed: the server is going down
                pass

        client.engine_busy = True
        try:
            utterance.attach(self._engine.submit(segment, emit, flow=utterance.flow, playback=utterance.playback))
        except Exception as error:  # refused by the engine (closed, invalid): this utterance fails alone
            client.engine_busy = False
            client.running = None
            utterance.end(Outcome.ERROR, error)
            self._advance(utterance.client_id)

    def _on_engine_event(self, utterance: Utterance, event: Event) -> None:
        if isinstance(event, AudioChunk):
            utterance.deliver(event)
            return
        client = self._clients.get(utterance.client_id)
        utterance.job_ended(event)
        if client is not None:
            client.engine_busy = False
        if event.outcome == Outcome.ERROR:
            self._finish(client, utterance, Outcome.ERROR, event.error)
        elif event.outcome in (Outcome.CANCELLED, Outcome.STALLED):
            # A job the engine itself cancelled (it is closing) while the utterance still wanted audio: not done.
            self._finish(client, utterance, Outcome.STALLED if event.outcome == Outcome.STALLED else Outcome.SHUTDOWN)
        elif client is not None and client.running is utterance:
            self._continue(client, utterance)
        self._advance(utterance.client_id)

    def _finish(self, client: _Client | None, utterance: Utterance, outcome: Outcome, error=None) -> None:
        if client is not None and client.running is utterance:
            client.running = None
        utterance.end(outcome, error)

    def _drop_if_idle(self, client_id: str) -> None:
        client = self._clients.get(client_id)
        if client is not None and client.empty:
            del self._clients[client_id]
            if not self._clients:
                self._idle.set()

    async def drained(self) -> None:
        """Returns once no client has anything running, waiting or still in the engine."""
        await self._idle.wait()
