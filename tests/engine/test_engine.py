"""The streaming engine against tiny random checkpoints: frames, PCM, cancellation, the worker."""

from __future__ import annotations

import dataclasses
import queue
import threading
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from qwen_stream.code_predictor import install_fast_code_predictor, uninstall_fast_code_predictor
from qwen_stream.decoder import Window, decode_windows, pcm16_to_float, to_pcm16
from qwen_stream.engine import Engine
from qwen_stream.events import AudioChunk, End
from qwen_stream.generation import (
    SynthesisError,
    SynthesisRequest,
    Voice,
    build_generate_inputs,
    generate_streaming,
)
from qwen_stream.settings import (
    BYTES_PER_FRAME,
    EngineSettings,
    FrameBudget,
    ModelSettings,
    SamplingSettings,
    StreamingSettings,
)
from qwen_stream.cloning import clone_prompt

TEXT = "Hello there, this is a streaming test."


def make_engine(model, **streaming) -> Engine:
    return Engine(model, EngineSettings(model=ModelSettings(path=model.source), streaming=StreamingSettings(**streaming)))


@pytest.fixture(scope="module")
def engine(custom_voice_model):
    eng = make_engine(custom_voice_model)
    yield eng
    eng.close()


def run(engine: Engine, request: SynthesisRequest):
    """All events of one request, and the codes it generated."""
    chunks, end = [], None
    for event in engine.stream(request, keep_codes=True):
        if isinstance(event, AudioChunk):
            chunks.append(event)
        else:
            end = event
    return chunks, end


@contextmanager
def hf_code_predictor(model):
    """The library's own per-frame HF generate in the code predictor, for reference runs."""
    uninstall_fast_code_predictor(model.inner.talker.code_predictor)
    try:
        yield
    finally:
        install_fast_code_predictor(model.inner.talker.code_predictor)


def library_frames(model, requests, seed, frames, sampling=SamplingSettings()):
    """What the library's own generate returns for the same inputs and seed (HF code predictor)."""
    inputs = build_generate_inputs(model, requests)
    kwargs = model.tts._merge_generate_kwargs(**sampling.overrides(), max_new_tokens=frames + 1)
    with hf_code_predictor(model):
        torch.manual_seed(seed)
        codes, _ = model.inner.generate(**inputs, **kwargs)
    return codes


def offline_pcm(model, codes, context=None) -> np.ndarray:
    """One decoder call over the whole utterance (with an ICL reference in front when given)."""
    full = codes if context is None else torch.cat([context, codes])
    wav = model.decode(full)
    return pcm16_to_float(to_pcm16(wav[-len(codes) * 1920 :]))


# -- frames ------------------------------------------------------------------------------------------


def test_hooked_frames_equal_library_generate_custom_voice(engine, custom_voice_model):
    request = SynthesisRequest(TEXT, "English", Voice(speaker="Ryan"), seed=11, max_frames=24)
    _, end = run(engine, request)
    expected = library_frames(custom_voice_model, [request], seed=11, frames=24)[0]
    assert end.codes.shape == (24, 16)
    assert torch.equal(end.codes, expected)


def test_hooked_frames_equal_library_generate_voice_design(voice_design_model):
    eng = make_engine(voice_design_model)
    try:
        request = SynthesisRequest(TEXT, "English", Voice(instruct="A calm, low voice."), seed=5, max_frames=20)
        _, end = run(eng, request)
    finally:
        eng.close()
    expected = library_frames(voice_design_model, [request], seed=5, frames=20)[0]
    assert torch.equal(end.codes, expected)


@pytest.mark.parametrize("ref_text", [None, "This is the reference transcript."], ids=["xvector", "icl"])
def test_hooked_frames_equal_library_generate_base_clone(base_model, reference_audio, ref_text):
    samples, rate = reference_audio
    voice = Voice(clone=clone_prompt(base_model, samples, rate, ref_text))
    eng = make_engine(base_model)
    try:
        request = SynthesisRequest(TEXT, "English", voice, seed=3, max_frames=16)
        chunks, end = run(eng, request)
    finally:
        eng.close()
    expected = library_frames(base_model, [request], seed=3, frames=16)[0]
    assert torch.equal(end.codes, expected)
    if ref_text:  # ICL: the reference's codes are the decoder's first context
        context = voice.clone.ref_code
        streamed = pcm16_to_float(b"".join(c.pcm for c in chunks))
        reference = offline_pcm(base_model, end.codes, context=context[-72:])
        assert np.abs(streamed - reference).max() <= 1e-3 * max(np.abs(reference).max(), 1e-6)


