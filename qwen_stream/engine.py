"""The engine: one worker thread owns the model and runs jobs; callers get self-describing audio chunks.

Nothing here knows HTTP. A job is one utterance. Its state (decoder, cap, cancel flag, timings) lives on
the job, and the job is the sink its frames go to. The worker runs one of two loops (EngineSettings.engine):
"continuous" (continuous.py: rows join and leave a running batch between talker steps) or "static" (one
generate call per group of jobs that waited together; frames reach the job through the tap). Events reach
the caller through a callback that runs on the worker thread; `stream()` and `astream()` adapt it to a
plain generator and to an asyncio async generator (thread-safe hand-off into the event loop).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

import torch

from .catalog import FRAME_SECONDS
from .continuous import ContinuousLoop, Load, estimated_wait
from .decoder import StreamingDecoder, Window
from .events import AudioChunk, End, Event, Outcome, Stats
from .generation import (
    SynthesisError,
    SynthesisRequest,
    build_generate_inputs,
    check_request,
    frame_cap,
    generate_streaming,
)
from .model import LoadedModel
from .playback import Playback, runs_dry
from .registry import ModelRegistry
from .settings import EngineSettings, StreamingSettings

log = logging.getLogger(__name__)


EventCallback = Callable[[Event], None]


def _never() -> bool:
    return False


class FlowControl:
    """Bounds how far generation runs ahead of a reader: frames sent but not yet taken.

    Before each frame the engine waits while the reader is `limit` frames behind, unless others need the
    engine (then this stream buffers instead of holding them back). A reader that takes nothing for
    `timeout` seconds while audio waits for it is stalled: its job is stopped. Shared by the jobs of one
    stream (its segments)."""

    POLL = 0.05  # seconds between looks at whether someone else now needs the engine

    def __init__(self, max_ahead_frames: int, timeout: float):
        self.limit = max(1, max_ahead_frames)
        self.timeout = timeout
        self._unread = 0
        self._last_progress = time.monotonic()
        self._closed = False
        self._cond = threading.Condition()

    @property
    def unread(self) -> int:
        return self._unread

    def sent(self, frames: int) -> None:
        with self._cond:
            if self._unread <= 0:
                self._last_progress = time.monotonic()  # the reader owes nothing until now
            self._unread += frames

    def taken(self, frames: int) -> None:
        with self._cond:
            self._unread -= frames
            self._last_progress = time.monotonic()
            self._cond.notify_all()

    def close(self) -> None:
        """Nobody will wait for this reader again (it left, or its job was cancelled)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def nudge(self) -> None:
        """Someone else now needs the engine: a wait for room looks again at once."""
        with self._cond:
            self._cond.notify_all()

    def wait_for_room(self, contended: Callable[[], bool] = _never) -> bool:
        """Blocks while the reader is `limit` frames behind and nobody else needs the engine (`contended`).
        True: go on; False: the reader stalled (took nothing for `timeout` seconds)."""
        if self._closed or self._unread < self.limit:  # the common case, every frame: no lock
            return True
        with self._cond:
            while not self._closed and self._unread >= self.limit:
                if time.monotonic() - self._last_progress > self.timeout:
                    return False
                if contended():
                    return True
                self._cond.wait(self.POLL)
            return True


