"""The continuous engine loop: rows join and leave a running batch between steps. Time is counted in the
engine's own steps (`Engine.steps`), never on the wall clock."""

from __future__ import annotations

import gc
import random
import threading
import time
import weakref

import numpy as np
import pytest
import torch

from qwen_stream.cloning import clone_prompt
from qwen_stream.continuous import Load, estimated_wait
from qwen_stream.decode_stage import DecodeStage
from qwen_stream.decoder import pcm16_to_float
from qwen_stream.engine import Engine
from qwen_stream.events import AudioChunk, End
from qwen_stream.generation import SynthesisRequest, Voice
from qwen_stream.model import LoadedModel
from qwen_stream.playback import Playback
from qwen_stream.registry import ModelInfo, ModelRegistry, ModelSpec
from qwen_stream.runner import TalkerRunner
from qwen_stream.settings import EngineSettings, ModelSettings, StreamingSettings

from .test_engine import offline_pcm, run
from .test_runner import library_frames

SAFETY = 120  # seconds; reached only when something hangs


def continuous(model, max_batch: int = 4) -> Engine:
    return Engine(model, EngineSettings(model=ModelSettings(path=model.source), max_batch=max_batch))


def speak(text: str, seed: int, frames: int, speaker: str = "Ryan") -> SynthesisRequest:
    return SynthesisRequest(text, "English", Voice(speaker=speaker), seed=seed, max_frames=frames)


LONG = speak("The long row goes on and on for a good while.", seed=3, frames=40)
PROBE = speak("The probe row says this sentence.", seed=7, frames=16, speaker="Vivian")
MATE = speak("A mate that comes and goes.", seed=9, frames=30, speaker="Eric")


class Recorder:
    """A job's events, and the engine step at which each chunk (and the End) reached it."""

    def __init__(self, engine: Engine, on_chunk=None):
        self.engine = engine
        self.events: list = []
        self.steps: list[int] = []
        self.on_chunk = on_chunk
        self.done = threading.Event()

    def __call__(self, event) -> None:
        self.events.append(event)
        self.steps.append(self.engine.steps)
        if isinstance(event, AudioChunk) and self.on_chunk is not None:
            self.on_chunk(event)
        if isinstance(event, End):
            self.done.set()

    @property
    def end(self) -> End:
        assert self.done.wait(SAFETY)
        end = self.events[-1]
        assert isinstance(end, End)
        return end

    @property
    def frames(self) -> int:
        return sum(e.frames for e in self.events if isinstance(e, AudioChunk))


def until(condition, timeout: float = SAFETY) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def solo_codes(engine: Engine, request: SynthesisRequest) -> torch.Tensor:
    _, end = run(engine, request)
    return end.codes


@pytest.fixture(scope="module")
def engine(custom_voice_model):
    eng = continuous(custom_voice_model)
    yield eng
    eng.close()


def test_a_new_utterance_gets_its_first_chunk_one_step_after_it_arrives_and_the_long_one_is_unchanged(engine):
    long_alone, short_alone = solo_codes(engine, LONG), solo_codes(engine, PROBE)
    long_rec, short_rec = Recorder(engine), Recorder(engine)
    long_job = engine.submit(LONG, long_rec, keep_codes=True)
    until(lambda: long_job.stats.frames >= 8)
    arrived = engine.steps
    engine.submit(PROBE, short_rec, keep_codes=True)
    assert short_rec.done.wait(SAFETY)
    first = next(step for event, step in zip(short_rec.events, short_rec.steps) if isinstance(event, AudioChunk))
    # At most the step under way when it arrived, then its prefill, then its own first step.
    assert first - arrived <= 2
    assert long_rec.end.stats.frames == 40 and torch.equal(long_rec.end.codes, long_alone)
    assert torch.equal(short_rec.end.codes, short_alone)


