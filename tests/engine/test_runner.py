"""TalkerRunner against tiny random checkpoints: the library's own frames at batch 1, and a row's frames
independent of when it joins and of its batch mates coming and going."""

from __future__ import annotations

import dataclasses
import random
from contextlib import contextmanager

import pytest
import torch

from qwen_stream import prompts
from qwen_stream.code_predictor import install_fast_code_predictor, uninstall_fast_code_predictor
from qwen_stream.generation import SynthesisError, SynthesisRequest, Voice, build_generate_inputs
from qwen_stream.kv import DynamicRows
from qwen_stream.runner import NewRow, TalkerRunner
from qwen_stream.sampling import BatchedCodePredictor
from qwen_stream.settings import SamplingSettings
from qwen_stream.static_step import bucket_for
from qwen_stream.cloning import clone_prompt

TEXT = "Hello there, this is a streaming test."
SAMPLING = SamplingSettings()


@contextmanager
def hf_code_predictor(model):
    """The library's own per-frame HF generate in the code predictor, for reference runs."""
    uninstall_fast_code_predictor(model.inner.talker.code_predictor)
    try:
        yield
    finally:
        install_fast_code_predictor(model.inner.talker.code_predictor)


def library_frames(model, request: SynthesisRequest, frames: int, sampling=SAMPLING) -> torch.Tensor:
    """What the library's own generate returns for this request at batch 1, seeded the same way."""
    inputs = build_generate_inputs(model, [request])
    kwargs = model.tts._merge_generate_kwargs(**sampling.overrides(), max_new_tokens=frames + 1)
    with hf_code_predictor(model):
        torch.manual_seed(request.seed)
        codes, _ = model.inner.generate(**inputs, **kwargs)
    return codes[0]


class Driver:
    """Steps a runner and files each frame under the request that owns the slot."""

    def __init__(self, runner: TalkerRunner):
        self.runner = runner
        self.owner: dict[int, str] = {}
        self.frames: dict[str, list[torch.Tensor]] = {}
        self.ends: dict[str, str] = {}

    def join(self, **rows: SynthesisRequest) -> dict[str, BaseException | None]:
        admissions = self.runner.prefill([NewRow(request) for request in rows.values()])
        errors = {}
        for name, admission in zip(rows, admissions, strict=True):
            errors[name] = admission.error
            if admission.slot is not None:
                assert admission.slot not in self.owner
                self.owner[admission.slot] = name
                self.frames[name] = []
        return errors

    def release(self, name: str) -> None:
        slot = next(slot for slot, owner in self.owner.items() if owner == name)
        self.runner.release(slot)
        del self.owner[slot]

    def step(self, times: int = 1) -> None:
        for _ in range(times):
            for frame in self.runner.step().frames:
                name = self.owner[frame.slot]
                self.frames[name].append(frame.codes)
                if frame.end is not None:
                    self.ends[name] = frame.end
                    del self.owner[frame.slot]

    def finish(self) -> None:
        while self.runner.live_rows:
            self.step()

    def codes(self, name: str) -> torch.Tensor:
        return torch.stack(self.frames[name])


def solo(
    model, request: SynthesisRequest, sampling=SAMPLING, max_len: int | None = None, noise_block: int = 0
) -> torch.Tensor:
    driver = Driver(TalkerRunner(model, sampling, max_batch=1, max_len=max_len, noise_block=noise_block))
    driver.join(row=request)
    driver.finish()
    return driver.codes("row")


def speak(text: str, seed: int, frames: int, speaker: str = "Ryan", language: str = "English") -> SynthesisRequest:
    return SynthesisRequest(text, language, Voice(speaker=speaker), seed=seed, max_frames=frames)


@contextmanager
def logit_bias(model, token: int, bias: float):
    """Raises one talker logit in the library's forward and the runner's alike. Random weights almost never
    sample EOS or the same token twice; a bias makes rows end early, or repeat, on their own."""

    def hook(module, args, output):
        output[..., token] += bias
        return output

    handle = model.inner.talker.codec_head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# The two cache layouts (kv.py). The static one is small enough that rows hit its end and shift left.
STATIC_LEN = 104


@pytest.fixture(params=[None, STATIC_LEN], ids=["dynamic", "static"])
def max_len(request):
    return request.param


