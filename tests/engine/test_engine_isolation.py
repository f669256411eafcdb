"""One request cannot hurt another inside the engine: a failing row ends alone, a slow reader paces only
its own stream's generation, a stalled one is dropped and the engine moves on."""

from __future__ import annotations

import dataclasses
import queue
import threading
import time

import numpy as np
import pytest
import torch

from qwen_stream.decoder import pcm16_to_float
from qwen_stream.engine import Engine, FlowControl
from qwen_stream.events import AudioChunk, End
from qwen_stream.generation import SynthesisError, SynthesisRequest, Voice
from qwen_stream.settings import EngineSettings, ModelSettings, StreamingSettings

from .test_engine import _hold_engine, offline_pcm

CAPS = [10, 14, 12]


def batch_engine(model, max_batch: int = 3, overlap: str = "auto") -> Engine:
    return Engine(
        model, EngineSettings(model=ModelSettings(path=model.source), max_batch=max_batch, decode_overlap=overlap)
    )


def events_of(inbox: queue.Queue) -> list:
    return [inbox.get() for _ in range(inbox.qsize())]


def run_held_batch(model, texts, break_row=None, poison_row=None, overlap="auto"):
    """Submits one job per text while the engine is held, so they run as one batch; `break_row`'s decoder
    raises on its third chunk. Returns each row's events and the talker steps the batch took."""
    eng = batch_engine(model, overlap=overlap)
    try:
        gate, blocker = _hold_engine(eng)
        inboxes = [queue.Queue() for _ in texts]
        jobs = [eng.submit(SynthesisRequest(text, "English", Voice(speaker="Ryan"), max_frames=cap), inbox.put,
                           keep_codes=True) for text, cap, inbox in zip(texts, CAPS, inboxes)]
        if break_row is not None:
            _break_decoder(jobs[break_row], on_push=3)
        if poison_row is not None:
            _poison_window(jobs[poison_row], at=3)
        steps = model.tap.steps
        gate.set()
        assert blocker.wait(60) and all(job.wait(120) for job in jobs)
        return [events_of(inbox) for inbox in inboxes], model.tap.steps - steps
    finally:
        eng.close()


POISON = 7777  # a code no codebook has: the decoder below refuses a window that holds it


def _poison_window(job, at: int) -> None:
    """The job's `at`-th window to decode carries a code the (patched) decoder refuses."""
    attach = job.attach

    def attach_then_poison(model, streaming):
        attach(model, streaming)
        decoder, taken = job._decoder, [0]
        take = decoder.take

        def poisoned(codes):
            window = take(codes)
            if window is not None:
                taken[0] += 1
                if taken[0] == at:
                    marked = window.codes.clone()
                    marked[-1, 0] = POISON
                    return dataclasses.replace(window, codes=marked)
            return window

        decoder.take = poisoned

    job.attach = attach_then_poison


def _break_decoder(job, on_push: int | None = None, on_flush: bool = False) -> None:
    """The job's decoder raises at its `on_push`-th frame, or when its tail is taken (both loops take frames and
    tails through `take` and `take_tail`)."""
    attach = job.attach

    def attach_then_break(model, streaming):
        attach(model, streaming)
        decoder, pushes = job._decoder, [0]
        take = decoder.take

        def failing_take(codes):
            pushes[0] += 1
            if pushes[0] == on_push:
                raise RuntimeError("this row's decoder broke")
            return take(codes)

        def failing_tail():
            raise RuntimeError("this row's decoder broke at its tail")

        decoder.take = failing_take
        if on_flush:
            decoder.take_tail = failing_tail

    job.attach = attach_then_break


TEXTS = [f"Batch row {i} says this." for i in range(3)]


