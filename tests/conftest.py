"""Shared fixtures: tiny random checkpoints of the three families, built once and cached.

The cache lives in QWEN_STREAM_TEST_CACHE (default: .pytest_cache/qwen-stream under the repo), so reruns
skip the build; a fresh clone builds them (about 15 s each)."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("QWEN_STREAM_TEST_CACHE", ROOT / ".pytest_cache" / "qwen-stream"))

# Nothing in the tests may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore", message=".*pad_token_id.*")
# Servers the tests start as processes keep their jobs here, never in the user's own job store (a server
# resumes every job it finds there).
os.environ.setdefault("QWEN_STREAM_JOBS_DIR", tempfile.mkdtemp(prefix="qwen-stream-test-jobs-"))


def pytest_configure(config):
    # Tests run a server, clients and the engine on two cores: torch's OpenMP pool spinning on both cores
    # then slows every step by orders of magnitude. One intra-op thread is as fast for tiny checkpoints.
    import torch

    torch.set_num_threads(1)


def checkpoint(kind: str) -> Path:
    from qwen_stream.tiny import ensure_checkpoint

    return ensure_checkpoint(CACHE, kind)


@pytest.fixture(scope="session")
def custom_voice_dir() -> Path:
    return checkpoint("custom_voice")


@pytest.fixture(scope="session")
def voice_design_dir() -> Path:
    return checkpoint("voice_design")


@pytest.fixture(scope="session")
def base_dir() -> Path:
    return checkpoint("base")


def _load(path: Path):
    from qwen_stream.model import load_model
    from qwen_stream.settings import ModelSettings

    return load_model(ModelSettings(path=str(path), device="cpu"))


@pytest.fixture(scope="session")
def custom_voice_model(custom_voice_dir):
    return _load(custom_voice_dir)


@pytest.fixture(scope="session")
def voice_design_model(voice_design_dir):
    return _load(voice_design_dir)


@pytest.fixture(scope="session")
def base_model(base_dir):
    return _load(base_dir)


@pytest.fixture(scope="session")
def reference_audio():
    """3 s of a voiced-like signal at 16 kHz: harmonics with a slow pitch glide, plus a little noise."""
    import numpy as np

    rate = 16_000
    t = np.arange(3 * rate) / rate
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    wave = 0.3 * wave / np.abs(wave).max() + 0.01 * np.random.default_rng(0).standard_normal(len(t))
    return wave.astype(np.float32), rate
