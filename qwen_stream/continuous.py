"""Continuous batching: the engine thread's loop on a TalkerRunner, where rows join and leave between steps.

One iteration: take what waits (tasks, new jobs up to the free slots, cancelled jobs to drain) in arrival
order; run each task; prefill the new jobs together into free slots (a prompt that fails fails that job only);
release the rows whose job stopped between steps (cancel, stall); then one talker step for every live row;
then the decode stage: each frame goes to its job (FlowControl, decoder window), every window due in this
step (the rows' chunks and the tails of rows that end) is decoded in one batched call per window shape, the
chunks go out, and rows that ended (EOS, cap, cancel, stall, their own error) end at once and free their slot.

A batch is one model: while rows of one family run, a job of another family waits at the head of the
line, and jobs behind it are not admitted past it, so the batch drains and the family switches (no
starvation, one runner at a time). Tasks run between steps, so a voice prompt never waits for an utterance.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .captured_decode import capture_chunk_graphs
from .decode_stage import DecodeStage
from .decoder import Window, decode_windows
from .runner import NewRow, TalkerRunner
from .static_step import buckets, graphs_possible

if TYPE_CHECKING:
    from .engine import Engine, Job
    from .generation import SynthesisRequest
    from .model import LoadedModel

log = logging.getLogger(__name__)

COMPILE_BACKEND = "inductor"  # torch.compile's backend for --torch-compile on
BUILD_ATTEMPTS = 3  # a runner's batches that try to build it whole (_build_all) before leaving it to first use
LOOKAHEAD = 64  # backlog entries looked at per iteration: admission costs the same with 10,000 waiting


@dataclass
class Load:
    """What the loop measured, for /health, /metrics and admission control. Means are exponential (the
    last few dozen steps or jobs). Read from other threads without a lock: each field is one value."""

    steps: int = 0  # talker steps made so far
    live_rows: int = 0
    step_s: float = 0.0  # one step: the talker and code predictor for every live row
    period_s: float = 0.0  # from one step's start to the next's, while rows run: the time a frame takes
    talker_s: float = 0.0
    code_predictor_s: float = 0.0
    decode_s: float = 0.0  # the decode stage after a step: every due window, every row
    prefill_s: float = 0.0  # one admission's prefill: every row that joins at that step, together
    early_chunks: int = 0  # chunks sent ahead of the schedule, their reader's audio about to run out
    job_frames: float = 0.0  # frames of a finished job
    kv_cache: str = ""  # "dynamic" or "static" once a runner exists
    cuda_graphs: bool = False  # the step replays captured CUDA graphs
    decode_cuda_graphs: bool = False  # the chunk decode replays captured CUDA graphs (captured_decode.py)
    prefill_cuda_graphs: bool = False  # prefills replay captured CUDA graphs where a bucket holds them
    torch_compile: bool = False  # the step runs torch.compile'd code
    noise_draws: str = ""  # "token" or "block" once a runner exists: how rows draw their sampling noise

    def record_step(self, talker: float, predictor: float, total: float) -> None:
        """After a step (`steps` was counted when it returned)."""
        first = self.step_s == 0.0
        self.talker_s = _mean(self.talker_s, talker, first)
        self.code_predictor_s = _mean(self.code_predictor_s, predictor, first)
        self.step_s = _mean(self.step_s, total, first)

    def record_period(self, seconds: float, first: bool) -> None:
        self.period_s = _mean(self.period_s, seconds, first)

    def record_decode(self, seconds: float) -> None:
        """After a step's decode stage (which may run beside the next step)."""
        self.decode_s = _mean(self.decode_s, seconds, self.steps == 1)

    def record_prefill(self, seconds: float, first: bool) -> None:
        self.prefill_s = _mean(self.prefill_s, seconds, first)

    def record_job(self, frames: int, first: bool) -> None:
        self.job_frames = _mean(self.job_frames, float(frames), first)


def _mean(old: float, new: float, first: bool, weight: float = 0.05) -> float:
    return new if first else old + weight * (new - old)


def estimated_wait(load: Load, waiting: int, max_batch: int) -> float:
    """Seconds until a job queued now gets a slot: none while fewer jobs wait than slots are free; otherwise
    one mean job length (mean frames x (step + decode time)) per `max_batch` jobs ahead that need a slot to
    free up. Rough on purpose: it ignores how far the live rows already are, which overstates the wait by at
    most one job length; 0 before anything was measured (no refusal on no evidence)."""
    free = max_batch - load.live_rows
    if waiting < free or load.steps == 0:
        return 0.0
    rounds = (waiting - free) // max_batch + 1
    return rounds * load.job_frames * (load.step_s + load.decode_s)


