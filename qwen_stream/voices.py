"""Voices: reference audio -> clone prompts. Audio is always decoded here and handed to qwen-tts as
(samples, rate): a string given to the library would be fetched as a URL or read as a local path."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from .model import LoadedModel

MIN_REFERENCE_SECONDS = 1.0
MAX_REFERENCE_SECONDS = 30.0


class VoiceError(ValueError):
    """Reference audio that cannot make a voice (unreadable, too short, silent...)."""


def read_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Audio file bytes (wav, flac, ogg, mp3 where libsndfile supports it) -> mono float32, rate."""
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise VoiceError(f"not a readable audio file ({e})") from e
    return samples.mean(axis=1).astype(np.float32), int(rate)


def check_reference(samples: np.ndarray, rate: int) -> None:
    seconds = len(samples) / rate if rate else 0.0
    if seconds < MIN_REFERENCE_SECONDS:
        raise VoiceError(f"reference audio is {seconds:.2f} s; at least {MIN_REFERENCE_SECONDS:g} s is needed")
    if seconds > MAX_REFERENCE_SECONDS:
        raise VoiceError(f"reference audio is {seconds:.1f} s; at most {MAX_REFERENCE_SECONDS:g} s is allowed")
    if not np.isfinite(samples).all() or float(np.sqrt(np.mean(samples**2))) < 1e-4:
        raise VoiceError("reference audio is silent")


def clone_prompt(model: LoadedModel, samples: np.ndarray, rate: int, ref_text: str | None = None):
    """A VoiceClonePromptItem: ICL (continues the reference) with a transcript, x-vector only without."""
    if model.family != "base":
        raise VoiceError("voice cloning needs a Base model")
    check_reference(samples, rate)
    text = ref_text.strip() if ref_text else None
    items = model.tts.create_voice_clone_prompt(ref_audio=(samples, rate), ref_text=text,
                                                x_vector_only_mode=not text)
    return items[0]