def test_fast_code_predictor_matches_hf_under_greedy(custom_voice_model):
    model = custom_voice_model
    request = SynthesisRequest(TEXT, "English", Voice(speaker="Eric"), max_frames=12)
    greedy = SamplingSettings(do_sample=False, subtalker_top_k=1)

    class Sink:
        def __init__(self):
            self.frames = []

        stopped = property(lambda self: len(self.frames) >= 12)

        def on_frame(self, codes):
            self.frames.append(codes.clone())

        def on_eos(self):
            pass

        def on_stopped(self):
            pass

    fast = Sink()
    generate_streaming(model, [request], [fast], greedy, max_new_frames=12)
    slow = Sink()
    with hf_code_predictor(model):
        generate_streaming(model, [request], [slow], greedy, max_new_frames=12)
    assert torch.equal(torch.stack(fast.frames), torch.stack(slow.frames))


class RecordingSink:
    def __init__(self, cap, cancel_after=None):
        self.frames, self.cap, self.cancel_after, self.cancelled = [], cap, cancel_after, False

    @property
    def stopped(self):
        return self.cancelled or len(self.frames) >= self.cap

    def on_frame(self, codes):
        self.frames.append(codes.clone())
        if self.cancel_after is not None and len(self.frames) >= self.cancel_after:
            self.cancelled = True

    def on_eos(self):
        self.cancelled = True

    def on_stopped(self):
        pass


def test_batch_rows_reach_their_own_sinks(custom_voice_model):
    model = custom_voice_model
    requests = [
        SynthesisRequest("First row speaks this sentence.", "English", Voice(speaker="Vivian"), seed=21),
        SynthesisRequest("第二行说中文。", "Chinese", Voice(speaker="Dylan"), seed=21),
    ]
    sinks = [RecordingSink(14), RecordingSink(14)]
    torch.manual_seed(21)
    generate_streaming(model, requests, sinks, SamplingSettings(), max_new_frames=14)
    expected = library_frames(model, requests, seed=21, frames=14)
    for sink, row in zip(sinks, expected):
        assert torch.equal(torch.stack(sink.frames), row)
    assert not torch.equal(expected[0], expected[1])


def test_cancelling_one_row_leaves_the_other_untouched(custom_voice_model):
    model = custom_voice_model
    requests = [
        SynthesisRequest("Row zero will be cancelled early.", "English", Voice(speaker="Vivian"), seed=8),
        SynthesisRequest("Row one runs to the end.", "English", Voice(speaker="Aiden"), seed=8),
    ]
    full = [RecordingSink(16), RecordingSink(16)]
    generate_streaming(model, requests, full, SamplingSettings(), max_new_frames=16)
    cut = [RecordingSink(16, cancel_after=4), RecordingSink(16)]
    generate_streaming(model, requests, cut, SamplingSettings(), max_new_frames=16)
    assert len(cut[0].frames) == 4
    assert torch.equal(torch.stack(cut[1].frames), torch.stack(full[1].frames))


# -- PCM ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decode", ["carried", "window"])
@pytest.mark.parametrize("chunk_size", [1, 4, 12])
def test_streamed_pcm_equals_offline_decode(custom_voice_model, chunk_size, decode):
    """90 frames (past the decoder's 72-frame attention window) streamed in chunks equal one decoder call over
    all of them: with the state carried, to the PCM step (float rounding only); with a 72-frame window of
    context, to 1e-3 of peak (the convolutions' context beyond the window is cut)."""
    eng = make_engine(custom_voice_model, chunk_size=chunk_size, first_chunk_size=1, decode=decode)
    try:
        chunks, end = run(eng, SynthesisRequest(TEXT, "English", Voice(speaker="Serena"), seed=2, max_frames=90))
    finally:
        eng.close()
    streamed = pcm16_to_float(b"".join(c.pcm for c in chunks))
    reference = offline_pcm(custom_voice_model, end.codes)
    assert len(streamed) == len(reference) == 90 * 1920
    peak = np.abs(reference).max()
    assert peak > 1e-3, "decoder output is near silent: the comparison would prove nothing"
    error = np.abs(streamed - reference).max()
    assert error <= (1.5 / 32767 if decode == "carried" else 1e-3 * peak)