def test_a_row_that_fails_mid_generation_ends_alone_and_its_mates_are_untouched(custom_voice_model):
    torch.manual_seed(5)
    clean, _ = run_held_batch(custom_voice_model, TEXTS)
    torch.manual_seed(5)
    broken, _ = run_held_batch(custom_voice_model, TEXTS, break_row=1)

    assert broken[1][-1].error is not None and "decoder broke" in str(broken[1][-1].error)
    assert sum(isinstance(e, AudioChunk) for e in broken[1]) >= 1  # it had streamed before it broke
    for row in (0, 2):
        end = broken[row][-1]
        assert isinstance(end, End) and end.outcome == "capped" and end.stats.frames == CAPS[row]
        # The mates' frames do not depend on the failure: the same as in the clean run.
        assert torch.equal(end.codes, clean[row][-1].codes)
        streamed = pcm16_to_float(b"".join(e.pcm for e in broken[row] if isinstance(e, AudioChunk)))
        reference = offline_pcm(custom_voice_model, end.codes)
        assert np.abs(streamed - reference).max() <= 1e-3 * np.abs(reference).max()


@pytest.mark.parametrize("overlap", ["off", "on"], ids=["inline", "beside the step"])
def test_a_window_the_decoder_refuses_fails_only_its_row_of_a_batched_decode(custom_voice_model, monkeypatch, overlap):
    """Rows' due windows are decoded in one call; when that call fails, each window is decoded alone, so only
    the row whose window the decoder refuses ends with the error, and its mates' audio is whole; inline and
    with the decode stage beside the next step."""
    model = custom_voice_model
    batch_sizes = []
    assert model.carried is not None  # chunks decode with the decoder's state carried (the default)
    decode = model.carried.decode

    def refusing(codes, states, keep=None):
        batch_sizes.append(codes.shape[0])
        if bool((codes == POISON).any()):
            raise RuntimeError("the decoder refuses this window")
        return decode(codes, states, keep)  # a refused call changes no row's state: the retry alone starts over

    monkeypatch.setattr(model.carried, "decode", refusing)
    torch.manual_seed(5)
    clean, _ = run_held_batch(model, TEXTS, overlap=overlap)
    assert max(batch_sizes) >= 2  # rows in step decoded their chunks in one call (the blocker holds a slot)
    torch.manual_seed(5)
    poisoned, _ = run_held_batch(model, TEXTS, poison_row=1, overlap=overlap)
    assert poisoned[1][-1].error is not None and "refuses" in str(poisoned[1][-1].error)
    assert sum(isinstance(e, AudioChunk) for e in poisoned[1]) == 2  # the chunks before the refused one
    for row in (0, 2):
        end = poisoned[row][-1]
        assert isinstance(end, End) and end.outcome == "capped" and torch.equal(end.codes, clean[row][-1].codes)
        streamed = pcm16_to_float(b"".join(e.pcm for e in poisoned[row] if isinstance(e, AudioChunk)))
        reference = offline_pcm(model, end.codes)
        assert len(streamed) == len(reference)
        assert np.abs(streamed - reference).max() <= 1e-3 * np.abs(reference).max()


def test_a_prompt_the_tokenizer_refuses_fails_only_its_row(custom_voice_model, monkeypatch):
    tts = custom_voice_model.tts
    tokenize = tts._tokenize_texts

    def picky(texts):
        if any("BOOM" in t for t in texts):
            raise ValueError("the tokenizer refuses this text")
        return tokenize(texts)

    monkeypatch.setattr(tts, "_tokenize_texts", picky)
    rows, steps = run_held_batch(custom_voice_model, ["Row zero is fine.", "Row one says BOOM.", "Row two is fine."])
    assert rows[1][-1].error is not None and "refuses" in str(rows[1][-1].error)
    assert not any(isinstance(e, AudioChunk) for e in rows[1])
    for row in (0, 2):
        end = rows[row][-1]
        assert isinstance(end, End) and end.error is None and end.stats.frames == CAPS[row]
    assert steps == max(CAPS[0], CAPS[2])  # the good rows still ran together, as one batch