# How rows draw their noise (sampling.py): a call per token, as the library does, or a block of steps per call
# (three here, so that rows use up blocks and draw new ones). On CPU both give the same values.
@pytest.fixture(params=[0, 3], ids=["per-token", "blocks"])
def noise_block(request):
    return request.param


# -- batch 1 equals the library -------------------------------------------------------------------------


def test_custom_voice_frames_equal_library_generate(custom_voice_model, max_len, noise_block):
    request = speak(TEXT, seed=11, frames=20)
    expected = library_frames(custom_voice_model, request, 20)
    assert torch.equal(solo(custom_voice_model, request, max_len=max_len, noise_block=noise_block), expected)


REPEATED = 100


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingSettings(repetition_penalty=1.5, temperature=0.7, top_p=0.8, subtalker_top_k=5),
        SamplingSettings(do_sample=False, repetition_penalty=1.3, subtalker_temperature=1.0),
    ],
    ids=["penalty-top-p", "greedy-talker"],
)
def test_operator_sampling_is_applied_as_the_library_applies_it(custom_voice_model, sampling):
    """A favoured token keeps coming back, so the repetition penalty's per-row history decides frames."""
    model = custom_voice_model
    request = speak(TEXT, seed=4, frames=16)
    with logit_bias(model, REPEATED, 2.0):
        expected = library_frames(model, request, 16, sampling)
        assert torch.equal(solo(model, request, sampling), expected)
    assert (expected[:, 0] == REPEATED).sum() > 1


def test_voice_design_frames_equal_library_generate(voice_design_model, max_len):
    request = SynthesisRequest(TEXT, "English", Voice(instruct="A calm, low voice."), seed=5, max_frames=16)
    expected = library_frames(voice_design_model, request, 16)
    assert torch.equal(solo(voice_design_model, request, max_len=max_len), expected)


@pytest.mark.parametrize("max_len", [None, 160], ids=["dynamic", "static"])
@pytest.mark.parametrize("ref_text", [None, "This is the reference transcript."], ids=["xvector", "icl"])
def test_base_clone_frames_equal_library_generate(base_model, reference_audio, ref_text, max_len):
    samples, rate = reference_audio
    voice = Voice(clone=clone_prompt(base_model, samples, rate, ref_text))
    request = SynthesisRequest(TEXT, "English", voice, seed=3, max_frames=14)
    assert torch.equal(solo(base_model, request, max_len=max_len), library_frames(base_model, request, 14))


def test_eos_ends_rows_as_the_library_does_and_frees_their_slots(custom_voice_model, max_len):
    model = custom_voice_model
    requests = {f"r{seed}": speak(f"Sentence number {seed} ends early.", seed=seed, frames=30) for seed in (1, 2, 3)}
    with logit_bias(model, model.eos_id, 3.0):
        expected = {name: library_frames(model, request, 30) for name, request in requests.items()}
        driver = Driver(TalkerRunner(model, SAMPLING, max_batch=3, max_len=max_len))
        driver.join(**requests)
        driver.finish()
    lengths = sorted(len(codes) for codes in expected.values())
    assert lengths[0] >= 2 and lengths[-1] < 30, lengths  # ended by EOS (never before min_new_tokens)
    assert len(set(lengths)) > 1  # rows left at different steps while the others went on
    for name, codes in expected.items():
        assert driver.ends[name] == "eos"
        assert torch.equal(driver.codes(name), codes)
    assert driver.runner.free_slots == 3 and driver.runner.live_rows == []


def test_the_runner_leaves_the_model_as_the_generation_path_expects_it(custom_voice_model):
    """Runner and today's engine share loaded models during the move: no tap steps, no patched generate, no
    rope deltas stored on the talker."""
    talker = custom_voice_model.inner.talker
    steps, deltas = custom_voice_model.tap.steps, talker.rope_deltas
    solo(custom_voice_model, speak(TEXT, seed=1, frames=3))
    assert custom_voice_model.tap.steps == steps and talker.rope_deltas is deltas
    assert "generate" not in vars(talker)


OWN_SAMPLING = {
    "hot": SamplingSettings(temperature=1.4, top_k=40),
    "nucleus": SamplingSettings(top_p=0.6, repetition_penalty=1.4, subtalker_top_k=3),
    "greedy": SamplingSettings(do_sample=False, subtalker_temperature=0.5),
}


