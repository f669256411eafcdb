"""The server's estimate of a reader's playback (playback.py), and the rule that sends a chunk ahead of the
schedule when that reader would run out of audio first. Times here are given, never read from a clock."""

from __future__ import annotations

import pytest

from qwen_stream.continuous import Load
from qwen_stream.playback import Playback, runs_dry


def test_playback_counts_audio_back_to_back_and_restarts_after_running_dry():
    playback = Playback()
    assert playback.left(100.0) is None  # nothing sent: no playback yet
    playback.sent(0.08, now=100.0)
    assert playback.left(100.05) == pytest.approx(0.03)
    playback.sent(0.16, now=100.05)  # before the first ran out: plays right after it
    assert playback.left(100.05) == pytest.approx(0.19)
    assert playback.left(100.30) == pytest.approx(-0.06)  # ran out 60 ms ago
    playback.sent(0.32, now=101.0)  # after it ran out: plays from when it came
    assert playback.left(101.0) == pytest.approx(0.32)


def test_a_reader_runs_dry_when_its_audio_left_is_less_than_its_chunks_steps_one_more_and_the_decode():
    load = Load(steps=100, period_s=0.02, decode_s=0.005)
    # Two frames due: (2 + 1) periods and a decode = 65 ms.
    assert runs_dry(0.064, frames_due=2, load=load)
    assert not runs_dry(0.066, frames_due=2, load=load)
    assert runs_dry(-0.01, frames_due=1, load=load)  # already out: the next chunk is late whatever it holds
    assert not runs_dry(None, frames_due=1, load=load)  # nothing sent yet: no playback to keep whole
    assert not runs_dry(0.001, frames_due=1, load=Load())  # nothing measured: only audio already out counts
    assert runs_dry(-0.001, frames_due=1, load=Load())
    # Frames slower than real time: no chunk size keeps a stream whole, and early chunks would only add decodes.
    assert not runs_dry(-1.0, frames_due=1, load=Load(steps=100, period_s=0.08, decode_s=0.005))