@pytest.mark.parametrize("scenario", ["joins_at_step_5", "joins_at_step_17", "mates_cancelled_around_it"])
def test_a_seeded_row_makes_the_same_frames_alone_or_joining_or_with_mates_leaving(engine, scenario):
    alone = solo_codes(engine, PROBE)
    probe = Recorder(engine)
    if scenario.startswith("joins_at_step"):
        k = int(scenario.rsplit("_", 1)[1])
        mate = engine.submit(MATE, Recorder(engine))
        until(lambda: mate.stats.frames >= k)
        engine.submit(PROBE, probe, keep_codes=True)
    else:
        mates: list = []

        def cancel_mates_soon(event):  # the probe's own chunks pace the cancels
            if event.index in (1, 3) and mates:
                mates.pop(0).cancel()

        probe.on_chunk = cancel_mates_soon
        mates.append(engine.submit(MATE, Recorder(engine)))
        engine.submit(PROBE, probe, keep_codes=True)
        mates.append(engine.submit(speak("Another mate, cancelled later.", seed=4, frames=30), Recorder(engine)))
        engine.submit(speak("A mate that joins after it.", seed=5, frames=6), Recorder(engine))
    assert probe.end.error is None and torch.equal(probe.end.codes, alone)
    assert engine.wait_idle(SAFETY)


def test_utterances_arriving_together_are_prefilled_together_and_start_at_the_same_step(engine, monkeypatch):
    """A burst of callers waits for one prefill, not for every prompt before theirs; frames are unchanged."""
    burst = [PROBE, MATE, speak("Third.", seed=5, frames=12), speak("A fourth caller, longer.", seed=6, frames=10)]
    alone = [solo_codes(engine, request) for request in burst]
    calls: list[int] = []
    prefill = TalkerRunner.prefill

    def counting(self, rows):
        calls.append(len(rows))
        return prefill(self, rows)

    monkeypatch.setattr(TalkerRunner, "prefill", counting)
    gate = threading.Event()
    held = engine.run_task(lambda registry: gate.wait(SAFETY))  # the engine thread waits while they arrive
    recorders = [Recorder(engine) for _ in burst]
    for request, recorder in zip(burst, recorders, strict=True):
        engine.submit(request, recorder, keep_codes=True)
    start = engine.steps
    gate.set()
    held.result(SAFETY)
    for recorder, expected in zip(recorders, alone, strict=True):
        assert recorder.end.error is None and torch.equal(recorder.end.codes, expected)
    assert calls == [4]
    firsts = {next(s for e, s in zip(r.events, r.steps) if isinstance(e, AudioChunk)) for r in recorders}
    assert len(firsts) == 1 and firsts.pop() - start <= 1
    assert engine.wait_idle(SAFETY)


def test_a_job_that_fails_to_attach_ends_alone_and_its_burst_mates_play(engine, monkeypatch):
    from qwen_stream.engine import Job

    alone = solo_codes(engine, MATE)
    attach = Job.attach

    def picky(self, model, streaming):
        if self.request is PROBE:
            raise RuntimeError("this job's decoder could not be built")
        return attach(self, model, streaming)

    monkeypatch.setattr(Job, "attach", picky)
    gate = threading.Event()
    held = engine.run_task(lambda registry: gate.wait(SAFETY))
    bad, good = Recorder(engine), Recorder(engine)
    engine.submit(PROBE, bad)
    engine.submit(MATE, good, keep_codes=True)
    gate.set()
    held.result(SAFETY)
    assert "could not be built" in str(bad.end.error)
    assert good.end.error is None and torch.equal(good.end.codes, alone)
    assert engine.wait_idle(SAFETY)