def _overlaps(setting: str) -> bool:
    return setting == "on" or (setting == "auto" and torch.cuda.is_available())


class ContinuousLoop:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.load = engine.load
        self.runner: TalkerRunner | None = None  # the batch's runner
        # One runner per loaded model, kept while the model stays loaded: a family switch must not rebuild
        # (recompile, recapture) every bucket's step, which --torch-compile pays in minutes.
        self._runners: dict[int, TalkerRunner] = {}
        # Runners built whole ahead of their rows (_build_all), and failed attempts at it so far.
        self._built: weakref.WeakSet[TalkerRunner] = weakref.WeakSet()
        self._build_failures: weakref.WeakKeyDictionary[TalkerRunner, int] = weakref.WeakKeyDictionary()
        engine.registry.on_unload.append(self._drop_runner)
        self.family: str | None = None  # the batch's model family while rows are live
        self.rows: dict[int, Job] = {}  # slot -> job
        self._jobs_done = 0
        self._last_step: float | None = None  # when the last step started, while rows run
        self.clock = time.perf_counter  # what the step period is measured with
        # Chunks and ends go out through the decode stage, in order; beside the next step when overlapping.
        self.stage = DecodeStage(_overlaps(engine.settings.decode_overlap))

    def run(self) -> None:
        from .engine import _STOP, _Task

        while True:
            if not self.rows:
                self._last_step = None  # the wait for work below is no step's period
            joining: list[Job] = []  # consecutive new jobs, prefilled together
            for item in self._take():
                if item is _STOP or isinstance(item, _Task):
                    self._admit_all(joining)
                    joining = []
                if item is _STOP:
                    self._stop()
                    return
                if not isinstance(item, _Task):
                    joining.append(item)
                    continue
                self._last_step = None  # a task (a voice prompt, a model load) is no step's period either
                try:
                    self.engine._run_task(item)
                except Exception:  # never lose the worker
                    log.exception("engine error running a task")
            self._admit_all(joining)
            try:
                self._release_stopped()
                if self.rows:
                    self._step()
            except Exception as error:  # never lose the worker: every live row fails, the loop goes on
                log.exception("engine error around jobs %s", [job.id for job in self.rows.values()])
                self._fail_all(error)

    # -- taking work (under the engine's lock) --------------------------------------------------------
    def _take(self) -> list:
        from .engine import _STOP, _Task

        engine = self.engine
        with engine._wake:
            while not self.rows and not engine._backlog:
                engine._wake.wait()
            backlog = engine._backlog
            family = self.family if self.rows else None
            free = self.runner.free_slots if self.runner is not None else engine.settings.max_batch
            blocked = False  # a job of another family waits ahead: nobody overtakes it
            seen = [backlog.popleft() for _ in range(min(LOOKAHEAD, len(backlog)))]
            taken, kept = [], []
            for index, item in enumerate(seen):
                if item is _STOP:
                    taken.append(item)
                    kept.extend(seen[index + 1 :])
                    break
                if isinstance(item, _Task) or item.cancelled:
                    taken.append(item)
                    continue
                wanted = engine._family(item)
                if family is None:
                    family = wanted
                if not blocked and wanted == family and free > 0:
                    taken.append(item)
                    free -= 1
                else:
                    blocked = blocked or wanted != family
                    kept.append(item)
            backlog.extendleft(reversed(kept))
            return taken

    # -- rows joining ---------------------------------------------------------------------------------
    def _admit_all(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        settled: set[int] = set()  # jobs that joined, or whose end is already on its way
        try:
            self._admit(jobs, settled)
        except Exception as error:  # never lose the worker; jobs that joined before the error go on
            log.exception("engine error admitting jobs %s", [job.id for job in jobs])
            for job in jobs:
                if id(job) not in settled:  # cancelled meanwhile or not, each job ends exactly once
                    self._end(job, error)

    def _admit(self, jobs: list[Job], settled: set[int]) -> None:
        """New jobs join the batch together: one prefill for all of them (runner.prefill), so a burst of
        callers waits for one forward rather than for every prompt before theirs. Each job that joins or is
        ended here goes into `settled`."""
        started = time.perf_counter()
        live = []
        for job in jobs:
            job.stats.started = started
            if job.cancelled:
                settled.add(id(job))
                self.stage.submit(functools.partial(self._finish, job))
            else:
                live.append(job)
        if not live:
            return
        family = self.engine._family(live[0])
        if any(self.engine._family(job) != family for job in live):  # _take admits one family at a time
            raise RuntimeError("jobs of two model families were admitted together")
        if self.rows and self.runner is not None:
            # Joins the batch's model as it is, even if a task evicted it from the registry meanwhile (the
            # runner keeps it alive): a reload waits until the batch has drained.
            model = self.runner.model
        else:
            if self.runner is not None and self.engine.registry.peek(self.runner.model.family) is not self.runner.model:
                self.runner = None  # its model was unloaded under a live batch: let go before loading another
            model = self.engine.registry.get(family)
            if self.runner is None or self.runner.model is not model:
                self.runner = self._runner_for(model)
            self._build_all(self.runner, live[0].request)  # a batch starts: nothing runs on the model
        attached = []
        for job in live:
            try:
                job.attach(model, self.engine.settings.streaming)
            except Exception as failure:  # this job's own failure (its voice's context, say): it alone ends
                settled.add(id(job))
                self._end(job, failure)
            else:
                attached.append(job)
        live = attached
        prefilling = time.perf_counter()
        admissions = self.runner.prefill([NewRow(job.request, max_frames=job.cap) for job in live])
        joined = time.perf_counter()
        if live:
            self.load.record_prefill(joined - prefilling, first=self.load.prefill_s == 0.0)
        for job, admission in zip(live, admissions, strict=True):
            settled.add(id(job))
            if admission.slot is None:
                error = admission.error or RuntimeError("refused")
                log.error("job %d refused: %s: %s", job.id, type(error).__name__, error)
                self._end(job, error)
                continue
            job.stats.joined = joined
            self.family = family
            self.rows[admission.slot] = job
            job.contended = self._contention
        self._publish()

    def _runner_for(self, model: LoadedModel) -> TalkerRunner:
        """The model's runner, kept from its last batch (its steps built, its buffers allocated), or a new one."""
        runner = self._runners.get(id(model))
        if runner is None or runner.model is not model:
            runner = self._runners[id(model)] = self._new_runner(model)
        self.load.kv_cache = "dynamic" if runner.max_len is None else "static"
        self._publish_step_kind(runner)
        return runner

    def _drop_runner(self, model: LoadedModel) -> None:
        """The registry unloads `model`: its runner goes, buffers and built steps with it, unless a batch is
        still running on it (it keeps the model alive until the batch drains)."""
        self._runners.pop(id(model), None)
        if self.runner is not None and self.runner.model is model and not self.rows:
            self.runner = None

    def _forget_runner(self) -> None:
        """The batch's runner is not to be used again (its step failed half-way)."""
        if self.runner is not None:
            self._runners.pop(id(self.runner.model), None)
        self.runner = None

    def _new_runner(self, model) -> TalkerRunner:
        settings = self.engine.settings
        graphs = settings.cuda_graphs == "on" or (settings.cuda_graphs == "auto" and graphs_possible(model))
        runner = TalkerRunner(
            model,
            settings.sampling,
            settings.max_batch,
            max_len=settings.cache_length(graphs),
            cuda_graphs=graphs,
            graphs_required=settings.cuda_graphs == "on",
            compile_backend=COMPILE_BACKEND if settings.torch_compile == "on" else None,
            noise_block=settings.noise_block(model.device.type),
        )
        runner.before_build = self.stage.drain
        return runner

    def _build_all(self, runner: TalkerRunner, request: SynthesisRequest) -> None:
        """A runner on an engine that captures or compiles, not yet built: every bucket's step, and the
        prefill's and chunk decode's graphs, are built now, while the batch is empty, with a short copy of the
        request that starts the batch (its voice, so its model's own prompt path). The server's warm-up does
        this for the default model; for another family it happens at its first batch, which waits for it. Built
        lazily instead, a step would be built the first time a batch reaches its bucket, holding every live row
        meanwhile, and the prefill and decode would stay eager. A failed build (out of memory beside another
        family's graphs, a request whose prompt fails) is logged and tried again at the runner's next batches,
        BUILD_ATTEMPTS in all, then left to the lazy path; the batch itself goes on either way."""
        wanted = runner.cuda_graphs or runner.compile_backend is not None
        failures = self._build_failures.get(runner, 0)
        if not wanted or runner in self._built or failures >= BUILD_ATTEMPTS:
            return
        started = time.perf_counter()
        try:
            built = runner.warm_up(dataclasses.replace(request, text="Warm up.", sampling=None))
        except Exception:
            self._build_failures[runner] = failures + 1
            log.warning(
                "building %s's steps ahead failed (attempt %d of %d); until then they build at first use",
                runner.model.family,
                failures + 1,
                BUILD_ATTEMPTS,
                exc_info=True,
            )
        else:
            self._built.add(runner)
            log.info("built %d steps of %s ahead in %.1f s", built, runner.model.family, time.perf_counter() - started)
        self._capture_decode(runner.model)
        self._publish_step_kind(runner)

    def _publish_step_kind(self, runner: TalkerRunner) -> None:
        """What the step runs as: either may turn off after a failed capture or compile."""
        self.load.cuda_graphs = runner.cuda_graphs
        self.load.torch_compile = runner.compile_backend is not None
        self.load.noise_draws = "block" if runner.noise_block else "token"
        self.load.prefill_cuda_graphs = runner.prefill_graphs is not None and runner.prefill_graphs.captured
        carried = runner.model.carried  # the chunk decode's graphs live on the model
        self.load.decode_cuda_graphs = carried is not None and carried.graphs is not None

    def warm_up(self, request: SynthesisRequest) -> int:
        """On the engine thread, idle, after a generation of `request` made the runner: builds the step of every
        batch-size bucket (compiling, capturing), so no request waits for that later. Returns the buckets built."""
        self.load.period_s = 0.0  # the warm-up generation's steps (lazy initialisation) predict no later ones
        if self.rows or self.runner is None or self.runner.model is not self.engine.registry.get(request.family):
            return 0
        built = self.runner.warm_up(request)
        self._built.add(self.runner)
        self._publish_step_kind(self.runner)
        self._capture_decode(self.runner.model)
        return built

    def _capture_decode(self, model: LoadedModel) -> None:
        """Captures the chunk decode's CUDA graphs (captured_decode.py) wherever the step's are wanted, at
        warm-up or at a model's first batch (`_build_all`), with the decode stage drained, so no other decode
        runs while a graph records."""
        settings = self.engine.settings
        carried = model.carried
        wanted = settings.cuda_graphs == "on" or (settings.cuda_graphs == "auto" and model.device.type == "cuda")
        if wanted and carried is not None and carried.graphs is None and settings.streaming.decode == "carried":
            self.stage.drain()
            try:
                capture_chunk_graphs(carried, buckets(settings.max_batch), settings.streaming.chunk_size)
            except Exception:
                if settings.cuda_graphs == "on":
                    raise
                log.warning("capturing the chunk decode failed; it runs eagerly", exc_info=True)
        self.load.decode_cuda_graphs = carried is not None and carried.graphs is not None

    def _contention(self) -> bool:
        """Anyone else needs the engine: another live row, or live work waiting (then a slow reader's
        stream buffers instead of holding the batch)."""
        return len(self.rows) > 1 or self.engine._live_work_waiting()

    # -- rows leaving ---------------------------------------------------------------------------------
    # A row leaves the batch on the engine thread at once (its slot is free for the next step); its job ends
    # through the decode stage, after the chunks handed in before.
    def _release_stopped(self) -> None:
        """Rows whose job stopped between steps (cancel, a reader gone, its own error) leave before the next step."""
        for slot, job in list(self.rows.items()):
            if job.stopped:
                self._detach(slot, release=True)
                self.stage.submit(functools.partial(self._finish, job))

    def _detach(self, slot: int, release: bool) -> Job:
        job = self.rows.pop(slot)
        if release and self.runner is not None:
            self.runner.release(slot)
        self._publish()
        return job

    def _finish(self, job: Job) -> None:
        job.finish()
        self._retire(job)

    def _end(self, job: Job, error: BaseException) -> None:
        def end() -> None:
            job.fail(error)
            self._retire(job)

        self.stage.submit(end)

    def _fail_all(self, error: BaseException) -> None:
        rows, self.rows = self.rows, {}
        self._publish()
        for job in rows.values():
            self._end(job, error)
        if self.runner is not None and self.runner.live_rows:  # the step failed before the runner noticed
            self._forget_runner()

    def _retire(self, job: Job) -> None:
        self.load.record_job(job.stats.frames, first=self._jobs_done == 0)
        self._jobs_done += 1
        engine = self.engine
        with engine._wake:
            engine._pending.discard(job)
            engine._wake.notify_all()

    def _publish(self) -> None:
        with self.engine._wake:
            self.engine._active = list(self.rows.values())
        self.load.live_rows = len(self.rows)

    def _stop(self) -> None:
        for slot in list(self.rows):
            self.stage.submit(functools.partial(self._finish, self._detach(slot, release=False)))
        self.runner = None
        self._runners.clear()
        if self._drop_runner in self.engine.registry.on_unload:
            self.engine.registry.on_unload.remove(self._drop_runner)
        self.stage.close()

    # -- the step and the decode stage ----------------------------------------------------------------
    def _decode(self, windows: list[tuple[Job, Window]], model: LoadedModel) -> float:
        """The decode stage: every due window of the step in as few decoder calls as their shapes allow, then
        each row's chunk goes out. If a batched call fails, each window is decoded alone, so only a row whose
        own window fails ends with the error. Returns the stage's seconds."""
        if not windows:
            return 0.0
        started = time.perf_counter()
        wavs: list[torch.Tensor | None]
        try:
            wavs = list(decode_windows(model.decode_batch, [window for _, window in windows]))
        except Exception:
            log.warning("a batched decode failed; decoding its windows one by one", exc_info=True)
            wavs = []
            for job, window in windows:
                try:
                    wavs.append(decode_windows(model.decode_batch, [window])[0])
                except Exception as error:  # this row's window: this row's failure
                    job.on_error(error)
                    wavs.append(None)
        elapsed = time.perf_counter() - started
        for (job, window), wav in zip(windows, wavs, strict=True):
            if wav is not None:
                try:
                    job.deliver(window, wav, elapsed / len(windows))
                except Exception as error:
                    job.on_error(error)
        return elapsed

    def _step(self) -> None:
        assert self.runner is not None
        started = self.clock()
        if self._last_step is not None:
            self.load.record_period(started - self._last_step, first=self.load.period_s == 0.0)
        self._last_step = started
        self.stage.wait_for_room()  # the decode of the step before last has ended
        try:
            result = self.runner.step()
        except Exception as error:  # every row is half-advanced; the runner has let them all go
            log.exception("step failed for jobs %s", [job.id for job in self.rows.values()])
            self._fail_all(error)
            return
        self.load.steps += 1  # before the frames go out: a job's first chunk is seen at the step that made it
        self.runner.model.tap.count_step()
        windows: list[tuple[Job, Window]] = []  # every row's due chunk, decoded together below
        leaving: list[tuple[int, bool]] = []
        early = self.engine.settings.early_chunks == "on"
        now = time.perf_counter()
        for frame in result.frames:
            job = self.rows[frame.slot]
            if not job.stopped:  # a cancel that came during the step: its frame is not wanted
                try:
                    window = job.take_frame(frame.codes)
                    if window is None and early and frame.end is None:
                        window = job.take_early(self.load, now)
                        self.load.early_chunks += window is not None
                except Exception as error:  # this row's decoder or sink: this row's failure
                    job.on_error(error)
                else:
                    if window is not None:
                        windows.append((job, window))
                if frame.end == "eos":
                    job.on_eos()
            if frame.end is not None or job.stopped:
                leaving.append((frame.slot, frame.end is None))
        for slot, _ in leaving:  # the tails of rows that end join the same decode
            job = self.rows[slot]
            try:
                tail = job.take_tail()
            except Exception as error:
                job.on_error(error)
            else:
                if tail is not None:
                    windows.append((job, tail))
        ended = [self._detach(slot, release) for slot, release in leaving]
        timings = result.timings
        if timings.built:  # only building a step turns capture or compiling off, after a failure
            self._publish_step_kind(self.runner)
            self._last_step = None  # nor does its period count
        else:  # a compile or capture (seconds) would hold the mean up for hundreds of steps
            self.load.record_step(timings.talker_s, timings.code_predictor_s, timings.total_s)

        model = self.runner.model

        def decode_stage() -> None:
            self.load.record_decode(self._decode(windows, model))
            for job in ended:
                self._finish(job)

        self.stage.submit(decode_stage, model.device)