def test_zero_context_visibly_differs_from_offline_decode(custom_voice_model):
    eng = make_engine(custom_voice_model, chunk_size=4, first_chunk_size=4, left_context=0, decode="window")
    try:
        chunks, end = run(eng, SynthesisRequest(TEXT, "English", Voice(speaker="Serena"), seed=2, max_frames=40))
    finally:
        eng.close()
    streamed = pcm16_to_float(b"".join(c.pcm for c in chunks))
    reference = offline_pcm(custom_voice_model, end.codes)
    assert np.abs(streamed - reference).max() > 0.05 * np.abs(reference).max()


def test_byte_count_and_first_chunk_before_generation_ends(engine, custom_voice_model):
    tap = custom_voice_model.tap
    steps_at_chunk = []
    events: queue.Queue = queue.Queue()

    def emit(event):
        if isinstance(event, AudioChunk):
            steps_at_chunk.append(tap.steps)
        events.put(event)

    start = tap.steps
    job = engine.submit(SynthesisRequest(TEXT, "English", Voice(speaker="Sohee"), seed=1, max_frames=30), emit)
    assert job.wait(120)
    received = []
    while not events.empty():
        received.append(events.get())
    end = received[-1]
    assert isinstance(end, End) and end.outcome == "capped"
    total = sum(len(e.pcm) for e in received if isinstance(e, AudioChunk))
    assert total == end.stats.frames * BYTES_PER_FRAME == 30 * BYTES_PER_FRAME
    assert len(steps_at_chunk) > 1
    assert steps_at_chunk[0] - start < 30  # the first chunk left while most frames were still to come
    first = next(e for e in received if isinstance(e, AudioChunk))
    assert first.frames == 1 and first.sample_rate == 24000 and first.sample_width == 2


def test_chunk_sizes_follow_the_doubling_schedule(custom_voice_model):
    eng = make_engine(custom_voice_model, chunk_size=6, first_chunk_size=1)
    try:
        chunks, _ = run(eng, SynthesisRequest(TEXT, "English", Voice(speaker="Eric"), seed=4, max_frames=20))
    finally:
        eng.close()
    assert [c.frames for c in chunks] == [1, 2, 4, 6, 6, 1]


# -- cancellation and the worker ---------------------------------------------------------------------


def test_cancel_stops_within_two_frames_and_next_request_works(engine, custom_voice_model):
    tap = custom_voice_model.tap
    state = {}
    done = threading.Event()

    def emit(event):
        if isinstance(event, AudioChunk) and event.index == 2 and "job" in state:
            state["job"].cancel()
            state["steps_at_cancel"] = tap.steps
        if not isinstance(event, AudioChunk):
            state["end"] = event
            done.set()

    job = engine.submit(SynthesisRequest(TEXT, "English", Voice(speaker="Vivian"), seed=9, max_frames=200), emit)
    state["job"] = job
    assert done.wait(120)
    assert state["end"].outcome == "cancelled"
    assert tap.steps - state["steps_at_cancel"] <= 2
    assert state["end"].stats.frames < 200
    assert engine.wait_idle(60)
    steps = tap.steps
    _, end = run(engine, SynthesisRequest(TEXT, "English", Voice(speaker="Vivian"), seed=9, max_frames=10))
    assert end.outcome == "capped" and end.stats.frames == 10
    assert tap.steps - steps == 10


def test_cancel_before_start_runs_nothing(engine, custom_voice_model):
    gate = threading.Event()
    blocker_events: queue.Queue = queue.Queue()

    def slow_emit(event):
        gate.wait(30)
        blocker_events.put(event)

    # Seeded: it runs alone, so the job below cannot join its batch.
    blocker = engine.submit(SynthesisRequest(TEXT, "English", Voice(speaker="Eric"), seed=2, max_frames=3), slow_emit)
    waiting_events: queue.Queue = queue.Queue()
    waiting = engine.submit(SynthesisRequest(TEXT, "English", Voice(speaker="Eric"), max_frames=50), waiting_events.put)
    waiting.cancel()
    gate.set()
    assert blocker.wait(60) and waiting.wait(60)
    end = waiting_events.get()
    assert isinstance(end, End) and end.outcome == "cancelled" and end.stats.frames == 0