@pytest.mark.parametrize("name", list(OWN_SAMPLING))
def test_a_requests_own_sampling_is_applied_as_the_library_applies_it(custom_voice_model, name):
    """A request's settings are laid over the server's and reach the library's processors as an operator's
    would: a runner whose server sets something else still yields the library's frames for the merged set."""
    model, server = custom_voice_model, SamplingSettings(temperature=0.8, repetition_penalty=1.1)
    request = dataclasses.replace(speak(TEXT, seed=5, frames=16), sampling=OWN_SAMPLING[name])
    with logit_bias(model, REPEATED, 2.0):
        expected = library_frames(model, request, 16, server.merged(request.sampling))
        assert torch.equal(solo(model, request, server), expected)
        assert not torch.equal(expected, library_frames(model, request, 16, server))  # the settings matter


def test_rows_with_their_own_sampling_share_a_batch_without_changing_their_frames(
    custom_voice_model, max_len, noise_block
):
    """Each row's settings are a row of its own: batch mates asking for other settings change nothing. With
    noise blocks, the greedy talker's row draws per token beside rows that draw blocks."""
    model = custom_voice_model
    rows = {
        name: dataclasses.replace(
            speak(f"Row {name} speaks with its own settings.", seed=30 + i, frames=14), sampling=s
        )
        for i, (name, s) in enumerate(OWN_SAMPLING.items())
    }
    rows["server"] = speak("This row keeps the server's settings.", seed=40, frames=14)
    alone = {name: solo(model, request, max_len=max_len) for name, request in rows.items()}
    driver = Driver(TalkerRunner(model, SAMPLING, max_batch=4, max_len=max_len, noise_block=noise_block))
    driver.join(hot=rows["hot"], greedy=rows["greedy"])
    driver.step(2)
    driver.join(nucleus=rows["nucleus"], server=rows["server"])
    driver.finish()
    for name, expected in alone.items():
        assert torch.equal(driver.codes(name), expected), name


# -- join / leave invariance ---------------------------------------------------------------------------

PROBE = speak("The probe row says this sentence.", seed=7, frames=12, speaker="Vivian")
MATES = {
    "short": speak("Short one.", seed=21, frames=20, speaker="Dylan"),
    "long": speak("A much longer mate, so its prompt is longer than the probe's own prompt is.", 22, 20, "Aiden"),
    "late": speak("你好，我是后来加入的。", seed=23, frames=9, speaker="Serena", language="Chinese"),
}


@pytest.fixture(scope="module")
def references(custom_voice_model):
    return {name: solo(custom_voice_model, request) for name, request in {"probe": PROBE, **MATES}.items()}


@pytest.mark.parametrize("k", [0, 1, 4, 9])
def test_a_row_yields_the_same_frames_whenever_it_joins(custom_voice_model, references, k, max_len, noise_block):
    """With noise blocks, `late` takes the slot `short` left half-way through a block, and starts its own."""
    runner = TalkerRunner(custom_voice_model, SAMPLING, max_batch=3, max_len=max_len, noise_block=noise_block)
    driver = Driver(runner)
    driver.join(short=MATES["short"], long=MATES["long"])
    driver.step(k)
    driver.join(probe=PROBE)
    driver.step(3)
    driver.release("short")  # cancelled mid-utterance; its slot goes to a newcomer
    driver.join(late=MATES["late"])
    driver.step(2)
    driver.release("long")
    driver.finish()
    assert torch.equal(driver.codes("probe"), references["probe"])
    assert driver.ends["probe"] == "cap"
    for name in MATES:
        got = driver.codes(name)
        assert torch.equal(got, references[name][: len(got)]), name
    assert len(driver.frames["short"]) == k + 3
    assert driver.runner.free_slots == 3


