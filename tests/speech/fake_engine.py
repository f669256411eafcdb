"""A stand-in for `qwen_stream.engine.Engine` with no model: each job emits chunks on a timer.

It has the surface `ClientQueues` uses: `submit(request, emit, flow=...)` returns a job with `cancel()`, and
the job's events (the real `AudioChunk` and `End`, with a real `Stats`) reach `emit`
from the fake's own thread, as they do from the real engine's worker thread. Jobs run in FIFO order,
`slots` at once; a cancel is seen before the job's next chunk. `started` and `log` record what the engine
saw, for order and fairness checks.

A job speaks `request.max_frames` chunks (the fake's `chunks` when None), then ends with the outcome that
`plan(request)` names: "done", "capped", "stalled" or "cancelled" (an End with that outcome), "error"
(an End with an error) or "refuse" (`submit` raises SynthesisError, as the real engine does for a request it
cannot serve). Each chunk's PCM starts with "<request text>#<index>"; `chunk_label` reads it back.

`late_chunks` models the real engine seeing a cancel only at its next frame step: a cancelled job that is
running still emits that many chunks before its End("cancelled"). `hold()` parks the engine thread
(nothing starts, speaks or ends) so a test can act while the engine is known to be still.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from qwen_stream.engine import EventCallback, FlowControl
from qwen_stream.events import AudioChunk, End, Outcome, Stats
from qwen_stream.generation import SynthesisError, SynthesisRequest
from qwen_stream.playback import Playback

CHUNK_BYTES = 3840  # one 80 ms frame of 24 kHz PCM16 mono
ENDLESS = 10**9  # max_frames for a job that only a cancel ends
OUTCOMES = ("done", "capped", "stalled", "cancelled", "error", "refuse")


def chunk_label(chunk: AudioChunk) -> str:
    return chunk.pcm.rstrip(b"\0").decode()


class FakeJob:
    def __init__(
        self,
        engine: FakeEngine,
        request: SynthesisRequest,
        emit: EventCallback,
        flow: FlowControl | None,
        chunks: int,
        outcome: str,
    ):
        self.request = request
        self.label = request.text
        self.chunks = chunks
        self.planned = outcome
        self.stats = Stats()
        self.sent = 0  # chunks emitted
        self.late = engine.late_chunks  # chunks still emitted after a cancel
        self.result: str | None = None  # the outcome it ended with
        self.playback: Playback | None = None  # the stream's, as ClientQueues passed it
        self._engine = engine
        self._emit = emit
        self._flow = flow
        self._cancelled = threading.Event()
        self._ended = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()
        if self._flow is not None:
            self._flow.close()
        self._engine._poke()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ended.wait(timeout)


class FakeEngine:
    def __init__(
        self,
        chunks: int = 3,
        interval: float = 0.001,
        slots: int = 1,
        plan: Callable[[SynthesisRequest], str] | None = None,
        late_chunks: int = 0,
    ):
        """chunks: per job unless its request sets max_frames; interval: seconds between steps (each running
        job emits one chunk per step); slots: jobs running at once."""
        self.chunks = chunks
        self.interval = interval
        self.slots = slots
        self.late_chunks = late_chunks
        self._plan = plan or (lambda request: "done")
        self.jobs: list[FakeJob] = []  # in submission order
        self.started: list[str] = []  # labels, in the order jobs started running
        self.log: list[tuple[str, str]] = []  # ("start" | "end", label), in order
        self._backlog: deque[FakeJob] = deque()
        self._active: list[FakeJob] = []
        self._cond = threading.Condition()
        self._held = False
        self._parked = threading.Event()  # the thread is parked by hold()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="fake-engine", daemon=True)
        self._thread.start()

    # -- the surface ClientQueues uses ----------------------------------------------------------------
    def submit(
        self,
        request: SynthesisRequest,
        emit: EventCallback,
        keep_codes: bool = False,
        flow: FlowControl | None = None,
        playback: Playback | None = None,
    ) -> FakeJob:
        if self._closed:
            raise RuntimeError("engine is closed")
        outcome = self._plan(request)
        assert outcome in OUTCOMES, outcome
        if outcome == "refuse":
            raise SynthesisError(f"refused {request.text!r}")
        chunks = self.chunks if request.max_frames is None else request.max_frames
        job = FakeJob(self, request, emit, flow, chunks, outcome)
        job.playback = playback
        with self._cond:
            self.jobs.append(job)
            self._backlog.append(job)
            self._cond.notify_all()
        return job

    def estimated_wait(self) -> float:
        """As the real engine estimates it: nothing while a slot is free for every waiting job; otherwise one
        job length (chunks x interval) per `slots` jobs that need a slot to free up."""
        with self._cond:
            waiting = sum(1 for job in self._backlog if not job.cancelled)
            free = self.slots - len(self._active)
        if waiting < free:
            return 0.0
        return ((waiting - free) // self.slots + 1) * self.chunks * self.interval

    # -- test controls --------------------------------------------------------------------------------
    def hold(self) -> None:
        """Parks the engine thread between steps: no job starts, speaks or ends until release(). Returns once
        the thread is parked (at most one step)."""
        with self._cond:
            self._held = True
            self._cond.notify_all()
        assert self._parked.wait(5), "the fake engine did not park"

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._parked.clear()
            self._cond.notify_all()

    def job(self, label: str) -> FakeJob:
        found = [job for job in self.jobs if job.label == label]
        assert len(found) == 1, f"{len(found)} jobs named {label!r}"
        return found[0]

    def submitted(self) -> list[str]:
        return [job.label for job in self.jobs]

    def close(self) -> None:
        """Stops the thread; jobs still running or queued end "cancelled", as the real engine's do."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)

    # -- the engine thread ----------------------------------------------------------------------------
    def _poke(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (self._held or (not self._active and not self._backlog)):
                    if self._held:
                        self._parked.set()
                    self._cond.wait()
                if self._closed:
                    leftover = [*self._active, *self._backlog]
                    break
                admitted = []
                while self._backlog and len(self._active) < self.slots:
                    job = self._backlog.popleft()
                    admitted.append(job)
                    if not job.cancelled:
                        self._active.append(job)
            for job in admitted:
                if job.cancelled:  # cancelled while queued: ends without running
                    self._finish(job, "cancelled")
                    continue
                job.stats.started = time.perf_counter()
                self.started.append(job.label)
                self.log.append(("start", job.label))
            for job in list(self._active):
                self._step(job)
            with self._cond:
                if not self._closed:
                    self._cond.wait(self.interval)
        for job in leftover:
            self._finish(job, "cancelled")

    def _step(self, job: FakeJob) -> None:
        if job.cancelled:
            if job.late <= 0:
                self._finish(job, "cancelled")
                return
            job.late -= 1  # a chunk already under way when the cancel came
        if job.sent < job.chunks:
            now = time.perf_counter()
            if job.stats.first_chunk is None:
                job.stats.first_chunk = now
            if job._flow is not None:
                job._flow.sent(1)
            pcm = f"{job.label}#{job.sent}".encode().ljust(CHUNK_BYTES, b"\0")
            job._emit(AudioChunk(pcm=pcm, frames=1, index=job.sent))
            job.sent += 1
            job.stats.frames += 1
            job.stats.chunks += 1
        if job.sent >= job.chunks:
            self._finish(job, "cancelled" if job.cancelled else job.planned)

    def _finish(self, job: FakeJob, outcome: str) -> None:
        with self._cond:
            if job in self._active:
                self._active.remove(job)
        job.stats.finished = time.perf_counter()
        job.result = outcome
        self.log.append(("end", job.label))
        try:
            if outcome == "error":
                job._emit(End(Outcome.ERROR, job.stats, error=RuntimeError(f"fake failure in {job.label}")))
            else:
                job._emit(End(Outcome(outcome), job.stats))
        finally:
            job._ended.set()