class Job:
    """One utterance in flight. Also the frame sink the tap writes to."""

    _ids = itertools.count(1)

    def __init__(
        self,
        request: SynthesisRequest,
        cap: int,
        emit: EventCallback,
        keep_codes: bool = False,
        flow: FlowControl | None = None,
        playback: Playback | None = None,
    ):
        self.id = next(Job._ids)
        self.request = request
        self.cap = cap
        self.stats = Stats()
        self.codes: list[torch.Tensor] | None = [] if keep_codes else None
        self._decoder: StreamingDecoder | None = None
        self._emit = emit
        self._flow = flow
        # Its reader's playback as the server estimates it (playback.py): the stream's, shared by its sentences;
        # None where nobody plays the audio as it comes (a file, a long-form job): its chunks keep the schedule.
        self.playback = playback
        # Frames of the windows handed to the decode stage, and of the chunks sent: the difference is audio on
        # its way (decoding beside the next step), which its reader will have. One writer each.
        self._frames_taken = 0
        self._frames_sent = 0
        self._cancelled = threading.Event()
        self._eos = False
        self._stalled = False
        self._error: BaseException | None = None  # this row failed; its batch mates go on
        # Set by the engine per batch: the other rows of this job's generate call, and whether anyone else
        # needs the engine now (a slow reader is not waited for then).
        self.mates: list[Job] = []
        self.contended: Callable[[], bool] = _never
        self._ended = threading.Event()

    # -- control (any thread) --------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stops generation for this job within one frame step (or before it starts)."""
        self._cancelled.set()
        if self._flow is not None:
            self._flow.close()  # an engine waiting for this job's reader stops waiting

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._ended.wait(timeout)

    def attach(self, model: LoadedModel, streaming: StreamingSettings) -> None:
        """Binds the job to the model that runs it (worker thread, just before generation)."""
        context = self.request.voice.context_codes
        self._decoder = StreamingDecoder(
            model.decode,
            streaming,
            context_codes=None if context is None else context.to(model.device),
            carried=model.carried,
        )

    # -- FrameSink (worker thread) -------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self._eos or self._cancelled.is_set() or self._error is not None or self.stats.frames >= self.cap

    def on_frame(self, codes: torch.Tensor) -> None:
        """The static loop's sink: the frame's chunk, if one is due, is decoded and sent at once."""
        window = self.take_frame(codes)
        if window is not None:
            assert self._decoder is not None
            started = time.perf_counter()
            wav = self._decoder.decode(window)
            self.deliver(window, wav, time.perf_counter() - started)

    def take_frame(self, codes: torch.Tensor) -> Window | None:
        """Counts the frame in; returns the window to decode when it completes a chunk (the continuous loop
        decodes every row's due window of a step together, then calls `deliver`)."""
        if self._flow is not None and not self._flow.wait_for_room(self.contended):
            log.warning("job %d: reader took nothing for %.0f s; stopping it as stalled", self.id, self._flow.timeout)
            self._stalled = True
            self._cancelled.set()
            return None
        if self.stats.frames == 0:
            self.stats.first_frame = time.perf_counter()
        self.stats.frames += 1
        if self.codes is not None:
            self.codes.append(codes.detach().cpu())
        assert self._decoder is not None  # made in attach(), before the first frame
        return self._taken(self._decoder.take(codes))

    def take_early(self, load: Load, now: float) -> Window | None:
        """The frames made since its last chunk, as a chunk now, ahead of the schedule, when its reader would
        run out of audio before the scheduled chunk is out (playback.runs_dry); else None. The audio left counts
        the chunks still decoding."""
        decoder, playback = self._decoder, self.playback
        if decoder is None or playback is None or self.stopped:
            return None
        left = playback.left(now)
        if left is not None:
            left += max(0, self._frames_taken - self._frames_sent) * FRAME_SECONDS
        if not runs_dry(left, decoder.frames_due, load):
            return None
        return self._taken(decoder.take_pending())

    def _taken(self, window: Window | None) -> Window | None:
        if window is not None:
            self._frames_taken += window.new
        return window

    def take_tail(self) -> Window | None:
        """The window of the frames not yet sent, for a row that ends now (none for a cancelled or failed one);
        `finish` flushes whatever is left if this was not called."""
        if self._ended.is_set() or self.cancelled or self._error is not None or self._decoder is None:
            return None
        return self._taken(self._decoder.take_tail())

    def deliver(self, window: Window, wav: torch.Tensor, seconds: float) -> None:
        """A decoded window's chunk goes out; `seconds`: this row's share of the decode. Not after this row
        failed: a window taken before the failure would continue audio that never went out."""
        self.stats.decode_seconds += seconds
        if self._error is None:
            self._send_chunk(window.pcm(wav))

    def on_eos(self) -> None:
        self._eos = True

    def on_error(self, error: BaseException) -> None:
        """This row alone failed (its decoder, its sink): it stops; the rest of the batch goes on."""
        log.error("job %d failed mid-generation: %s: %s", self.id, type(error).__name__, error)
        self._error = error

    # -- lifecycle (worker thread) ----------------------------------------------------------------------
    def _send_chunk(self, pcm: bytes) -> None:
        if self.stats.first_chunk is None:
            self.stats.first_chunk = time.perf_counter()
            if self.stats.started is not None:
                self.stats.engine_ttfb = self.stats.first_chunk - self.stats.started
        frames = AudioChunk.frames_in(pcm)
        self._frames_sent += frames
        if self.playback is not None:
            self.playback.sent(frames * FRAME_SECONDS, time.perf_counter())
        if self._flow is not None:
            self._flow.sent(frames)
        self._emit(AudioChunk(pcm=pcm, frames=frames, index=self.stats.chunks))
        self.stats.chunks += 1

    def nudge(self) -> None:
        if self._flow is not None:
            self._flow.nudge()

    @property
    def mates_running(self) -> bool:
        return any(not mate.stopped for mate in self.mates)

    def on_stopped(self) -> None:
        # A row that stopped (cap, EOS, cancel, its own error) while its batch goes on ends at once: its tail
        # and its end reach the client now, and the client's next utterance may queue. The batch's last row
        # ends when the generate call returns, as a lone job does.
        if not self._ended.is_set() and self.mates_running:
            self.finish()

    def finish(self) -> None:
        """Ends the job: flushes the decoder's tail, then one End (Outcome.ERROR if the row failed on its
        own). Idempotent: the first call ends it."""
        if self._ended.is_set():
            return
        if self._error is not None:
            self.fail(self._error)
            return
        if not self.cancelled and self._decoder is not None:
            started = time.perf_counter()
            try:
                tail = self._decoder.flush()
            except Exception as error:  # this row's decoder, this row's failure
                self.fail(error)
                return
            if tail is not None:
                self.stats.decode_seconds += time.perf_counter() - started
                self._send_chunk(tail)
        self._stop_clock()
        self.stats.eos = self._eos
        outcome = (
            Outcome.STALLED
            if self._stalled
            else Outcome.CANCELLED
            if self.cancelled
            else (Outcome.DONE if self._eos else Outcome.CAPPED)
        )
        codes = None
        if self.codes is not None:
            codes = torch.stack(self.codes) if self.codes else torch.zeros((0, 16), dtype=torch.long)
        self._end(End(outcome, self.stats, codes=codes))

    def fail(self, error: BaseException) -> None:
        if self._ended.is_set():
            return
        self._stop_clock()
        self._end(End(Outcome.ERROR, self.stats, error=error))

    def _stop_clock(self) -> None:
        self.stats.finished = time.perf_counter()
        if self.stats.started is not None:
            self.stats.compute_seconds = self.stats.finished - self.stats.started

    def _end(self, event: Event) -> None:
        try:
            self._emit(event)
        finally:
            self._ended.set()
            # Batch mates and the decoder's window are not needed any more: let them go with the batch.
            self.mates, self.contended, self._decoder = [], _never, None