@contextmanager
def prefill_forwards(model, fail_when=None):
    """Records the batch size and length of every talker forward over more than one position (a prefill;
    a step feeds one). `fail_when(embeds)` true: that forward raises, as an out-of-memory would."""
    seen: list[tuple[int, int]] = []

    def hook(module, args, kwargs):
        embeds = kwargs["inputs_embeds"]
        if embeds.shape[1] > 1:
            seen.append((embeds.shape[0], embeds.shape[1]))
            if fail_when is not None and fail_when(embeds):
                raise RuntimeError("out of memory (simulated)")

    handle = model.inner.talker.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def test_rows_joining_together_are_prefilled_in_one_forward_and_make_their_solo_frames(
    custom_voice_model, references, max_len
):
    """Prompts of different lengths share one right-padded forward; each row's first token comes from its
    own last position and its KV from its own columns, so every row makes exactly its solo frames."""
    driver = Driver(TalkerRunner(custom_voice_model, SAMPLING, max_batch=4, max_len=max_len))
    with prefill_forwards(custom_voice_model) as forwards:
        driver.join(long=MATES["long"], probe=PROBE, short=MATES["short"], late=MATES["late"])
    assert len(forwards) == 1 and forwards[0][0] == 4
    driver.finish()
    for name, request in {"probe": PROBE, **MATES}.items():
        got, expected = driver.codes(name), references[name]
        if max_len is not None:  # a static cache caps a row at what fits beside its prompt
            expected = expected[: max_len - capture_length(custom_voice_model, request)]
        assert torch.equal(got, expected), name


def test_a_prefill_group_stays_within_its_token_budget(custom_voice_model, references, monkeypatch):
    from qwen_stream import runner as runner_module

    driver = Driver(TalkerRunner(custom_voice_model, SAMPLING, max_batch=4))
    rows = {"short": MATES["short"], "probe": PROBE, "long": MATES["long"], "late": MATES["late"]}
    with prefill_forwards(custom_voice_model) as alone:
        Driver(TalkerRunner(custom_voice_model, SAMPLING, max_batch=4)).join(**rows)
    width = alone[0][1]  # the longest prompt
    monkeypatch.setattr(runner_module, "PREFILL_TOKENS", 2 * width)
    with prefill_forwards(custom_voice_model) as forwards:
        driver.join(**rows)
    assert [rows for rows, _ in forwards] == [2, 2]
    assert all(rows * length <= 2 * width for rows, length in forwards)
    driver.finish()
    for name in rows:
        assert torch.equal(driver.codes(name), references[name]), name


def test_a_failing_group_forward_prefills_each_row_alone_and_only_the_bad_row_fails(
    custom_voice_model, references, max_len
):
    """A batched prefill that fails (out of memory, one prompt the model chokes on) is retried row by row:
    the rows that can be prefilled join with their solo frames; the one that fails alone gets the error."""
    long_length = capture_length(custom_voice_model, MATES["long"])
    driver = Driver(TalkerRunner(custom_voice_model, SAMPLING, max_batch=4, max_len=max_len))
    with prefill_forwards(custom_voice_model, fail_when=lambda e: e.shape[1] == long_length) as forwards:
        errors = driver.join(probe=PROBE, long=MATES["long"], short=MATES["short"])
    assert [rows for rows, _ in forwards] == [3, 1, 1, 1]
    assert errors["probe"] is None and errors["short"] is None
    assert isinstance(errors["long"], RuntimeError)
    assert driver.runner.free_slots == 2
    driver.finish()
    for name in ("probe", "short"):
        assert torch.equal(driver.codes(name), references[name]), name


def test_a_group_that_fails_after_drawing_retries_each_row_with_its_draws_put_back(custom_voice_model, references):
    """The group's first tokens fail after every row's generator has drawn: each row is prefilled again
    alone, from its generator's state before the group, so it still makes exactly its solo frames."""
    driver = Driver(TalkerRunner(custom_voice_model, SAMPLING, max_batch=4))
    driver.join(short=MATES["short"])  # builds the runner's logits processor
    driver.step(2)
    runner = driver.runner
    real = runner._logits
    failed = []

    class FirstTokensOfAGroupFail:
        def __getattr__(self, name):
            return getattr(real, name)

        def __call__(self, logits, seen, generated, params, noise, features):
            if logits.shape[0] > 1 and not bool(generated.any()):  # a group's prefill, not a step
                failed.append(logits.shape[0])
                raise RuntimeError("out of memory (simulated)")
            return real(logits, seen, generated, params, noise, features)

    runner._logits = FirstTokensOfAGroupFail()
    errors = driver.join(probe=PROBE, long=MATES["long"])
    runner._logits = real
    assert failed == [2] and errors == {"probe": None, "long": None}
    driver.finish()
    for name in ("probe", "short", "long"):
        assert torch.equal(driver.codes(name), references[name]), name