def test_text_the_tokenizer_cannot_encode_is_refused_before_any_work(custom_voice_model):
    eng = batch_engine(custom_voice_model)
    try:
        for request in (SynthesisRequest("a\ud800b", "English", Voice(speaker="Ryan")),
                        SynthesisRequest("fine", "English", Voice(speaker="Ryan", instruct="x\udfffy"))):
            with pytest.raises(SynthesisError, match="not valid Unicode"):
                eng.submit(request, lambda event: None)
    finally:
        eng.close()


def _flowing_job(eng: Engine, flow: FlowControl, cap: int):
    inbox: queue.Queue = queue.Queue()
    request = SynthesisRequest("A reader paces this stream.", "English", Voice(speaker="Eric"), max_frames=cap)
    return eng.submit(request, inbox.put, flow=flow), inbox


def test_generation_pauses_for_a_slow_reader_and_never_runs_far_ahead(custom_voice_model):
    eng = Engine(custom_voice_model, EngineSettings(model=ModelSettings(path=custom_voice_model.source),
                                                    streaming=StreamingSettings(chunk_size=4)))
    flow = FlowControl(max_ahead_frames=3, timeout=60)
    most_unread = []
    try:
        job, inbox = _flowing_job(eng, flow, cap=30)
        while flow.unread < flow.limit:  # the reader takes nothing until the bound is reached
            assert not job.ended
            time.sleep(0.01)
        paused_at = job.stats.frames
        time.sleep(0.3)
        assert job.stats.frames == paused_at and not job.ended  # generation waits for the reader
        frames = 0
        while True:
            event = inbox.get(timeout=60)
            most_unread.append(flow.unread)
            if not isinstance(event, AudioChunk):
                break
            frames += event.frames
            flow.taken(event.frames)
        assert isinstance(event, End) and event.outcome == "capped" and frames == 30
        assert max(most_unread) <= flow.limit - 1 + 4  # the bound, plus at most one chunk in the making
    finally:
        eng.close()


@pytest.mark.parametrize("others_waiting", [False, True])
def test_a_stalled_reader_is_dropped_and_the_engine_moves_on(custom_voice_model, others_waiting):
    """Alone, the engine waits for the reader, then gives up; with others waiting, the stream goes on buffering
    (nobody waits for it), and is cut all the same once its reader has taken nothing for the timeout."""
    eng = batch_engine(custom_voice_model, max_batch=1)  # the next job waits in the backlog, not as a mate
    next_one = SynthesisRequest("Next, please.", "English", Voice(speaker="Ryan"), max_frames=6)
    try:
        stalled, inbox = _flowing_job(eng, FlowControl(max_ahead_frames=2, timeout=0.5), cap=2000)
        if others_waiting:
            after = eng.submit(next_one, lambda event: None)
        assert stalled.wait(120)
        end = events_of(inbox)[-1]
        assert isinstance(end, End) and end.outcome == "stalled" and end.stats.frames < 2000
        if others_waiting:
            assert end.stats.frames > 2 + 4  # it went on past the bound: the next job was waiting
        else:
            assert end.stats.frames <= 2 + 4  # it waited: the bound plus one chunk in the making
            after = eng.submit(next_one, lambda event: None)
        assert after.wait(60) and eng.wait_idle(60)
    finally:
        eng.close()


def test_a_slow_reader_does_not_hold_back_its_batch_mates(custom_voice_model):
    eng = batch_engine(custom_voice_model, max_batch=2)
    try:
        gate, blocker = _hold_engine(eng)
        flow = FlowControl(max_ahead_frames=2, timeout=3600)  # slow, never stalled
        slow, inbox = _flowing_job(eng, flow, cap=40)
        mate = eng.submit(SynthesisRequest("I read quickly.", "English", Voice(speaker="Ryan"), max_frames=30),
                          lambda event: None)
        gate.set()
        assert blocker.wait(60) and mate.wait(120)  # while the slow reader has taken nothing at all
        assert not slow.ended and flow.unread > flow.limit  # it buffered rather than hold its mate back
        frames = 0
        while not isinstance(event := inbox.get(timeout=60), End):
            frames += event.frames
            flow.taken(event.frames)
        assert event.outcome == "capped" and frames == 40
    finally:
        eng.close()


