"""Independent decoders for the encoded formats: none of them is FFmpeg, which made the streams.

wav, mp3 and opus: libsndfile (through soundfile; mp3 via mpg123, opus via libopus and libogg).
flac: the reference `flac` tool (Debian package flac): libsndfile cannot read a FLAC stream whose
STREAMINFO leaves the length unset, as a stream's must. aac: FAAD2's `faad` (Debian package faad), which
reports AAC-LC at 24 kHz as 48 kHz (it allows for implicit SBR): compare durations, not sample counts."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qwen_stream.settings import SAMPLE_RATE

TOOLS = {"flac": ("flac", "flac"), "aac": ("faad", "faad")}


def decode(fmt: str, data: bytes, workdir: Path) -> tuple[np.ndarray, int]:
    """Encoded bytes -> (int16 mono samples, sample rate)."""
    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2"), SAMPLE_RATE
    if fmt in TOOLS:
        tool, package = TOOLS[fmt]
        if shutil.which(tool) is None:
            pytest.skip(f"decoding {fmt} needs the {tool} command (Debian package {package})")
    if fmt == "flac":
        raw = subprocess.run(["flac", "--decode", "--stdout", "--silent", "--force-raw-format", "--endian=little",
                              "--sign=signed", "-"], input=data, capture_output=True, check=True).stdout
        return np.frombuffer(raw, dtype="<i2"), _flac_rate(data)
    if fmt == "aac":
        source, target = workdir / "stream.aac", workdir / "stream.wav"
        source.write_bytes(data)
        subprocess.run(["faad", "-q", "-o", str(target), str(source)], capture_output=True, check=True)
        samples, rate = sf.read(target, dtype="int16", always_2d=True)
        return samples[:, 0], rate  # faad writes mono AAC as two identical channels
    samples, rate = sf.read(io.BytesIO(data), dtype="int16", always_2d=True)
    assert samples.shape[1] == 1
    return samples[:, 0], rate


def _flac_rate(data: bytes) -> int:
    assert data[:4] == b"fLaC"
    streaminfo = data[8:8 + 34]
    rate = int.from_bytes(streaminfo[10:13], "big") >> 4
    channels = ((streaminfo[12] >> 1) & 0x7) + 1
    assert channels == 1
    return rate


def adts_header(data: bytes) -> tuple[int, int]:
    """(sample rate, channels) from the first ADTS header."""
    assert data[0] == 0xFF and data[1] & 0xF0 == 0xF0, "not an ADTS stream"
    rates = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350]
    rate = rates[(data[2] >> 2) & 0xF]
    channels = ((data[2] & 1) << 2) | (data[3] >> 6)
    return rate, channels