def test_failing_job_reports_error_and_worker_keeps_serving(base_model, reference_audio):
    eng = make_engine(base_model)
    try:
        broken = SimpleNamespace(ref_code=None, ref_spk_embedding=torch.zeros(3), x_vector_only_mode=True,
                                 icl_mode=False, ref_text=None)
        with pytest.raises(RuntimeError):
            run(eng, SynthesisRequest(TEXT, "English", Voice(clone=broken), max_frames=5))
        samples, rate = reference_audio
        good = Voice(clone=clone_prompt(base_model, samples, rate))
        _, end = run(eng, SynthesisRequest(TEXT, "English", good, max_frames=5))
        assert end.outcome == "capped" and end.stats.frames == 5
        assert eng.wait_idle(60)  # the end event may come just before the worker clears its batch
    finally:
        eng.close()


def test_async_stream_cancels_when_the_consumer_leaves(engine, custom_voice_model):
    import asyncio

    tap = custom_voice_model.tap

    async def consume_two_chunks():
        agen = engine.astream(SynthesisRequest(TEXT, "English", Voice(speaker="Dylan"), max_frames=300))
        got = 0
        async for event in agen:
            got += 1
            if got == 2:
                break
        await agen.aclose()

    asyncio.run(consume_two_chunks())
    deadline = threading.Event()
    for _ in range(200):
        if engine.idle:
            break
        deadline.wait(0.05)
    assert engine.wait_idle(60)
    steps = tap.steps
    deadline.wait(0.3)
    assert tap.steps == steps  # nothing runs on behalf of the departed consumer


# -- requests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "voice, language, message",
    [
        (Voice(speaker="Nobody"), "English", "unknown speaker"),
        (Voice(), "English", "speaker is required"),
        (Voice(speaker="Vivian"), "Klingon", "unknown language"),
        (Voice(clone=object()), "English", "Base model"),
    ],
)
def test_bad_requests_are_refused_before_any_work(engine, custom_voice_model, voice, language, message):
    steps = custom_voice_model.tap.steps
    with pytest.raises(SynthesisError, match=message):
        engine.submit(SynthesisRequest(TEXT, language, voice), lambda e: None)
    assert custom_voice_model.tap.steps == steps and engine.idle


def test_frame_budget_grows_with_text_and_is_capped():
    budget = FrameBudget()
    assert budget.for_text("Hi.") == 25 + 2 * 3
    assert budget.for_text("你好") == 25 + 10
    assert budget.for_text("a" * 100_000) == budget.max_frames
    assert budget.for_text("Hello world") < budget.for_text("Hello world, and goodbye.")


def test_instruct_refused_by_a_06b_custom_voice_model(custom_voice_model):
    import dataclasses

    from qwen_stream.registry import ModelRegistry, ModelSpec

    registry = ModelRegistry.single(custom_voice_model)
    spec = registry.specs["custom_voice"]
    # What a 0.6B CustomVoice checkpoint declares ("0b6" is the library's marker; it drops instructions).
    registry.specs["custom_voice"] = ModelSpec(spec.family, spec.source, dataclasses.replace(spec.info, size="0b6"))
    eng = Engine(registry, EngineSettings(model=ModelSettings(path=custom_voice_model.source)))
    try:
        with pytest.raises(SynthesisError, match="cannot follow instructions"):
            eng.submit(SynthesisRequest(TEXT, "English", Voice(speaker="Vivian", instruct="whisper")), lambda e: None)
    finally:
        eng.close()


def test_windows_of_one_shape_are_decoded_in_one_call_as_each_alone(custom_voice_model):
    """The decode stage's batching: equal windows share one call, others get their own, and every row's
    waveform is its own decode (batched kernels differ by rounding only)."""
    model = custom_voice_model
    gen = torch.Generator().manual_seed(3)
    codes = [torch.randint(0, 2048, (t, 16), generator=gen) for t in (76, 76, 76, 5, 2)]
    windows = [Window(c, new) for c, new in zip(codes, (4, 4, 4, 4, 2), strict=True)]
    calls = []

    def counted(batch, keep):
        calls.append((batch.shape[0], batch.shape[1], keep))
        return model.decode_batch(batch, keep)

    wavs = decode_windows(counted, windows)
    assert sorted(calls) == [(1, 2, 2), (1, 5, 4), (3, 76, 4)]
    for window, wav in zip(windows, wavs, strict=True):
        alone = model.decode(window.codes, window.new)
        assert wav.shape == alone.shape
        assert torch.allclose(wav, alone, atol=1e-5), (float((wav - alone).abs().max()), window.codes.shape)


