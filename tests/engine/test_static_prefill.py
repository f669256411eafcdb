"""The prefill over fixed buffers (static_prefill.py): what a CUDA graph captures, run eagerly here, against each
row's solo frames (which test_runner.py checks against the library's); on CUDA, the captured graphs against it."""

from __future__ import annotations

import pytest
import torch

from qwen_stream.runner import TalkerRunner
from qwen_stream.static_prefill import StaticPrefill, widths
from tests.engine.test_runner import (
    MATES,
    PROBE,
    SAMPLING,
    Driver,
    capture_length,
    library_frames,
    prefill_forwards,
    solo,
    speak,
)
from tests.engine.test_static_step import HostReads

MAX_LEN = 160  # width buckets 32, 64, 128


def static_runner(model, max_batch: int = 4, max_len: int = MAX_LEN) -> TalkerRunner:
    runner = TalkerRunner(model, SAMPLING, max_batch=max_batch, max_len=max_len)
    runner.build_prefills(capture=False)
    return runner


@pytest.fixture(scope="module")
def static_references(custom_voice_model):
    """Each request alone on the static layout with an eager prefill: what the static prefill must match."""
    return {
        name: solo(custom_voice_model, request, max_len=MAX_LEN) for name, request in {"probe": PROBE, **MATES}.items()
    }


def test_width_buckets_are_powers_of_two_below_the_cache_within_the_budget():
    assert widths(160, 8192) == [32, 64, 128]
    assert widths(640, 8192) == [32, 64, 128, 256, 512]
    assert widths(640, 100) == [32, 64]
    assert widths(20, 8192) == []


def test_rows_joining_together_share_one_bucketed_forward_and_make_their_solo_frames(
    custom_voice_model, static_references
):
    """Four prompts of different lengths (21 to 86 positions): one forward of the (4, 128) bucket from the
    buffers, each row's first token from its own last position and its KV from its own columns."""
    model = custom_voice_model
    longest = max(capture_length(model, request) for request in (PROBE, *MATES.values()))
    assert 64 < longest <= 128, longest  # the tiny checkpoint's prompts: the 128 bucket
    driver = Driver(static_runner(model))
    with prefill_forwards(model) as forwards:
        driver.join(long=MATES["long"], probe=PROBE, short=MATES["short"], late=MATES["late"])
    assert forwards == [(4, 128)]
    driver.finish()
    for name in ("probe", *MATES):
        assert torch.equal(driver.codes(name), static_references[name]), name


def test_rows_joining_a_running_batch_one_at_a_time_keep_their_frames(custom_voice_model, static_references):
    """Each join overwrites the buffers the previous one used: what joined must already be in the batch."""
    driver = Driver(static_runner(custom_voice_model))
    with prefill_forwards(custom_voice_model) as forwards:
        driver.join(short=MATES["short"])
        driver.step(2)
        driver.join(probe=PROBE)
        driver.step(3)
        driver.join(long=MATES["long"], late=MATES["late"])
    assert forwards == [(1, 32), (1, 64), (2, 128)]
    driver.finish()
    for name in ("short", "probe", "long", "late"):
        assert torch.equal(driver.codes(name), static_references[name]), name


def test_a_narrow_group_after_a_wide_one_pads_its_bucket_without_reading_stale_positions(custom_voice_model):
    """Four rows fill the (4, 128) bucket; then three short prompts take the (4, 32) bucket, its fourth row
    padding. Nothing the wide group left (the last position of its fourth row, 85, is past 32; its embeddings)
    is read: one forward each, no eager retry, and every row makes its solo frames."""
    model = custom_voice_model
    short = {
        "a": speak("Hi.", seed=31, frames=6),
        "b": speak("Yes, sure.", seed=32, frames=6, speaker="Serena"),
        "c": MATES["short"],
    }
    assert all(capture_length(model, request) <= 32 for request in short.values())
    expected = {name: solo(model, request, max_len=MAX_LEN) for name, request in short.items()}
    driver = Driver(static_runner(model, max_batch=8))
    with prefill_forwards(model) as forwards:
        driver.join(probe=PROBE, late=MATES["late"], other=speak("Another.", 33, 4), long=MATES["long"])
        driver.step(1)
        driver.join(**short)
    assert forwards == [(4, 128), (4, 32)]
    driver.finish()
    for name in short:
        assert torch.equal(driver.codes(name), expected[name]), name


