"""The serverless worker: the platform's exact input schema, a model directory laid out as released, the
answer's audio and metadata, bad input as an error answer, and the runpod SDK's local test mode."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from qwen_stream.serverless import Worker, models_in, worker_settings
from qwen_stream.settings import FrameBudget

ROOT = Path(__file__).resolve().parents[2]
MAX_FRAMES = 20


@pytest.fixture(scope="module")
def model_dir(custom_voice_dir, tmp_path_factory) -> Path:
    """QWEN_TTS_MODEL_DIR as a platform volume holds it: checkpoints under their released names."""
    root = tmp_path_factory.mktemp("models")
    (root / "Qwen3-TTS-12Hz-0.6B-CustomVoice").symlink_to(custom_voice_dir)
    (root / "unrelated-folder").mkdir()
    return root


@pytest.fixture(scope="module")
def worker(model_dir, tmp_path_factory):
    env = {"QWEN_TTS_MODEL_DIR": str(model_dir), "QWEN_STREAM_DEVICE": "cpu", "QWEN_STREAM_MAX_FRAMES": str(MAX_FRAMES),
           "QWEN_STREAM_VOICES_DIR": str(tmp_path_factory.mktemp("voices"))}
    w = Worker(worker_settings(env))
    yield w
    w.close()


def test_a_model_directory_is_read_by_its_released_names(model_dir):
    assert models_in(model_dir) == f"custom_voice={model_dir / 'Qwen3-TTS-12Hz-0.6B-CustomVoice'}"
    assert models_in(model_dir / "unrelated-folder") is None


def test_text_input_answers_audio_and_metadata(worker):
    answer = worker.handle({"id": "x", "input": {"text": "Hello there. Second sentence.", "voice": "Ryan",
                                                 "model": "tts-1", "output_format": "wav", "params": {}}})
    samples, rate = sf.read(io.BytesIO(base64.b64decode(answer["audio_base64"])), dtype="int16")
    frames = sum(FrameBudget(max_frames=MAX_FRAMES).for_text(s) for s in ("Hello there.", "Second sentence."))
    meta = answer["metadata"]
    assert rate == 24000 and len(samples) == frames * 1920
    assert meta["duration_seconds"] == pytest.approx(len(samples) / 24000, abs=1e-3)
    assert (meta["sample_rate"], meta["format"], meta["num_segments"]) == (24000, "wav", 1)
    assert meta["generation_time_seconds"] > 0


def test_segments_with_voices_and_a_pause(worker):
    answer = worker.handle({"input": {"segments": [{"text": "One.", "voice": "Ryan"}, {"text": "Two.", "voice": "Vivian"}],
                                      "output_format": "flac", "pause_ms": 250}})
    samples, _ = sf.read(io.BytesIO(base64.b64decode(answer["audio_base64"])), dtype="int16")
    frames = sum(FrameBudget(max_frames=MAX_FRAMES).for_text(s) for s in ("One.", "Two."))
    assert len(samples) == frames * 1920 + 6000 and answer["metadata"]["num_segments"] == 2


def test_sampling_params_decide_the_audio(worker):
    """top-k 1 in both samplers fixes every token: two answers agree, and differ from the worker's sampling."""
    event = {"input": {"text": "Fixed by its settings.", "voice": "Ryan", "output_format": "pcm",
                       "params": {"top_k": 1, "subtalker_top_k": 1}}}
    first, second = (base64.b64decode(worker.handle(event)["audio_base64"]) for _ in range(2))
    assert first == second
    del event["input"]["params"]
    assert base64.b64decode(worker.handle(event)["audio_base64"]) != first


@pytest.mark.parametrize("event, code", [
    ({"input": {"text": "Hi.", "segments": [{"text": "Hi."}]}}, "invalid_request"),
    ({"input": {}}, "invalid_request"),
    ({"input": {"text": "Hi.", "voice": "Nobody"}}, "unknown_voice"),
    ({"input": {"text": "Hi.", "output_format": "ogg"}}, "invalid_format"),
    ({"input": {"text": "Hi.", "params": {"temperature": -1}}}, "invalid_params"),
    ({"input": {"text": "Hi.", "params": {"top_k": "many"}}}, "invalid_params"),
    ({"input": {"text": "Hi.", "params": {"seed_of_doubt": 1}}}, "invalid_params"),
    ({"input": {"text": "Hi.", "colour": "blue"}}, "invalid_request"),
    ({"text": "Hi."}, "invalid_request"),
])
def test_bad_input_is_an_error_answer(worker, event, code):
    answer = worker.handle(event)
    assert answer["code"] == code and answer["error"] and "audio_base64" not in answer


def test_the_sdks_local_test_mode_runs_one_request(model_dir, tmp_path):
    env = dict(os.environ, QWEN_TTS_MODEL_DIR=str(model_dir), QWEN_STREAM_DEVICE="cpu",
               QWEN_STREAM_MAX_FRAMES=str(MAX_FRAMES), QWEN_STREAM_VOICES_DIR=str(tmp_path), OMP_NUM_THREADS="1")
    event = {"input": {"text": "Local test.", "voice": "Ryan", "output_format": "mp3"}}
    done = subprocess.run([sys.executable, "-m", "qwen_stream.serverless", "--test_input", json.dumps(event)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "audio_base64" in done.stdout and "'format': 'mp3'" in done.stdout
    bad = dict(event, input=dict(event["input"], voice="Nobody"))
    failed = subprocess.run([sys.executable, "-m", "qwen_stream.serverless", "--test_input", json.dumps(bad)],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert failed.returncode == 1 and "unknown voice 'Nobody'" in failed.stdout + failed.stderr