def test_staged_decode_of_the_last_frames_equals_the_full_decode(custom_voice_model):
    torch.manual_seed(0)
    codes = torch.randint(0, 2048, (80, 16))
    full = custom_voice_model.decode(codes)
    for keep in (1, 4, 12):
        cropped = custom_voice_model.decode(codes, keep=keep)[-keep * 1920 :]
        assert float((cropped - full[-keep * 1920 :]).abs().max()) < 1e-5


def _hold_engine(engine):
    return _hold_engine_with(engine, Voice(speaker="Eric"))


@pytest.mark.parametrize("mode", ["continuous", "static"])
def test_jobs_waiting_together_share_one_generate_call(custom_voice_model, mode):
    eng = Engine(custom_voice_model, EngineSettings(model=ModelSettings(path=custom_voice_model.source),
                                                    max_batch=3, engine=mode))
    try:
        gate, blocker = _hold_engine(eng)
        caps = [10, 14, 12]
        inboxes = [queue.Queue() for _ in caps]
        jobs = [eng.submit(SynthesisRequest(f"Batch row {i} says this.", "English", Voice(speaker="Ryan"),
                                            max_frames=cap), inbox.put, keep_codes=True)
                for i, (cap, inbox) in enumerate(zip(caps, inboxes))]
        steps = custom_voice_model.tap.steps
        gate.set()
        assert blocker.wait(60) and all(job.wait(120) for job in jobs)
        assert eng.wait_idle(60)  # the end event may come just before the worker clears its batch
        # One step makes a frame for every row: the batch took as many steps as its longest row.
        assert custom_voice_model.tap.steps - steps == max(caps)
        for cap, inbox in zip(caps, inboxes):
            events = [inbox.get() for _ in range(inbox.qsize())]
            end = events[-1]
            assert isinstance(end, End) and end.error is None and end.stats.frames == cap
            streamed = pcm16_to_float(b"".join(e.pcm for e in events if isinstance(e, AudioChunk)))
            reference = offline_pcm(custom_voice_model, end.codes)
            assert len(streamed) == cap * 1920
            assert np.abs(streamed - reference).max() <= 1e-3 * np.abs(reference).max()
    finally:
        eng.close()


@pytest.mark.parametrize("mode", ["continuous", "static"])
def test_a_requests_own_sampling_reaches_the_library_in_both_loops(custom_voice_model, mode):
    """The request's settings over the server's, in either loop; in the static loop (one generate call, one
    set of settings) jobs asking for different settings never share a call."""
    server = SamplingSettings(temperature=0.8)
    eng = Engine(custom_voice_model, EngineSettings(model=ModelSettings(path=custom_voice_model.source),
                                                    max_batch=3, engine=mode, sampling=server))
    try:
        own = SamplingSettings(temperature=1.5, top_k=20, subtalker_top_p=0.5)
        request = SynthesisRequest(TEXT, "English", Voice(speaker="Ryan"), seed=3, max_frames=10, sampling=own)
        _, end = run(eng, request)
        expected = library_frames(custom_voice_model, [request], 3, 10, server.merged(own))[0]
        assert torch.equal(end.codes, expected)
        assert not torch.equal(expected, library_frames(custom_voice_model, [request], 3, 10, server)[0])
        gate, blocker = _hold_engine(eng)
        unseeded = [dataclasses.replace(request, seed=None, sampling=s) for s in (own, None)]
        jobs = [eng.submit(r, lambda event: None) for r in unseeded]
        steps = custom_voice_model.tap.steps
        gate.set()
        assert blocker.wait(60) and all(job.wait(120) for job in jobs) and eng.wait_idle(60)
        taken = custom_voice_model.tap.steps - steps
        assert taken == (20 if mode == "static" else 10)  # static: one call each; continuous: one batch
    finally:
        eng.close()