def is_last(event: Event) -> bool:
    """The one rule for draining a job's events: an End is the last; an End with an error raises it."""
    if isinstance(event, End):
        if event.error is not None:
            raise event.error
        return True
    return False


def collect(events: Iterable[Event]) -> tuple[bytes, End]:
    """Drains a job's events: all its PCM and its End (raises the job's error)."""
    pcm = bytearray()
    for event in events:
        if is_last(event):
            assert isinstance(event, End)
            return bytes(pcm), event
        assert isinstance(event, AudioChunk)
        pcm += event.pcm
    raise RuntimeError("the events ended without an End")


async def acollect(events: AsyncIterator[Event]) -> tuple[bytes, End]:
    """collect() for astream(): all of a job's PCM and its End (raises the job's error)."""
    pcm = bytearray()
    async for event in events:
        if is_last(event):
            assert isinstance(event, End)
            return bytes(pcm), event
        assert isinstance(event, AudioChunk)
        pcm += event.pcm
    raise RuntimeError("the events ended without an End")


_STOP = object()
BATCH_LOOKAHEAD = 64  # backlog entries searched for batch mates


class _Task:
    """A function to run on the engine thread with the registry (voice prompts, model loads)."""

    def __init__(self, fn: Callable[[ModelRegistry], object]):
        self.fn = fn
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class Engine:
    """Owns the models (through the registry) and the only thread that touches them."""

    def __init__(self, models: ModelRegistry | LoadedModel, settings: EngineSettings):
        self.registry = models if isinstance(models, ModelRegistry) else ModelRegistry.single(models)
        self.settings = settings
        self._backlog: deque = deque()  # jobs and tasks, in arrival order
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._active: list[Job] = []
        self._pending: set[Job] = set()
        self.load = Load()
        self._continuous = ContinuousLoop(self) if settings.engine == "continuous" else None
        target = self._continuous.run if self._continuous is not None else self._run
        self._thread = threading.Thread(target=target, name="qwen-stream-engine", daemon=True)
        self._thread.start()

    # -- submitting -----------------------------------------------------------------------------------
    def submit(
        self,
        request: SynthesisRequest,
        emit: EventCallback,
        keep_codes: bool = False,
        flow: FlowControl | None = None,
        playback: Playback | None = None,
    ) -> Job:
        """Validates and queues a request. Raises SynthesisError for a request this model cannot serve.
        With `flow`, generation waits for the reader (see FlowControl). `playback`: the stream's, when the job
        continues one (its earlier sentences' audio counts as played from it)."""
        if request.family is not None and not self.registry.serves(request.family):
            raise SynthesisError(f"no {request.family} model is configured on this server")
        check_request(self.registry.info(request.family), request)
        if not self._thread.is_alive():
            raise RuntimeError("engine is closed")
        job = Job(
            request, frame_cap(request, self.settings.budget), emit, keep_codes=keep_codes, flow=flow, playback=playback
        )
        with self._wake:
            self._pending.add(job)
            self._backlog.append(job)
            self._wake.notify()
            self._nudge_active()
        return job

    def stream(self, request: SynthesisRequest, keep_codes: bool = False) -> Iterator[Event]:
        """Blocking generator of chunks, ending with the End. Raises the job's error, if any.
        Closing the generator early cancels the job."""
        events: queue.Queue = queue.Queue()
        job = self.submit(request, events.put, keep_codes=keep_codes)
        try:
            while True:
                event = events.get()
                last = is_last(event)  # raises a failed job's error instead of handing its End out
                yield event
                if last:
                    return
        finally:
            job.cancel()

    def submit_async(
        self, request: SynthesisRequest, loop: asyncio.AbstractEventLoop | None = None
    ) -> tuple[Job, asyncio.Queue]:
        """Queues a request whose events arrive in an asyncio.Queue of the given (or running) loop."""
        loop = loop or asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job_ref: list[Job] = []

        def emit(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop is gone (shutdown): nobody listens any more
                if job_ref:
                    job_ref[0].cancel()

        job = self.submit(request, emit)
        job_ref.append(job)
        return job, events

    async def astream(self, request: SynthesisRequest) -> AsyncIterator[Event]:
        """Async generator counterpart of stream(). Leaving it early (disconnect) cancels the job."""
        job, events = self.submit_async(request)
        try:
            while True:
                event = await events.get()
                last = is_last(event)  # raises a failed job's error instead of handing its End out
                yield event
                if last:
                    return
        finally:
            job.cancel()

    def run_task(self, fn: Callable[[ModelRegistry], object]) -> concurrent.futures.Future:
        """Runs fn(registry) on the engine thread, between jobs; its result or error lands in the future."""
        if not self._thread.is_alive():
            raise RuntimeError("engine is closed")
        task = _Task(fn)
        with self._wake:
            self._backlog.append(task)
            self._wake.notify()
            self._nudge_active()
        return task.future

    # -- state ----------------------------------------------------------------------------------------
    @property
    def model(self) -> LoadedModel | None:
        """The default family's model, when loaded."""
        return self.registry.peek()

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._active and not self._pending

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Blocks until no job is queued or running (True), or the timeout passes (False)."""
        with self._wake:
            return self._wake.wait_for(lambda: not self._active and not self._pending, timeout)

    @property
    def backlog(self) -> int:
        """Jobs and tasks waiting for the engine thread."""
        with self._lock:
            return len(self._backlog)

    @property
    def steps(self) -> int:
        """Talker steps the continuous loop has made (the static loop's steps are counted by the tap)."""
        return self.load.steps

    @property
    def waiting(self) -> int:
        """Live jobs waiting for a slot (a client has at most one: these are the clients' heads)."""
        with self._lock:
            ahead = itertools.islice(self._backlog, BATCH_LOOKAHEAD)
            return sum(1 for item in ahead if isinstance(item, Job) and not item.cancelled)

    def estimated_wait(self) -> float:
        """Seconds a job submitted now would wait for a slot (continuous.estimated_wait); 0 for the static
        loop, which measures no step time."""
        if self.settings.engine != "continuous":
            return 0.0
        return estimated_wait(self.load, self.waiting, self.settings.max_batch)

    def report(self) -> dict[str, float | int | str | bool]:
        """The engine's load for /health and /metrics: batch occupancy, waiting heads, mean step and decode
        stage times (seconds; the continuous loop's, zero for the static one)."""
        load = self.load
        return {
            "mode": self.settings.engine,
            "kv_cache": load.kv_cache,
            "cuda_graphs": load.cuda_graphs,
            "torch_compile": load.torch_compile,
            "decode_cuda_graphs": load.decode_cuda_graphs,
            "prefill_cuda_graphs": load.prefill_cuda_graphs,
            "noise_draws": load.noise_draws,
            "max_batch": self.settings.max_batch,
            "batch_rows": load.live_rows,
            "waiting": self.waiting,
            "steps": load.steps,
            "step_seconds": load.step_s,
            "talker_seconds": load.talker_s,
            "code_predictor_seconds": load.code_predictor_s,
            "decode_seconds": load.decode_s,
            "prefill_seconds": load.prefill_s,
            "step_period_seconds": load.period_s,
            "early_chunks": load.early_chunks,
            "estimated_wait_seconds": self.estimated_wait(),
            # Demand over capacity: rows in use plus heads waiting for one, per batch row. Below 1 a new
            # utterance starts at the next step; above it, it queues. What a router or an autoscaler reads.
            "load": round((load.live_rows + self.waiting) / max(1, self.settings.max_batch), 3),
        }

    def warmup(self, request: SynthesisRequest) -> Stats:
        """One short generation so first-request latency does not include lazy initialisation; then, on the
        continuous loop, every batch-size bucket's step is built (compiled, captured) where that is slow."""
        stats = collect(self.stream(request))[1].stats
        loop = self._continuous
        if loop is not None:
            self.run_task(lambda _registry: loop.warm_up(request)).result()
        return stats

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            jobs = list(self._pending)
        for job in jobs:
            job.cancel()
        with self._wake:
            self._backlog.append(_STOP)
            self._wake.notify()
        self._thread.join(timeout)

    # -- worker thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._backlog:
                    self._wake.wait()
                item = self._backlog.popleft()
                if isinstance(item, Job):
                    # A cancelled job ends at once: draining thousands of them must cost nothing per job.
                    batch = [item] if item.cancelled else [item, *self._take_batch_mates(item)]
                    self._active = batch
            if item is _STOP:
                return
            if isinstance(item, _Task):
                self._run_task(item)
                continue
            try:
                self._run_batch(batch)
            except Exception as error:  # never lose the worker: whoever has not ended yet fails alone
                log.exception("engine error around jobs %s", [job.id for job in batch])
                for job in batch:
                    job.fail(error)
            finally:
                with self._wake:
                    self._active = []
                    self._pending.difference_update(batch)
                    self._wake.notify_all()

    def _family(self, job: Job) -> str:
        return job.request.family or self.registry.default_family

    def _take_batch_mates(self, first: Job) -> list[Job]:
        """Queued jobs that can share `first`'s generate call: same model, same sampling settings (one generate
        call takes one set), no fixed seed (one RNG serves the whole batch, so a seeded job runs alone to stay
        reproducible). Called with the lock held.

        Looks only a bounded way into the backlog, so taking a job costs the same with 10 or 10,000 behind it."""
        limit = self.settings.max_batch - 1
        if limit <= 0 or first.request.seed is not None:
            return []
        family = self._family(first)
        mates: list[Job] = []
        for item in itertools.islice(self._backlog, BATCH_LOOKAHEAD):
            if len(mates) == limit:
                break
            if (
                isinstance(item, Job)
                and item.request.seed is None
                and item.request.sampling == first.request.sampling
                and not item.cancelled
                and self._family(item) == family
            ):
                mates.append(item)
        for mate in mates:
            self._backlog.remove(mate)
        return mates

    def _run_task(self, task: _Task) -> None:
        if not task.future.set_running_or_notify_cancel():
            return
        try:
            task.future.set_result(task.fn(self.registry))
        except BaseException as error:  # handed to the caller; the worker lives on
            task.future.set_exception(error)

    def _run_batch(self, jobs: list[Job]) -> None:
        """One generate call; row i streams into jobs[i]. Each row stops on its own (EOS, cap, cancel, its
        own failure); a failure of the whole call before any frame is retried without the rows that cause it."""
        started = time.perf_counter()
        for job in jobs:
            job.stats.started = started
        live = [job for job in jobs if not job.cancelled and not job.ended]
        for job in jobs:
            if job.cancelled:
                job.finish()
        if not live:
            return
        try:
            model = self.registry.get(live[0].request.family)
            for job in live:
                job.attach(model, self.settings.streaming)
                job.mates = [mate for mate in live if mate is not job]
                job.contended = self._contention(job)
            generate_streaming(
                model,
                [job.request for job in live],
                live,
                self.settings.sampling,
                max_new_frames=max(job.cap for job in live),
            )
        except Exception as error:
            if len(live) > 1 and not any(job.stats.frames for job in live):
                self._run_without_bad_rows(live, error)
                return
            log.exception("batch of %d failed (jobs %s)", len(live), [job.id for job in live])
            for job in live:
                job.fail(error)
            return
        for job in live:
            job.finish()

    def _contention(self, job: Job) -> Callable[[], bool]:
        """Whether anyone but `job` needs the engine: a live batch mate, or live work waiting in the backlog
        (cancelled jobs there wait only to be drained)."""
        return lambda: job.mates_running or self._live_work_waiting()

    def _live_work_waiting(self) -> bool:
        return any(
            isinstance(item, _Task) or (isinstance(item, Job) and not item.cancelled)
            for item in itertools.islice(self._backlog, BATCH_LOOKAHEAD)
        )

    def _nudge_active(self) -> None:
        """New work arrived: a job waiting for its reader reconsiders now, not at its next poll."""
        for job in self._active:
            job.nudge()

    def _run_without_bad_rows(self, jobs: list[Job], error: Exception) -> None:
        """The batch failed before its first frame (a prompt the tokenizer refuses, say): find the rows
        whose own prompt fails, fail them alone, and run the others again."""
        log.warning(
            "batch of %d failed before its first frame (%s: %s); retrying its rows apart",
            len(jobs),
            type(error).__name__,
            error,
        )
        good = []
        for job in jobs:
            try:
                build_generate_inputs(self.registry.get(job.request.family), [job.request])
            except Exception as row_error:
                log.error("job %d refused: %s: %s", job.id, type(row_error).__name__, row_error)
                job.fail(row_error)
            else:
                good.append(job)
        if len(good) == len(jobs):  # no row is to blame on its own: each runs alone
            for job in good:
                self._run_batch([job])
        elif good:
            self._run_batch(good)