def test_cancelling_a_stream_wakes_an_engine_waiting_for_its_reader(custom_voice_model):
    eng = Engine(custom_voice_model, EngineSettings(model=ModelSettings(path=custom_voice_model.source)))
    try:
        flow = FlowControl(max_ahead_frames=2, timeout=3600)
        job, inbox = _flowing_job(eng, flow, cap=200)
        while flow.unread < flow.limit:
            time.sleep(0.01)
        threading.Timer(0.1, job.cancel).start()
        assert job.wait(60)  # long before the hour-long timeout
        assert events_of(inbox)[-1].outcome == "cancelled"
    finally:
        eng.close()


@pytest.mark.parametrize("how", ["capped", "cancelled"])
def test_a_row_that_stops_early_ends_without_waiting_for_its_batch(custom_voice_model, how):
    """Its tail and its end come at the step it stopped, so its client's next sentence can queue at once."""
    eng = batch_engine(custom_voice_model, max_batch=2)
    tap = custom_voice_model.tap
    ended_at = {}
    try:
        gate, blocker = _hold_engine(eng)
        long = eng.submit(SynthesisRequest("The long row goes on and on.", "English", Voice(speaker="Ryan"),
                                           max_frames=80), lambda event: None)
        short_box: list = []

        def short_emit(event):
            short_box.append(event)
            if isinstance(event, AudioChunk) and how == "cancelled" and event.index == 1:
                short.cancel()
            if isinstance(event, End):
                ended_at["step"] = tap.steps

        short = eng.submit(SynthesisRequest("Short.", "English", Voice(speaker="Eric"), max_frames=8), short_emit)
        start = tap.steps
        gate.set()
        assert blocker.wait(60) and long.wait(120) and short.wait(120)
        end = short_box[-1]
        assert isinstance(end, End) and end.outcome == how
        assert ended_at["step"] - start <= 8 + 1  # at its own stop (its end may leave a step later), not at 80
        if how == "capped":
            assert sum(e.frames for e in short_box if isinstance(e, AudioChunk)) == 8  # the tail was flushed
    finally:
        eng.close()


@pytest.mark.parametrize("alone", [True, False])
def test_a_decoder_that_fails_at_its_tail_ends_only_its_row_and_the_worker_lives(custom_voice_model, alone):
    """The tail flush runs in the frame hook (a row that stops inside a batch) or after the generate call
    (the batch's last row): a failure there is that row's alone, and the engine keeps serving."""
    eng = batch_engine(custom_voice_model, max_batch=2)
    try:
        gate, blocker = _hold_engine(eng)
        inbox, mate_inbox = queue.Queue(), queue.Queue()
        broken = eng.submit(SynthesisRequest("My tail breaks.", "English", Voice(speaker="Eric"), max_frames=7),
                            inbox.put)
        _break_decoder(broken, on_flush=True)
        if not alone:
            eng.submit(SynthesisRequest("I go on longer.", "English", Voice(speaker="Ryan"), max_frames=20),
                       mate_inbox.put)
        gate.set()
        assert blocker.wait(60) and broken.wait(60)
        last = events_of(inbox)[-1]
        assert isinstance(last, End) and last.error is not None
        if not alone:
            assert eng.wait_idle(60)
            mate_end = events_of(mate_inbox)[-1]
            assert isinstance(mate_end, End) and mate_end.error is None and mate_end.stats.frames == 20
        after = eng.submit(SynthesisRequest("Still here.", "English", Voice(speaker="Ryan"), max_frames=4),
                           lambda event: None)
        assert after.wait(60) and eng.wait_idle(60)
    finally:
        eng.close()
