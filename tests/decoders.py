"""Independent decoders for the encoded formats: none of them is FFmpeg, which made the streams.

wav, mp3 and opus: libsndfile (through soundfile; mp3 via mpg123, opus via libopus and libogg).
flac: the reference `flac` tool (Debian package flac); tests/audio/test_audio.py also reads the FLAC file with
libsndfile and FFmpeg, which need its length in STREAMINFO. aac: FAAD2's `faad` (Debian package faad), which
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
    info = flac_streaminfo(data)
    assert info["channels"] == 1
    return info["sample_rate"]


def flac_streaminfo(data: bytes) -> dict:
    """The fields of a FLAC file's STREAMINFO (RFC 9639 8.2), read from the bytes: the first metadata block,
    34 bytes after the 4-byte marker and the 4-byte block header."""
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "not a FLAC file starting with STREAMINFO"
    block = data[8:8 + 34]
    packed = int.from_bytes(block[10:18], "big")  # rate 20 bits, channels-1 3, bits-1 5, total samples 36
    return {
        "min_block": int.from_bytes(block[0:2], "big"), "max_block": int.from_bytes(block[2:4], "big"),
        "min_frame": int.from_bytes(block[4:7], "big"), "max_frame": int.from_bytes(block[7:10], "big"),
        "sample_rate": packed >> 44, "channels": ((packed >> 41) & 0x7) + 1, "bits": ((packed >> 36) & 0x1F) + 1,
        "total_samples": packed & ((1 << 36) - 1), "md5": block[18:34],
    }


def pyav_decode(path: Path) -> tuple[np.ndarray, int | None]:
    """A file through FFmpeg's demuxer and decoder (PyAV): (int16 mono samples, the stream's duration in
    samples as the container announces it, None if it does not)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.sample_rate == SAMPLE_RATE and stream.channels == 1
        duration = stream.duration
        if duration is not None:
            duration = round(duration * stream.time_base * SAMPLE_RATE)
        parts = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
    samples = np.concatenate(parts) if parts else np.zeros(0, dtype="<i2")
    assert samples.dtype == np.int16
    return samples, duration


def adts_header(data: bytes) -> tuple[int, int]:
    """(sample rate, channels) from the first ADTS header."""
    assert data[0] == 0xFF and data[1] & 0xF0 == 0xF0, "not an ADTS stream"
    rates = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350]
    rate = rates[(data[2] >> 2) & 0xF]
    channels = ((data[2] & 1) << 2) | (data[3] >> 6)
    return rate, channels