def test_a_job_cancelled_while_its_admission_fails_still_ends_once(engine, monkeypatch):
    """Admission fails as a whole (after the caller cancelled one of the jobs meanwhile): every job of it ends,
    each exactly once, and the engine is idle again."""
    prefill = TalkerRunner.prefill
    jobs: list = []

    def cancel_then_fail(self, rows):
        jobs[0].cancel()
        raise RuntimeError("admission failed (simulated)")

    monkeypatch.setattr(TalkerRunner, "prefill", cancel_then_fail)
    gate = threading.Event()
    held = engine.run_task(lambda registry: gate.wait(SAFETY))
    recorders = [Recorder(engine), Recorder(engine)]
    jobs.extend(engine.submit(request, recorder) for request, recorder in zip((PROBE, MATE), recorders, strict=True))
    gate.set()
    held.result(SAFETY)
    for recorder in recorders:
        assert recorder.end.error is not None
    assert engine.wait_idle(SAFETY)
    monkeypatch.setattr(TalkerRunner, "prefill", prefill)
    assert sum(isinstance(e, End) for r in recorders for e in r.events) == 2
    assert solo_codes(engine, PROBE) is not None  # the engine goes on


def test_cancelling_one_row_stops_it_within_one_step_and_the_others_go_on(engine):
    other_alone = solo_codes(engine, LONG)
    cancelled_at: list[int] = []

    def cancel_at_third_chunk(event):
        if event.index == 2:
            cancelled_at.append(engine.steps)
            victim.cancel()

    victim_rec, other_rec = Recorder(engine, on_chunk=cancel_at_third_chunk), Recorder(engine)
    victim = engine.submit(speak("This row is interrupted.", seed=2, frames=200), victim_rec)
    engine.submit(LONG, other_rec, keep_codes=True)
    end = victim_rec.end
    assert end.outcome == "cancelled" and end.stats.frames < 200
    assert victim_rec.steps[-1] - cancelled_at[0] <= 1  # it ended by the next step
    assert other_rec.end.outcome == "capped" and torch.equal(other_rec.end.codes, other_alone)
    assert engine.wait_idle(SAFETY)


def test_a_row_whose_prompt_fails_ends_alone_while_the_batch_goes_on(engine, custom_voice_model, monkeypatch):
    long_alone = solo_codes(engine, LONG)
    tokenize = custom_voice_model.tts._tokenize_texts

    def picky(texts):
        if any("BOOM" in t for t in texts):
            raise ValueError("the tokenizer refuses this text")
        return tokenize(texts)

    monkeypatch.setattr(custom_voice_model.tts, "_tokenize_texts", picky)
    long_rec, bad_rec = Recorder(engine), Recorder(engine)
    long_job = engine.submit(LONG, long_rec, keep_codes=True)
    until(lambda: long_job.stats.frames >= 3)
    engine.submit(speak("This one says BOOM.", seed=1, frames=10), bad_rec)
    assert bad_rec.end.error is not None and "refuses" in str(bad_rec.end.error)
    assert not any(isinstance(e, AudioChunk) for e in bad_rec.events)
    assert long_rec.end.error is None and torch.equal(long_rec.end.codes, long_alone)


def test_a_failing_step_fails_every_live_row_and_the_engine_goes_on(engine, monkeypatch):
    step = TalkerRunner.step
    calls = [0]

    def fails_once_at_the_fifth(self):
        calls[0] += 1
        if calls[0] == 5:
            raise RuntimeError("out of memory, say")
        return step(self)

    monkeypatch.setattr(TalkerRunner, "step", fails_once_at_the_fifth)
    recorders = [Recorder(engine) for _ in range(2)]
    for recorder, request in zip(recorders, (LONG, MATE)):
        engine.submit(request, recorder)
    for recorder in recorders:
        assert recorder.end.error is not None and "out of memory" in str(recorder.end.error)
    _, after = run(engine, speak("Still here.", seed=1, frames=4))
    assert after.outcome == "capped" and after.stats.frames == 4


def two_family_registry(*models: LoadedModel) -> ModelRegistry:
    specs = [ModelSpec(m.family, m.source, ModelInfo(m.family, m.size, tuple(m.speakers), tuple(m.languages)))
             for m in models]
    registry = ModelRegistry(specs, ModelSettings(path=models[0].source), max_loaded=len(models))
    registry._loaded.update((m.family, m) for m in models)  # already loaded, as ModelRegistry.single does
    return registry