def test_seeded_jobs_run_alone_to_stay_reproducible_in_the_static_loop(custom_voice_model):
    eng = Engine(custom_voice_model, EngineSettings(model=ModelSettings(path=custom_voice_model.source),
                                                    max_batch=4, engine="static"))
    try:
        request = SynthesisRequest(TEXT, "English", Voice(speaker="Vivian"), seed=13, max_frames=8)
        _, alone = run(eng, request)
        gate, blocker = _hold_engine(eng)
        inboxes = [queue.Queue(), queue.Queue()]
        jobs = [eng.submit(request, inbox.put, keep_codes=True) for inbox in inboxes]
        steps = custom_voice_model.tap.steps
        gate.set()
        assert blocker.wait(60) and all(job.wait(120) for job in jobs)
        assert custom_voice_model.tap.steps - steps == 16  # one after the other
        for inbox in inboxes:
            end = [inbox.get() for _ in range(inbox.qsize())][-1]
            assert torch.equal(end.codes, alone.codes)
    finally:
        eng.close()


def test_seeded_jobs_share_the_continuous_batch_and_stay_reproducible(custom_voice_model):
    """Each row samples from its own generator: seeded jobs batch together and still
    make exactly the frames they make alone."""
    eng = Engine(custom_voice_model, EngineSettings(model=ModelSettings(path=custom_voice_model.source),
                                                    max_batch=4))
    try:
        request = SynthesisRequest(TEXT, "English", Voice(speaker="Vivian"), seed=13, max_frames=8)
        _, alone = run(eng, request)
        gate, blocker = _hold_engine(eng)
        inboxes = [queue.Queue(), queue.Queue()]
        jobs = [eng.submit(request, inbox.put, keep_codes=True) for inbox in inboxes]
        steps = eng.steps
        gate.set()
        assert blocker.wait(60) and all(job.wait(120) for job in jobs)
        assert eng.steps - steps == 8  # together
        for inbox in inboxes:
            end = [inbox.get() for _ in range(inbox.qsize())][-1]
            assert torch.equal(end.codes, alone.codes)
    finally:
        eng.close()


@pytest.mark.parametrize("mode", ["continuous", "static"])
def test_a_batch_may_mix_icl_and_xvector_clones(base_model, reference_audio, mode):
    samples, rate = reference_audio
    icl = Voice(clone=clone_prompt(base_model, samples, rate, "The reference transcript."))
    xvector = Voice(clone=clone_prompt(base_model, samples, rate))
    eng = Engine(base_model, EngineSettings(model=ModelSettings(path=base_model.source), max_batch=2, engine=mode))
    try:
        gate, blocker = _hold_engine_with(eng, xvector)
        inboxes = [queue.Queue(), queue.Queue()]
        caps = (9, 12)
        jobs = [eng.submit(SynthesisRequest(TEXT, "English", voice, max_frames=cap), inbox.put, keep_codes=True)
                for voice, cap, inbox in zip((icl, xvector), caps, inboxes)]
        steps = base_model.tap.steps
        gate.set()
        assert blocker.wait(60) and all(job.wait(120) for job in jobs)
        assert eng.wait_idle(60)
        if mode == "static":
            assert base_model.tap.steps - steps == 12  # one batch
        for voice, cap, inbox in zip((icl, xvector), caps, inboxes):
            events = [inbox.get() for _ in range(inbox.qsize())]
            end = events[-1]
            assert isinstance(end, End) and end.error is None and end.stats.frames == cap
            streamed = pcm16_to_float(b"".join(e.pcm for e in events if isinstance(e, AudioChunk)))
            context = voice.context_codes[-72:] if voice.context_codes is not None else None
            reference = offline_pcm(base_model, end.codes, context=context)
            assert np.abs(streamed - reference).max() <= 1e-3 * np.abs(reference).max()
    finally:
        eng.close()


def _hold_engine_with(engine, voice):
    """Runs a short job (seeded: it runs alone in the static loop; it loads `voice`'s model) to its end, then holds
    the engine thread with a task until the returned gate is set: whatever is submitted meanwhile is taken
    together when it is released. Returns once the engine thread is really held."""
    blocker = engine.submit(SynthesisRequest(TEXT, "English", voice, seed=1, max_frames=2), lambda event: None)
    assert blocker.wait(60)
    gate, held = threading.Event(), threading.Event()

    def hold(registry):
        held.set()
        gate.wait(60)

    engine.run_task(hold)
    assert held.wait(60)
    return gate, blocker