def test_a_seeded_row_prefilled_statically_makes_the_librarys_frames(custom_voice_model):
    request = speak("Batch one against the library.", seed=3, frames=10)
    driver = Driver(static_runner(custom_voice_model, max_batch=1))
    driver.join(row=request)
    driver.finish()
    assert torch.equal(driver.codes("row"), library_frames(custom_voice_model, request, 10))


def test_shapes_no_bucket_holds_prefill_eagerly(custom_voice_model, static_references):
    """A prompt wider than the widest bucket: the eager forward, at its own width, and the same frames."""
    model = custom_voice_model
    runner = TalkerRunner(model, SAMPLING, max_batch=2, max_len=MAX_LEN)
    runner.build_prefills(capture=False)
    assert runner.prefill_graphs is not None
    runner.prefill_graphs.widths = [32]  # only the narrowest bucket: the probe's prompt is wider
    driver = Driver(runner)
    with prefill_forwards(model) as forwards:
        driver.join(probe=PROBE)
    assert forwards == [(1, capture_length(model, PROBE))]
    driver.finish()
    assert torch.equal(driver.codes("probe"), static_references["probe"])


def test_a_failing_static_prefill_retries_each_row_eagerly(custom_voice_model, static_references):
    """The bucketed forward fails (out of memory, a failed replay): each row is prefilled again alone, eagerly,
    from its generator's state before the group, and joins with its solo frames."""
    model = custom_voice_model
    driver = Driver(static_runner(model))
    with prefill_forwards(model, fail_when=lambda embeds: embeds.shape[1] == 64) as forwards:
        errors = driver.join(probe=PROBE, short=MATES["short"])
    assert forwards[0] == (2, 64) and [rows for rows, _ in forwards[1:]] == [1, 1]
    assert errors == {"probe": None, "short": None}
    driver.finish()
    for name in ("probe", "short"):
        assert torch.equal(driver.codes(name), static_references[name]), name


def test_the_static_prefill_reads_nothing_back_to_the_host(custom_voice_model):
    """What makes it capturable: the forward of two rows from the buffers, under a mode that sees every op."""
    runner = static_runner(custom_voice_model, max_batch=2)
    assert runner.prefill_graphs is not None
    prefill, _ = runner.prefill_graphs._prefills[(2, 64)]
    assert isinstance(prefill, StaticPrefill)
    with torch.inference_mode():
        prompts = [torch.randn(1, 40, prefill.embeds.shape[-1]), torch.randn(1, 55, prefill.embeds.shape[-1])]
        prefill.load(prompts)
        with HostReads() as reads:
            prefill.run()
    assert reads.seen == []
    assert prefill.logits.shape[0] == 2 and prefill.hidden.shape[:2] == (2, 1)


def test_building_static_prefills_needs_a_static_cache(custom_voice_model):
    with pytest.raises(ValueError, match="static cache"):
        TalkerRunner(custom_voice_model, SAMPLING, max_batch=2).build_prefills(capture=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_captured_prefills_make_the_eager_prefills_frames(custom_voice_dir):
    from qwen_stream.model import load_model
    from qwen_stream.settings import ModelSettings

    model = load_model(ModelSettings(path=str(custom_voice_dir), device="cuda", dtype="fp32"))

    def batch(capture: bool) -> Driver:
        runner = TalkerRunner(model, SAMPLING, max_batch=4, max_len=MAX_LEN, cuda_graphs=True)
        runner.build_prefills(capture=capture)
        driver = Driver(runner)
        driver.join(short=MATES["short"])
        driver.step(2)
        driver.join(probe=PROBE, long=MATES["long"], late=MATES["late"])
        driver.finish()
        return driver

    captured, eager = batch(True), batch(False)
    assert captured.runner.prefill_graphs is not None and len(captured.runner.prefill_graphs) > 0
    for name in ("short", "probe", "long", "late"):
        assert torch.equal(captured.codes(name).cpu(), eager.codes(name).cpu()), name
    assert torch.equal(captured.codes("probe").cpu(), library_frames(model, PROBE, 12).cpu())