def test_a_batch_is_one_model_and_the_other_family_goes_next_without_being_overtaken(
    custom_voice_model, voice_design_model
):
    eng = Engine(two_family_registry(custom_voice_model, voice_design_model),
                 EngineSettings(model=ModelSettings(path=custom_voice_model.source), max_batch=4))
    try:
        first, designed, second = Recorder(eng), Recorder(eng), Recorder(eng)
        job = eng.submit(speak("The custom voice speaks first.", seed=1, frames=20), first)
        until(lambda: job.stats.frames >= 2)
        eng.submit(SynthesisRequest("A designed voice.", "English", Voice(instruct="A calm voice."), seed=2,
                                    max_frames=6, family="voice_design"), designed)
        eng.submit(speak("The custom voice again.", seed=3, frames=6), second)
        for recorder in (first, designed, second):
            assert recorder.end.error is None and recorder.end.outcome == "capped"

        def first_chunk(recorder):
            return next(step for e, step in zip(recorder.events, recorder.steps) if isinstance(e, AudioChunk))

        assert first_chunk(designed) > first.steps[-1]  # it waited for the custom voice batch to drain
        assert first_chunk(second) > designed.steps[-1]  # and nobody of that family overtook it meanwhile
    finally:
        eng.close()


def test_each_loaded_model_keeps_its_runner_across_family_switches(custom_voice_model, voice_design_model):
    """Switching family and back reuses the first family's runner (its buckets' steps stay built: with
    --torch-compile a rebuild costs minutes), and its frames are unchanged."""
    eng = Engine(two_family_registry(custom_voice_model, voice_design_model),
                 EngineSettings(model=ModelSettings(path=custom_voice_model.source), max_batch=2))
    try:
        loop = eng._continuous
        alone = solo_codes(eng, PROBE)
        custom_runner = loop.runner
        assert custom_runner is not None and custom_runner.model is custom_voice_model
        solo_codes(eng, DESIGNED)
        assert loop.runner is not custom_runner and loop.runner.model is voice_design_model
        assert torch.equal(solo_codes(eng, PROBE), alone)
        assert loop.runner is custom_runner and len(loop._runners) == 2
    finally:
        eng.close()


def test_a_runner_goes_when_its_model_is_unloaded(custom_voice_model, voice_design_model):
    """With room for one model, each switch unloads the other family's model: its runner (and the buffers it
    holds) goes with it, and the family that comes back gets a new runner on its new model."""
    registry = two_family_registry(custom_voice_model, voice_design_model)
    with registry._lock:
        registry._loaded.clear()  # loaded from disk on demand, so unloading never touches the shared fixtures
    registry.max_loaded = 1
    eng = Engine(registry, EngineSettings(model=ModelSettings(path=custom_voice_model.source), max_batch=2))
    try:
        loop = eng._continuous
        alone = solo_codes(eng, PROBE)
        first = weakref.ref(loop.runner.model)
        solo_codes(eng, DESIGNED)
        assert list(loop._runners.values()) == [loop.runner] and loop.runner.model.family == "voice_design"
        gc.collect()
        assert first() is None  # nothing, no runner either, keeps the unloaded model's memory
        assert torch.equal(solo_codes(eng, PROBE), alone)
        assert list(loop._runners.values()) == [loop.runner] and loop.runner.model.family == "custom_voice"
        assert registry.unloads == 2
    finally:
        eng.close()


DESIGNED = SynthesisRequest("A designed voice.", "English", Voice(instruct="A calm voice."), seed=2, max_frames=4,
                            family="voice_design")


