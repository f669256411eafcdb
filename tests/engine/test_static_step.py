"""The static step (static_step.py): what a CUDA graph captures, run eagerly here. Its frames are checked against
the library's in test_runner.py (every test there runs the static layout too); these check what capture needs
and the server's wiring of it."""

from __future__ import annotations

import dataclasses
import threading
from types import SimpleNamespace

import pytest
import torch
from torch._dynamo.utils import counters
from torch.utils._python_dispatch import TorchDispatchMode

from qwen_stream import continuous
from qwen_stream.engine import Engine
from qwen_stream.generation import SynthesisRequest, Voice
from qwen_stream.runner import NewRow, TalkerRunner
from qwen_stream.settings import PROMPT_ROOM, EngineSettings, FrameBudget, ModelSettings, SamplingSettings
from qwen_stream.static_step import EVERY, CompiledStep, StaticStep, bucket_for, buckets
from tests.engine.test_runner import MATES, PROBE, Driver, library_frames, solo, speak

# Ops that read a device value back to the host: each would stall a GPU, and none can be captured.
READ_BACKS = {"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "item", "masked_select", "unique_dim"}


class HostReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name.lstrip("_") in {r.lstrip("_") for r in READ_BACKS}:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def test_buckets_cover_every_batch_size_with_few_graphs():
    assert buckets(1) == [1] and buckets(4) == [1, 2, 4] and buckets(6) == [1, 2, 4, 6]
    assert buckets(32) == [1, 2, 4, 8, 16, 32]
    assert [bucket_for(rows, 6) for rows in range(1, 7)] == [1, 2, 4, 4, 6, 6]


def test_the_step_reads_nothing_back_to_the_host(custom_voice_model):
    """What makes it capturable: a step with rows of mixed settings, run under a mode that sees every op."""
    runner = TalkerRunner(custom_voice_model, SamplingSettings(), max_batch=4, max_len=96)
    greedy = SynthesisRequest("A greedy row.", "English", Voice(speaker="Ryan"), seed=1,
                              sampling=SamplingSettings(do_sample=False, top_p=0.5))
    runner.prefill([NewRow(PROBE), NewRow(greedy), NewRow(MATES["short"])])
    runner.step()
    (step,) = runner._steps.values()
    assert isinstance(step, StaticStep) and step.rows == 4  # three rows: the bucket of four
    with torch.inference_mode(), HostReads() as reads:
        step.run()
    assert reads.seen == []
    with HostReads() as control:  # the mode does see a read-back
        bool(torch.ones(1).any())
    assert control.seen


def test_rows_keep_their_frames_as_the_bucket_grows_and_shrinks(custom_voice_model):
    """A probe in slot 0 runs at bucket 1, then 2 and 4 as mates join in higher slots, then 1 again."""
    model = custom_voice_model
    expected = solo(model, PROBE)
    driver = Driver(TalkerRunner(model, SamplingSettings(), max_batch=4, max_len=96))
    driver.join(probe=PROBE)
    driver.step(2)
    driver.join(a=MATES["short"], b=MATES["long"])  # slots 1 and 2: bucket 4
    driver.step(3)
    driver.release("a")
    driver.release("b")
    driver.finish()
    assert sorted(driver.runner._steps) == [1, 4]
    assert torch.equal(driver.codes("probe"), expected)


def test_a_step_that_builds_a_buckets_step_says_so(custom_voice_model):
    """Its time (a compile or a capture: seconds) is left out of the engine's mean step time, which admission
    control multiplies into wait estimates."""
    runner = TalkerRunner(custom_voice_model, SamplingSettings(), max_batch=2, max_len=96)
    runner.prefill([NewRow(PROBE)])
    assert runner.step().timings.built and not runner.step().timings.built
    runner.prefill([NewRow(MATES["short"])])
    assert runner.step().timings.built and not runner.step().timings.built


def test_rows_left_high_in_the_batch_move_down_and_keep_their_frames(custom_voice_model):
    """Mates take batch rows 0 and 1, the probe and a late row 2 and 3 (bucket 4). When the mates leave (one
    released, one at its cap), the two left move to rows 0 and 1 and step at bucket 2, then 1: the bucket
    follows the live count, not the highest index ever used, and nobody's frames change."""
    model = custom_voice_model
    runner = TalkerRunner(model, SamplingSettings(), max_batch=4, max_len=96)
    driver = Driver(runner)
    short = dataclasses.replace(MATES["short"], max_frames=4)
    driver.join(a=MATES["long"], b=short)
    driver.step(1)
    driver.join(probe=PROBE, late=MATES["late"])
    assert runner.step_rows == 4
    driver.step(2)
    driver.release("a")
    assert runner.step_rows == 4  # three live rows still need the bucket of four
    driver.step(1)  # b makes its 4th frame, its last
    assert "b" in driver.ends and runner.step_rows == 2
    assert [index for index, row in enumerate(runner._order) if row is not None] == [0, 1]
    driver.finish()  # late ends before the probe: the probe runs on alone at bucket 1
    assert sorted(runner._steps) == [1, 2, 4]
    assert torch.equal(driver.codes("probe"), solo(model, PROBE))
    assert torch.equal(driver.codes("late"), solo(model, MATES["late"]))
    assert torch.equal(driver.codes("b"), solo(model, short))


def test_a_compiled_step_is_one_graph_per_bucket_built_at_warm_up_and_keeps_every_rows_frames(custom_voice_model):
    """torch.compile of the step: dynamo must take it whole (fullgraph) and AOT autograd must keep its in-place
    writes into the KV and output buffers. The aot_eager backend runs exactly that, without inductor's code
    generation (minutes on two cores; inductor's own speed is in docs/benchmarks.md). warm_up compiles every
    bucket for the server's sampling and leaves the runner empty; serving after it compiles nothing more (a row
    with processors of its own makes its batch's step run eagerly), and every row, joining, leaving and moving
    down, makes its solo frames."""
    model = custom_voice_model
    runner = TalkerRunner(model, SamplingSettings(), max_batch=2, max_len=128, compile_backend="aot_eager")
    graphs = counters["stats"]["unique_graphs"]
    assert runner.warm_up(MATES["short"]) == 2
    assert sorted(runner._steps) == [1, 2] and all(isinstance(s, CompiledStep) for s in runner._steps.values())
    assert runner.live_rows == [] and runner.free_slots == 2 and runner.cache_length == 0
    compiled = counters["stats"]["unique_graphs"] - graphs
    assert compiled == 2  # one graph per bucket
    driver = Driver(runner)
    short = dataclasses.replace(MATES["short"], max_frames=5)
    driver.join(b=short)
    driver.step(2)
    driver.join(probe=PROBE)  # row 1: bucket 2
    driver.finish()  # b ends first: the probe moves to row 0 and runs at bucket 1
    own = dataclasses.replace(MATES["late"], sampling=SamplingSettings(top_p=0.8, subtalker_top_k=7))
    driver.join(own=own, again=short)  # top-p and another top-k: not what the compiled code serves
    driver.finish()
    assert counters["stats"]["unique_graphs"] - graphs == compiled  # serving compiled nothing
    assert runner.compile_backend == "aot_eager" and runner.warm_up(PROBE) == 0  # built already
    assert torch.equal(driver.codes("probe"), solo(model, PROBE))
    assert torch.equal(driver.codes("b"), solo(model, short))
    assert torch.equal(driver.codes("again"), driver.codes("b"))
    assert torch.equal(driver.codes("own"), solo(model, own))


def test_a_bucket_built_first_for_a_row_with_its_own_sampling_compiles_every_processor(custom_voice_model):
    """Else the server's sampling would step eagerly at that bucket for the runner's life. Compiled for every
    processor, the step serves any mix, so a row with the server's sampling afterwards runs compiled too.
    (Dynamo's capture alone, the "eager" backend: which code runs is the question here.)"""
    model = custom_voice_model
    runner = TalkerRunner(model, SamplingSettings(), max_batch=1, max_len=96, compile_backend="eager")
    own = dataclasses.replace(PROBE, sampling=SamplingSettings(top_p=0.8))
    driver = Driver(runner)
    driver.join(own=own)
    driver.finish()
    (step,) = runner._steps.values()
    assert isinstance(step, CompiledStep) and step.features == (EVERY, EVERY)
    eager_runs = []
    eager = step._eager
    step._eager = SimpleNamespace(run=lambda *features: (eager_runs.append(features), eager.run(*features)))
    graphs = counters["stats"]["unique_graphs"]
    driver.join(plain=MATES["short"])
    driver.finish()
    assert eager_runs == [] and counters["stats"]["unique_graphs"] == graphs
    assert torch.equal(driver.codes("own"), solo(model, own))
    assert torch.equal(driver.codes("plain"), solo(model, MATES["short"]))


def test_a_step_that_fails_to_compile_runs_eagerly(custom_voice_model, caplog):
    runner = TalkerRunner(custom_voice_model, SamplingSettings(), max_batch=1, max_len=96,
                          compile_backend="no-such-backend")
    driver = Driver(runner)
    driver.join(probe=PROBE)
    driver.finish()
    assert runner.compile_backend is None and isinstance(runner._steps[1], StaticStep)
    assert "torch.compile failed" in caplog.text
    assert torch.equal(driver.codes("probe"), solo(custom_voice_model, PROBE))


def test_the_continuous_engine_runs_the_static_step_when_asked(custom_voice_model):
    """--static-len on CPU: the server's loop on the static layout (eager), frames equal to the library's;
    /health says which step runs. CUDA graphs stay off where there is no CUDA ("auto")."""
    eng = Engine(custom_voice_model, EngineSettings(model=ModelSettings(path=custom_voice_model.source),
                                                    max_batch=2, static_len=96))
    try:
        request = speak("The engine's static step.", seed=9, frames=10)
        frames = []
        job = eng.submit(request, lambda event: frames.append(event), keep_codes=True)
        assert job.wait(120)
        assert torch.equal(frames[-1].codes, library_frames(custom_voice_model, request, 10))
        report = eng.report()
        assert report["kv_cache"] == "static" and report["cuda_graphs"] is False
        assert report["decode_cuda_graphs"] is False and report["prefill_cuda_graphs"] is False
    finally:
        eng.close()


def test_torch_compile_on_builds_every_buckets_step_at_warm_up(custom_voice_model, monkeypatch):
    """--torch-compile on: a static cache, and Engine.warmup (what the server runs before it says ready)
    compiles every bucket's step; /health says so; requests then make the library's frames."""
    # The wiring is what this checks: the test above has dynamo take the step whole and checks the compiled
    # step's frames, so here torch.compile hands the step back as it is (12 s of tracing saved).
    monkeypatch.setattr(continuous, "COMPILE_BACKEND", "eager")
    monkeypatch.setattr(torch, "compile", lambda function, **_: function)
    settings = EngineSettings(model=ModelSettings(path=custom_voice_model.source), max_batch=2, torch_compile="on",
                              budget=FrameBudget(max_frames=64))
    eng = Engine(custom_voice_model, settings)
    try:
        eng.warmup(speak("Warm up.", seed=1, frames=3))
        runner = eng._continuous.runner
        assert sorted(runner._steps) == [1, 2] and all(isinstance(s, CompiledStep) for s in runner._steps.values())
        assert runner.max_len == 64 + PROMPT_ROOM
        report = eng.report()
        assert report["torch_compile"] is True and report["kv_cache"] == "static"
        request = speak("After the warm-up.", seed=9, frames=10)
        frames = []
        job = eng.submit(request, lambda event: frames.append(event), keep_codes=True)
        assert job.wait(120)
        assert torch.equal(frames[-1].codes, library_frames(custom_voice_model, request, 10))
    finally:
        eng.close()
    with pytest.raises(ValueError, match="torch_compile"):
        EngineSettings(model=ModelSettings(path="x"), torch_compile="auto")


def test_a_step_built_under_load_waits_for_the_decode_stage_to_finish(custom_voice_model, monkeypatch):
    """A bucket first needed while rows run (its build ahead failed, or a failed step dropped the built steps)
    is compiled or captured only once the decode stage, on a thread of its own, has nothing unfinished: a
    read-back there while a graph records would break the capture. Every decode is slowed so that one is always
    in flight otherwise."""
    import time

    from qwen_stream import runner as runner_module

    monkeypatch.setattr(continuous.ContinuousLoop, "_build_all", lambda self, runner, request: None)
    monkeypatch.setattr(continuous, "COMPILE_BACKEND", "eager")
    monkeypatch.setattr(torch, "compile", lambda function, **_: function)  # the wiring is checked, not dynamo
    decode = continuous.ContinuousLoop._decode

    def slow_decode(self, windows, model):
        time.sleep(0.1)
        return decode(self, windows, model)

    monkeypatch.setattr(continuous.ContinuousLoop, "_decode", slow_decode)
    unfinished: list[int] = []

    class Recording(CompiledStep):
        def __init__(self, *args, **kwargs):
            unfinished.append(eng._continuous.stage._unfinished)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(runner_module, "CompiledStep", Recording)
    settings = EngineSettings(model=ModelSettings(path=custom_voice_model.source), max_batch=2, torch_compile="on",
                              decode_overlap="on", budget=FrameBudget(max_frames=64))
    eng = Engine(custom_voice_model, settings)
    try:
        chunks = threading.Event()
        first = eng.submit(speak("The first one runs.", seed=1, frames=8), lambda event: chunks.set())
        assert chunks.wait(120)
        second = eng.submit(speak("The second joins it.", seed=2, frames=4), lambda event: None)
        assert first.wait(120) and second.wait(120)
    finally:
        eng.close()
    assert len(unfinished) == 2 and unfinished == [0, 0]  # bucket 1, then bucket 2 when the second joined


def test_another_familys_first_batch_builds_every_step_before_its_rows_join(
    custom_voice_model, voice_design_model, monkeypatch
):
    """The server warms up its default model; a second family's runner is made at its first batch, and every
    bucket's step is built then, before that batch's rows join (none is built later, under load); its rows make
    the library's frames."""
    from qwen_stream import runner as runner_module
    from tests.engine.test_continuous import two_family_registry

    monkeypatch.setattr(continuous, "COMPILE_BACKEND", "eager")
    monkeypatch.setattr(torch, "compile", lambda function, **_: function)  # the wiring is checked, not dynamo
    built: list[tuple[str, int]] = []  # (family, jobs in the batch) per step built

    class Recording(CompiledStep):
        def __init__(self, eager, *args, **kwargs):
            family = "voice_design" if eager._talker is voice_design_model.inner.talker else "custom_voice"
            built.append((family, len(eng._continuous.rows)))
            super().__init__(eager, *args, **kwargs)

    monkeypatch.setattr(runner_module, "CompiledStep", Recording)
    settings = EngineSettings(model=ModelSettings(path=custom_voice_model.source), max_batch=2, torch_compile="on",
                              budget=FrameBudget(max_frames=64))
    eng = Engine(two_family_registry(custom_voice_model, voice_design_model), settings)
    try:
        eng.warmup(speak("Warm up.", seed=1, frames=3))
        assert built == [("custom_voice", 0), ("custom_voice", 0)]
        designed = [SynthesisRequest(f"A designed voice, number {i}.", "English", Voice(instruct="A calm voice."),
                                     seed=i, max_frames=8, family="voice_design") for i in (2, 3)]
        events: list[list] = [[], []]
        jobs = [eng.submit(request, got.append, keep_codes=True) for request, got in zip(designed, events)]
        assert all(job.wait(120) for job in jobs)
        assert built[2:] == [("voice_design", 0), ("voice_design", 0)]  # both buckets, before its rows joined
        for request, got in zip(designed, events):
            assert torch.equal(got[-1].codes, library_frames(voice_design_model, request, 8))
    finally:
        eng.close()


@pytest.mark.parametrize("failing, attempts", [(1, 2), (10, continuous.BUILD_ATTEMPTS)], ids=["once", "always"])
def test_a_failed_build_ahead_is_tried_again_at_the_next_batches_then_left_to_first_use(
    custom_voice_model, monkeypatch, failing, attempts
):
    """Building a runner whole before its first batch fails (out of memory, say): that batch goes on, its steps
    built at first use, and the next batches try again, a bounded number of times; every request makes the
    library's frames."""
    monkeypatch.setattr(continuous, "COMPILE_BACKEND", "eager")
    monkeypatch.setattr(torch, "compile", lambda function, **_: function)  # the wiring is checked, not dynamo
    tried: list[str] = []
    warm_up = TalkerRunner.warm_up

    def failing_warm_up(runner, request):
        tried.append(request.text)
        if len(tried) <= failing:
            raise RuntimeError("out of memory (simulated)")
        return warm_up(runner, request)

    monkeypatch.setattr(TalkerRunner, "warm_up", failing_warm_up)
    settings = EngineSettings(model=ModelSettings(path=custom_voice_model.source), max_batch=2, torch_compile="on",
                              budget=FrameBudget(max_frames=64))
    eng = Engine(custom_voice_model, settings)
    try:
        for seed in range(5):  # five batches, one after another
            request = speak(f"Batch number {seed}.", seed=seed, frames=3)
            frames = []
            job = eng.submit(request, frames.append, keep_codes=True)
            assert job.wait(120) and eng.wait_idle(120)
            assert torch.equal(frames[-1].codes, library_frames(custom_voice_model, request, 3))
        assert tried == ["Warm up."] * attempts
        runner = eng._continuous.runner
        assert sorted(runner._steps) == ([1, 2] if failing < attempts else [1])  # bucket 2 only if built ahead
    finally:
        eng.close()


def test_cuda_graphs_on_without_cuda_is_refused(custom_voice_model):
    with pytest.raises(ValueError, match="CUDA"):
        TalkerRunner(custom_voice_model, SamplingSettings(), max_batch=2, max_len=64, cuda_graphs=True)
    with pytest.raises(ValueError, match="cuda_graphs"):
        EngineSettings(model=ModelSettings(path="x"), cuda_graphs="sometimes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_captured_steps_make_the_eager_steps_frames(custom_voice_dir):
    from qwen_stream.model import load_model

    model = load_model(ModelSettings(path=str(custom_voice_dir), device="cuda", dtype="fp32"))
    expected = library_frames(model, PROBE, 12)

    def batch(graphs: bool) -> Driver:
        driver = Driver(TalkerRunner(model, SamplingSettings(), max_batch=4, max_len=128, cuda_graphs=graphs))
        driver.join(short=MATES["short"])
        driver.step(2)
        driver.join(probe=PROBE, late=MATES["late"])
        driver.step(2)
        driver.release("short")  # late moves from row 2 to row 0: bucket 4 -> 2, replayed on moved rows
        driver.finish()
        return driver

    captured, eager = batch(True), batch(False)
    assert captured.runner.cuda_graphs and sorted(captured.runner._steps) == [1, 2, 4]
    assert torch.equal(captured.codes("probe").cpu(), expected.cpu())
    for name in ("short", "probe", "late"):
        assert torch.equal(captured.codes(name).cpu(), eager.codes(name).cpu()), name