def test_rows_that_cannot_join_take_no_slot_and_the_batch_goes_on(custom_voice_model, references, monkeypatch, max_len):
    """Copying a group's KV into the batch fails (out of memory, say): those rows get the error, their slots stay
    free, and the rows already live make their solo frames."""
    from qwen_stream import kv

    driver = Driver(TalkerRunner(custom_voice_model, SAMPLING, max_batch=4, max_len=max_len))
    driver.join(short=MATES["short"])
    driver.step(2)
    store = DynamicRows if max_len is None else kv.StaticRows

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(store, "add", out_of_memory)
        errors = driver.join(probe=PROBE, long=MATES["long"])
    assert all(isinstance(error, RuntimeError) for error in errors.values())
    assert driver.runner.free_slots == 3 and len(driver.runner.live_rows) == 1
    driver.join(probe=PROBE)
    driver.finish()
    assert torch.equal(driver.codes("short"), references["short"])
    assert torch.equal(driver.codes("probe"), references["probe"])


def test_a_dynamic_join_that_fails_half_way_leaves_the_batch_as_it_was(custom_voice_model, references, monkeypatch):
    """Out of memory after some layers' KV were joined: the rows already live keep a cache whose every layer
    still matches their mask, so they go on and make their solo frames."""
    from qwen_stream import kv

    driver = Driver(TalkerRunner(custom_voice_model, SAMPLING, max_batch=4, max_len=None))
    driver.join(short=MATES["short"])
    driver.step(2)
    pad, calls = kv.F.pad, []

    def failing_pad(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # layer 1's keys, after layer 0 was joined whole
            raise RuntimeError("out of memory (simulated)")
        return pad(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(kv.F, "pad", failing_pad)
        errors = driver.join(probe=PROBE)
    assert len(calls) == 5 and isinstance(errors["probe"], RuntimeError)
    driver.join(probe=PROBE)
    driver.finish()
    assert torch.equal(driver.codes("short"), references["short"])
    assert torch.equal(driver.codes("probe"), references["probe"])


def test_a_static_shift_allocates_nothing(custom_voice_model):
    """A shift (the write column at the buffer's end, or a prompt longer than the history joining) only copies
    through buffers allocated with the store: it cannot run out of memory with some layers shifted."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from qwen_stream import kv

    runner = TalkerRunner(custom_voice_model, SAMPLING, max_batch=2, max_len=96)
    runner.prefill([NewRow(PROBE)])
    store = runner._store
    assert isinstance(store, kv.StaticRows)
    before = [tensor.clone() for tensor in (store.keys[0], store.mask)]
    in_place = {"copy_", "slice", "zero_", "fill_", "alias", "view", "detach"}

    class Ops(TorchDispatchMode):
        seen: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.seen.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with torch.inference_mode(), Ops() as ops:
        store._shift(5)
    assert ops.seen and ops.seen <= in_place, ops.seen - in_place
    width = 96 - 5
    assert torch.equal(store.keys[0][:, :, 5:], before[0][:, :, :width])
    assert torch.equal(store.mask[:, 5:], before[1][:, :width]) and not store.mask[:, :5].any()
    with torch.inference_mode():
        store._shift(-5)
    assert torch.equal(store.keys[0][:, :, :width], before[0][:, :, :width])
    assert torch.equal(store.mask, before[1])


def capture_length(model, request: SynthesisRequest) -> int:
    return prompts.capture_prompt(model, request, SAMPLING).embeds.shape[1]


@pytest.mark.parametrize("max_len", [None, 160], ids=["dynamic", "static"])
def test_clone_rows_of_both_modes_share_a_batch_without_changing_their_frames(base_model, reference_audio, max_len):
    """Base prompts differ most in shape: an ICL prompt carries the reference's codes, and its text is fed
    one position per step (trailing text), ending at different steps per row."""
    samples, rate = reference_audio
    icl = Voice(clone=clone_prompt(base_model, samples, rate, "This is the reference transcript."))
    xvector = Voice(clone=clone_prompt(base_model, samples, rate, None))
    rows = {
        "icl": SynthesisRequest("The cloned voice continues its reference.", "English", icl, seed=31, max_frames=10),
        "xvector": SynthesisRequest("Short.", "English", xvector, seed=32, max_frames=14),
    }
    driver = Driver(TalkerRunner(base_model, SAMPLING, max_batch=2, max_len=max_len))
    driver.join(xvector=rows["xvector"])
    driver.step(3)
    driver.join(icl=rows["icl"])
    driver.finish()
    for name, request in rows.items():
        assert torch.equal(driver.codes(name), solo(base_model, request)), name


def test_leaving_trims_the_dynamic_cache_to_what_remaining_rows_attend(custom_voice_model):
    runner = TalkerRunner(custom_voice_model, SAMPLING, max_batch=2)
    short, long = runner.prefill([NewRow(MATES["short"]), NewRow(MATES["long"])])
    alone = TalkerRunner(custom_voice_model, SAMPLING, max_batch=1)
    alone.prefill([NewRow(MATES["short"])])
    runner.step()
    alone.step()
    assert runner.cache_length > alone.cache_length
    runner.release(long.slot)
    assert runner.cache_length == alone.cache_length
    runner.release(short.slot)
    assert runner.cache_length == 0


# -- slots -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_len", [None, 32], ids=["dynamic", "static"])
def test_no_slot_leaks_over_many_random_joins_and_releases(custom_voice_model, references, max_len, noise_block):
    rng = random.Random(0)
    runner = TalkerRunner(custom_voice_model, SAMPLING, max_batch=3, max_len=max_len, noise_block=noise_block)
    lengths = []
    texts = ["One.", "Two words.", "Three words here.", "四个字。"]
    joined = 0
    for op in range(300):
        choice = rng.random()
        live = runner.live_rows
        if choice < 0.3 and runner.free_slots:
            count = rng.randint(1, runner.free_slots)
            rows = [
                NewRow(speak(rng.choice(texts), seed=op, frames=rng.randint(1, 5), language="Auto"))
                for _ in range(count)
            ]
            admitted = runner.prefill(rows)
            assert all(a.error is None for a in admitted)
            assert not {a.slot for a in admitted} & set(live)
            joined += count
        elif choice < 0.5 and live:
            runner.release(rng.choice(live))
        else:
            runner.step()
        live = runner.live_rows
        assert len(set(live)) == len(live) and runner.free_slots + len(live) == 3
        if max_len is not None:  # rows move down as others leave: the bucket follows the live count
            assert runner.step_rows == (bucket_for(len(live), 3) if live else 0)
        assert runner.cache_length == 0 or live
        lengths.append(runner.cache_length)
    assert joined > 100
    if max_len is not None:  # the buffer filled up, so later steps shifted every row left
        assert max(lengths) == max_len
    for slot in runner.live_rows:
        runner.release(slot)
    assert runner.free_slots == 3 and runner.cache_length == 0
    with pytest.raises(ValueError):
        runner.release(0)
    # After all that churn a fresh row still makes exactly its solo frames (as many as fit).
    driver = Driver(runner)
    driver.join(probe=MATES["short"])
    driver.finish()
    assert torch.equal(driver.codes("probe"), references["short"][: len(driver.frames["probe"])])
    assert len(driver.frames["probe"]) == (20 if max_len is None else max_len - 21)


def test_more_rows_than_free_slots_is_refused_whole(custom_voice_model):
    runner = TalkerRunner(custom_voice_model, SAMPLING, max_batch=1)
    with pytest.raises(ValueError):
        runner.prefill([NewRow(PROBE), NewRow(MATES["short"])])
    assert runner.free_slots == 1 and runner.live_rows == []


def test_a_failing_step_empties_the_batch_and_the_runner_goes_on(custom_voice_model, references, monkeypatch, max_len):
    runner = TalkerRunner(custom_voice_model, SAMPLING, max_batch=2, max_len=max_len)
    runner.prefill([NewRow(MATES["short"]), NewRow(MATES["long"])])
    runner.step()

    def out_of_memory(*args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(BatchedCodePredictor, "__call__", out_of_memory)  # both paths call it
    with pytest.raises(RuntimeError, match="out of memory"):
        runner.step()
    assert runner.live_rows == [] and runner.free_slots == 2 and runner.cache_length == 0
    monkeypatch.undo()
    driver = Driver(runner)
    driver.join(probe=PROBE)
    driver.finish()
    assert torch.equal(driver.codes("probe"), references["probe"])


# -- a failing prompt fails its row only -----------------------------------------------------------------


def test_a_failing_prompt_fails_only_its_row(custom_voice_model, references, monkeypatch, max_len):
    broken = speak("This prompt breaks inside the library's prompt code.", seed=1, frames=5)
    real_build = prompts.build_generate_inputs

    def build(model, requests):
        if requests[0] is broken:
            raise RuntimeError("prompt build failed")
        return real_build(model, requests)

    monkeypatch.setattr(prompts, "build_generate_inputs", build)
    driver = Driver(TalkerRunner(custom_voice_model, SAMPLING, max_batch=4, max_len=max_len))
    driver.join(short=MATES["short"])
    driver.step(2)
    errors = driver.join(
        unknown=speak(TEXT, seed=1, frames=5, speaker="Nobody"),
        broken=broken,
        probe=PROBE,
    )
    assert isinstance(errors["unknown"], SynthesisError)
    assert isinstance(errors["broken"], RuntimeError)
    assert errors["probe"] is None
    assert driver.runner.free_slots == 2
    driver.finish()
    assert torch.equal(driver.codes("probe"), references["probe"])
    assert torch.equal(driver.codes("short"), references["short"])


# -- the static layout's limits ----------------------------------------------------------------------------


def test_a_static_cache_caps_frames_to_what_fits_and_refuses_prompts_that_do_not(custom_voice_model, references):
    prompt_length = 44  # PROBE's
    runner = TalkerRunner(custom_voice_model, SAMPLING, max_batch=2, max_len=prompt_length + 5)
    driver = Driver(runner)
    errors = driver.join(probe=PROBE, long=MATES["long"])
    assert errors["probe"] is None and "no room" in str(errors["long"])
    driver.finish()
    assert driver.ends["probe"] == "cap"
    assert torch.equal(driver.codes("probe"), references["probe"][:5])


# -- on a GPU, when there is one --------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("max_len", [None, 128], ids=["dynamic", "static"])
def test_on_cuda_a_row_makes_the_same_frames_alone_and_in_a_batch(custom_voice_dir, max_len, noise_block):
    """Per token, a row's CUDA generator seeded like `torch.manual_seed` seeds the library's: the library's own
    frames. In blocks, not the library's (a call's size moves the generator's offset), but still the row's own
    generator's: the same frames alone as beside mates that come and go, across several blocks. float32, so
    batched kernels differ from batch-1 ones by rounding only."""
    from qwen_stream.model import load_model
    from qwen_stream.settings import ModelSettings

    model = load_model(ModelSettings(path=str(custom_voice_dir), device="cuda", dtype="fp32"))
    probe = speak(TEXT, seed=11, frames=20)
    alone = solo(model, probe, max_len=max_len, noise_block=noise_block).cpu()
    assert torch.equal(alone, library_frames(model, probe, 20).cpu()) == (noise_block == 0)
    driver = Driver(TalkerRunner(model, SAMPLING, max_batch=3, max_len=max_len, noise_block=noise_block))
    driver.join(short=MATES["short"])
    driver.step(2)
    driver.join(probe=probe, late=MATES["late"])
    driver.step(4)
    driver.release("short")
    driver.finish()
    assert torch.equal(driver.codes("probe").cpu(), alone)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_a_step_waits_for_its_own_stream_only(custom_voice_dir, noise_block):
    """The decode stage decodes on a stream of its own beside the next step: the step's synchronising (its
    timing, its read-back of the next tokens) must not wait for other streams, or the two would run in turn."""
    from qwen_stream.model import load_model
    from qwen_stream.settings import ModelSettings

    model = load_model(ModelSettings(path=str(custom_voice_dir), device="cuda", dtype="fp32"))
    runner = TalkerRunner(model, SAMPLING, max_batch=2, noise_block=noise_block)
    runner.prefill([NewRow(PROBE)])
    runner.step()  # lazy initialisation out of the way
    side, busy = torch.cuda.Stream(), torch.cuda.Event()
    with torch.cuda.stream(side):
        torch.cuda._sleep(2 * 10**9)  # about a second of GPU clock cycles: a tiny step takes tens of ms
        busy.record(side)
    assert len(runner.step().frames) == 1
    assert not busy.query()  # the step came back while the other stream was still busy
    side.synchronize()