def test_no_slot_leaks_after_a_thousand_random_submits_and_cancels(custom_voice_model):
    eng = continuous(custom_voice_model, max_batch=3)
    rng = random.Random(0)
    texts = ["Hi.", "One two three.", "A short sentence here."]
    jobs = []
    try:
        for i in range(1000):
            request = SynthesisRequest(rng.choice(texts), "English", Voice(speaker="Ryan"), seed=i,
                                       max_frames=rng.randint(1, 4))
            jobs.append(eng.submit(request, lambda event: None))
            if rng.random() < 0.5:
                rng.choice(jobs[-8:]).cancel()
        assert eng.wait_idle(600) and all(job.ended for job in jobs)
        loop = eng._continuous
        assert loop is not None and not loop.rows and eng.report()["batch_rows"] == 0
        assert loop.runner is not None and loop.runner.free_slots == 3 and not loop.runner.live_rows
        _, end = run(eng, speak("After the churn.", seed=1, frames=3))
        assert end.stats.frames == 3
    finally:
        eng.close()


def test_the_estimated_wait_counts_jobs_that_need_a_slot_to_free_up():
    load = Load(steps=10, live_rows=4, step_s=0.05, decode_s=0.01, job_frames=50)
    assert estimated_wait(load, waiting=0, max_batch=8) == 0.0  # free slots: joins at the next step
    assert estimated_wait(load, waiting=3, max_batch=8) == 0.0
    assert estimated_wait(load, waiting=4, max_batch=8) == pytest.approx(50 * 0.06)  # all full: one job length
    assert estimated_wait(load, waiting=12, max_batch=8) == pytest.approx(2 * 50 * 0.06)
    assert estimated_wait(Load(), waiting=100, max_batch=1) == 0.0  # nothing measured: no refusal


def test_a_jobs_stats_time_each_stage_before_its_first_audio(engine):
    """What the benchmarks break a first audio into: queue, prefill (joining the batch), the first frame's step,
    then its decode and hand-off; each stage after the one before."""
    _, end = run(engine, speak("Time my stages.", seed=2, frames=6))
    stats = end.stats
    stages = [stats.submitted, stats.started, stats.joined, stats.first_frame, stats.first_chunk, stats.finished]
    assert all(t is not None for t in stages) and stages == sorted(stages)


def test_reported_load_after_work(engine):
    run(engine, speak("Measure me.", seed=1, frames=5))
    assert engine.wait_idle(SAFETY)  # its End comes just before its slot is counted free
    report = engine.report()
    assert report["mode"] == "continuous" and report["steps"] >= 5
    assert report["step_seconds"] > 0 and report["decode_seconds"] > 0 and report["batch_rows"] == 0


@pytest.mark.parametrize("draws", ["auto", "block"])
def test_rows_draw_their_noise_as_configured_and_make_the_librarys_frames_on_cpu(custom_voice_model, draws):
    """--noise-draws: auto draws a token at a time on CPU, block 16 steps per call (40 frames: three blocks).
    On CPU both give the library's values, so a seeded row beside a mate makes the library's own frames either
    way; /health says which ran."""
    model = custom_voice_model
    eng = Engine(model, EngineSettings(model=ModelSettings(path=model.source), max_batch=2, noise_draws=draws))
    try:
        expected = library_frames(model, LONG, 40)
        recorder = Recorder(eng)
        eng.submit(MATE, Recorder(eng))
        eng.submit(LONG, recorder, keep_codes=True)
        assert recorder.end.error is None and torch.equal(recorder.end.codes, expected)
        assert eng.report()["noise_draws"] == ("block" if draws == "block" else "token")
    finally:
        eng.close()


# -- the decode stage beside the step -----------------------------------------------------------------------


