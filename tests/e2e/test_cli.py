"""`python -m qwen_stream say` and model loading errors, as a user meets them."""

from __future__ import annotations

import os
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from qwen_stream.__main__ import build_parser, say_settings
from qwen_stream.config import OPTIONS
from qwen_stream.engine import AudioChunk, Engine
from qwen_stream.generation import SynthesisRequest, Voice
from qwen_stream.model import ModelLoadError, load_model, resolve_placement
from qwen_stream.settings import EngineSettings, ModelSettings

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")


def say(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qwen_stream", "say", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=ENV)


def test_say_writes_exactly_the_streamed_bytes(custom_voice_dir, custom_voice_model, tmp_path):
    out, codes_out = tmp_path / "out.wav", tmp_path / "codes.npy"
    proc = say("Hello from the command line.", "--model-path", str(custom_voice_dir), "--out", str(out),
               "--speaker", "Ryan", "--language", "English", "--seed", "5", "--max-frames", "20",
               "--chunk-size", "3", "--codes-out", str(codes_out), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    with wave.open(str(out)) as w:
        assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (24000, 2, 1)
        written = w.readframes(w.getnframes())
    codes = np.load(codes_out)
    assert codes.shape == (20, 16) and codes.dtype == np.int64

    settings = EngineSettings(model=ModelSettings(path=str(custom_voice_dir)))
    engine = Engine(custom_voice_model, settings)
    try:
        request = SynthesisRequest("Hello from the command line.", "English", Voice(speaker="Ryan"), seed=5,
                                   max_frames=20)
        events = list(engine.stream(request, keep_codes=True))
    finally:
        engine.close()
    assert torch.equal(events[-1].codes, torch.from_numpy(codes))
    streamed = b"".join(e.pcm for e in events if isinstance(e, AudioChunk))
    # Chunking differs (3 vs the default 4) but the causal decoder makes the same samples either way.
    a = np.frombuffer(written, "<i2").astype(np.int32)
    b = np.frombuffer(streamed, "<i2").astype(np.int32)
    assert len(a) == len(b) == 20 * 1920
    assert np.abs(a - b).max() <= 2


def test_say_clones_reference_audio_file(base_dir, reference_audio, tmp_path):
    samples, rate = reference_audio
    ref = tmp_path / "ref.flac"
    sf.write(ref, samples, rate)
    out = tmp_path / "clone.wav"
    proc = say("Cloned voice.", "--model-path", str(base_dir), "--out", str(out), "--ref-audio", str(ref),
               "--ref-text", "The reference words.", "--max-frames", "6", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    with wave.open(str(out)) as w:
        assert w.getnframes() == 6 * 1920


@pytest.mark.parametrize("args, words", [
    (["--model-path", "/definitely/not/here"], "neither an existing directory nor a hub id"),
    (["--model-path", "Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice"], "huggingface-cli download"),
])
def test_say_errors_are_one_clear_line(tmp_path, args, words):
    proc = say("Hi.", "--out", str(tmp_path / "x.wav"), *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and words in lines[-1] and "Traceback" not in proc.stderr
    # Only the shell's own "sox: not found" (qwen-tts probes for SoX at import) may precede it.
    assert all("sox" in line for line in lines[:-1])


def test_say_shares_the_servers_streaming_and_placement_options(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["say", "--help"])
    say_help = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    shared = [row for row in OPTIONS if row.name in ("chunk_size", "first_chunk_size", "decode", "left_context",
                                                      "device", "dtype")]
    assert len(shared) == 6
    for row in shared:  # the table's help text, without the variable: say reads no environment
        assert f"{row.flag} {row.name.split('_')[-1].upper()} {' '.join(row.help.split())}" in say_help
    assert "[env " not in say_help

    def settings(*args: str):
        return say_settings(build_parser().parse_args(["say", "Hi.", "--model-path", "m", "--out", "o.wav", *args]))

    defaults = settings()
    assert (defaults.device, defaults.dtype) == ("auto", "auto")
    assert (defaults.streaming().chunk_size, defaults.streaming().first_chunk_size,
            defaults.streaming().left_context, defaults.streaming().decode) == (4, 1, 72, "carried")
    assert settings("--decode", "window").streaming().decode == "window"
    # The first chunk is clamped to the chunk size exactly as the server clamps it.
    given = settings("--chunk-size", "3", "--first-chunk-size", "8", "--device", "cpu")
    assert (given.streaming().chunk_size, given.streaming().first_chunk_size, given.device) == (3, 3, "cpu")


def test_say_refuses_bad_streaming_options_in_one_line(tmp_path):
    proc = say("Hi.", "--model-path", "/x", "--out", str(tmp_path / "x.wav"), "--chunk-size", "0")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == "error: chunk_size must be >= 1, got 0"


def test_loading_refuses_other_model_types_and_incomplete_checkpoints(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelLoadError, match="not a Qwen3-TTS one"):
        load_model(ModelSettings(path=str(tmp_path)))
    (tmp_path / "config.json").write_text('{"model_type": "qwen3_tts"}')
    with pytest.raises(ModelLoadError, match="missing generation_config.json"):
        load_model(ModelSettings(path=str(tmp_path)))
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        resolve_placement(ModelSettings(path=str(tmp_path), dtype="int3"))
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        resolve_placement(ModelSettings(path=str(tmp_path), device="cuda"))


def test_auto_placement_on_this_machine(custom_voice_model):
    placement = custom_voice_model.placement
    assert placement.device == "cpu" and placement.dtype == torch.float32 and placement.attention == "sdpa"


def test_say_script_makes_one_file_with_a_progress_bar(custom_voice_dir, tmp_path):
    script = tmp_path / "dialogue.txt"
    script.write_text("[Host] Welcome back.\n[Guest] Glad to be here.\n", encoding="utf-8")
    out = tmp_path / "podcast.flac"
    proc = say("--script", str(script), "--voices", "Host=Ryan,Guest=Vivian", "--pause-ms", "200",
               "--model-path", str(custom_voice_dir), "--out", str(out), "--max-frames", "8", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    samples, rate = sf.read(out, dtype="int16")
    assert rate == 24000 and len(samples) == 2 * 8 * 1920 + 4800  # two segments of 8 frames, one 200 ms pause
    assert "2/2" in proc.stderr and "segment" in proc.stderr  # the progress bar's last state
    assert "2 segments" in proc.stdout


def test_say_segments_refuses_a_bad_file_and_a_bad_voice_in_one_line(custom_voice_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}', encoding="utf-8")
    proc = say("--segments", str(bad), "--model-path", str(custom_voice_dir), "--out", str(tmp_path / "x.wav"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: --segments")
    good = tmp_path / "voices.json"
    good.write_text('[{"text": "Hi.", "voice": "Nobody"}]', encoding="utf-8")
    proc = say("--segments", str(good), "--model-path", str(custom_voice_dir), "--out", str(tmp_path / "x.wav"),
               "--device", "cpu")
    assert proc.returncode == 2 and "unknown voice 'Nobody'" in proc.stderr.strip().splitlines()[-1]
    neither = say("--model-path", str(custom_voice_dir), "--out", str(tmp_path / "x.wav"))
    assert neither.returncode == 2 and "exactly one of TEXT, --script or --segments" in neither.stderr