@pytest.mark.parametrize("overlap", ["on", "off"], ids=["own thread", "inline"])
def test_the_decode_stage_runs_beside_the_step_and_the_audio_is_whole(custom_voice_model, monkeypatch, overlap):
    """With overlap, windows decode on the stage's thread while the engine thread steps on; either way a row's
    chunks arrive in order, its End last, and the stream equals the offline decode of its frames."""
    model = custom_voice_model
    threads: dict[str, set[int]] = {"step": set(), "decode": set()}
    assert model.carried is not None  # chunks decode with the decoder's state carried (the default)
    decode, step = model.carried.decode, TalkerRunner.step

    me = threading.get_ident()  # the test's own offline decodes below are not the engine's

    def decoding(codes, states, keep=None):
        if threading.get_ident() != me:
            threads["decode"].add(threading.get_ident())
        return decode(codes, states, keep)

    def stepping(runner):
        threads["step"].add(threading.get_ident())
        return step(runner)

    monkeypatch.setattr(model.carried, "decode", decoding)
    monkeypatch.setattr(TalkerRunner, "step", stepping)
    eng = Engine(model, EngineSettings(model=ModelSettings(path=model.source), max_batch=2, decode_overlap=overlap))
    try:
        recorders = [Recorder(eng), Recorder(eng)]
        for recorder, request in zip(recorders, (LONG, PROBE), strict=True):
            eng.submit(request, recorder, keep_codes=True)
        for recorder in recorders:
            end = recorder.end
            assert all(isinstance(e, AudioChunk) for e in recorder.events[:-1])
            assert [e.index for e in recorder.events[:-1]] == list(range(len(recorder.events) - 1))
            streamed = pcm16_to_float(b"".join(e.pcm for e in recorder.events[:-1]))
            reference = offline_pcm(model, end.codes)
            assert len(streamed) == len(reference)
            assert np.abs(streamed - reference).max() <= 1e-3 * np.abs(reference).max()
    finally:
        eng.close()
    assert len(threads["step"]) == len(threads["decode"]) == 1
    assert (threads["decode"] != threads["step"]) == (overlap == "on")


def test_the_stage_keeps_order_bounds_what_waits_and_survives_a_failing_piece():
    stage = DecodeStage(overlap=True)
    gate, done = threading.Event(), []
    stage.submit(lambda: gate.wait(SAFETY))
    stage.submit(lambda: done.append(1))
    stage.submit(lambda: 1 / 0)  # logged; the stage goes on
    stage.submit(lambda: done.append(2))
    waiter = threading.Thread(target=stage.wait_for_room)
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and done == []  # four unfinished: the loop would wait before its next step
    gate.set()
    waiter.join(SAFETY)
    stage.drain()
    assert done == [1, 2]
    stage.close()
    inline = DecodeStage(overlap=False)
    inline.submit(lambda: done.append(3))
    assert done == [1, 2, 3]  # ran at once, on the caller's thread


def _chunk_frames(recorder: Recorder) -> list[int]:
    return [e.frames for e in recorder.events if isinstance(e, AudioChunk)]


def _always_dry(left, frames_due, load) -> bool:
    """The rule's clock-dependent decision, forced: every stream that has sent audio is about to run dry."""
    return left is not None


SCHEDULE_40 = [1, 2] + [4] * 9 + [1]  # LONG's 40 frames on the chunk schedule (1, doubling to 4; the tail)


def _early_engine(model, early: str, **streaming) -> Engine:
    return Engine(
        model,
        EngineSettings(
            model=ModelSettings(path=model.source),
            max_batch=2,
            early_chunks=early,
            streaming=StreamingSettings(**streaming),
        ),
    )


def _streamed_equals_offline(model, recorder: Recorder, codes, context=None) -> None:
    streamed = pcm16_to_float(b"".join(e.pcm for e in recorder.events if isinstance(e, AudioChunk)))
    reference = offline_pcm(model, codes, context=context)
    assert len(streamed) == len(reference)
    assert np.abs(streamed - reference).max() <= 1e-3 * max(np.abs(reference).max(), 1e-6)


@pytest.mark.parametrize("early", ["on", "off"])
def test_a_reader_about_to_run_dry_gets_each_frame_at_once_and_the_stream_is_still_exact(
    custom_voice_model, monkeypatch, early
):
    """Every reader said to run dry once it has audio (the rule's decision forced): with --early-chunks on, each
    frame after the first goes out as its own chunk, and the stream still equals the offline decode of its
    frames, which are the same as on the schedule; off, the schedule holds regardless. A job nobody plays as it
    comes (no playback: a file, a long-form job) keeps the schedule either way."""
    monkeypatch.setattr("qwen_stream.engine.runs_dry", _always_dry)
    eng = _early_engine(custom_voice_model, early)
    try:
        unplayed = Recorder(eng)
        eng.submit(LONG, unplayed, keep_codes=True)
        scheduled = unplayed.end.codes
        before = eng.report()["early_chunks"]
        recorder = Recorder(eng)
        eng.submit(LONG, recorder, keep_codes=True, playback=Playback())
        end = recorder.end
        sent_early = eng.report()["early_chunks"] - before
    finally:
        eng.close()
    assert _chunk_frames(unplayed) == SCHEDULE_40
    assert end.error is None and torch.equal(end.codes, scheduled)
    if early == "on":  # frames 2 to 39 early; the 40th ends the row and goes as its tail
        assert _chunk_frames(recorder) == [1] * 40 and sent_early == 38
    else:
        assert _chunk_frames(recorder) == SCHEDULE_40 and sent_early == 0
    _streamed_equals_offline(custom_voice_model, recorder, end.codes)


def test_early_chunks_of_an_icl_clone_after_a_larger_first_chunk_are_exact(base_model, reference_audio, monkeypatch):
    """An ICL clone's first chunk decodes the reference's codes in front of its own frames (they prime the
    decoder's state); with a first chunk of two frames and every later frame sent early, the stream still
    equals the offline decode with the reference in front."""
    monkeypatch.setattr("qwen_stream.engine.runs_dry", _always_dry)
    samples, rate = reference_audio
    voice = Voice(clone=clone_prompt(base_model, samples, rate, "This is the reference transcript."))
    eng = _early_engine(base_model, "on", first_chunk_size=2)
    try:
        recorder = Recorder(eng)
        request = SynthesisRequest("An early cloned stream.", "English", voice, seed=3, max_frames=12)
        eng.submit(request, recorder, keep_codes=True, playback=Playback())
        end = recorder.end
    finally:
        eng.close()
    assert end.error is None and _chunk_frames(recorder) == [2] + [1] * 10
    _streamed_equals_offline(base_model, recorder, end.codes, context=voice.clone.ref_code[-72:])


def test_a_reader_with_audio_to_spare_gets_the_schedule_and_its_stream_counts_every_sentence(custom_voice_model):
    """The rule itself, unforced: a stream whose earlier sentences left it a minute of audio never needs a
    chunk early, so the schedule holds; the job adds its own audio to the stream's playback (a later sentence of
    the stream counts it)."""
    eng = _early_engine(custom_voice_model, "on")
    playback = Playback()
    before = time.perf_counter()
    playback.sent(60.0, now=before)
    try:
        recorder = Recorder(eng)
        eng.submit(LONG, recorder, playback=playback)
        end = recorder.end
    finally:
        eng.close()
    assert end.error is None and _chunk_frames(recorder) == SCHEDULE_40
    # Its 40 frames (3.2 s) were added after the minute: the end of playback is at least that far from `before`.
    left = playback.left(before)
    assert left is not None and left >= 60.0 + 40 * 0.08 - 1e-9


def test_the_step_period_leaves_out_the_time_the_engine_was_idle(custom_voice_model):
    """The mean step period (what the early-chunk rule predicts a frame's time with) is measured between steps
    while rows run: an hour of idle time between two utterances (on the loop's clock) does not enter it."""
    eng = _early_engine(custom_voice_model, "on")
    offset = [0.0]
    loop = eng._continuous
    assert loop is not None
    loop.clock = lambda: time.perf_counter() + offset[0]
    try:
        run(eng, speak("Before the pause.", seed=1, frames=6))
        assert eng.wait_idle(SAFETY)
        offset[0] += 3600.0  # an hour passes with nothing to do
        run(eng, speak("After the pause.", seed=2, frames=6))
        period = eng.report()["step_period_seconds"]
    finally:
        eng.close()
    assert 0.0 < period < 60.0
