"""GET /ws, the telephony protocol, on a real uvicorn server with the `websockets` library as the gateway:
160-byte mu-law frames that decode back to the server's own 24 kHz audio, text in pieces, a session voice
cloned from reference audio, cancel, and bad input."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import numpy as np
import pytest
import soundfile as sf
import soxr
import websockets

from qwen_stream.api import telephony
from qwen_stream.config import ServerSettings
from qwen_stream.settings import FrameBudget
from tests.live_server import LiveServer

MAX_FRAMES = 40


@pytest.fixture(scope="module")
def server(custom_voice_dir, base_dir, tmp_path_factory):
    models = f"custom_voice={custom_voice_dir},base={base_dir}"
    settings = ServerSettings(models=models, device="cpu", max_frames=MAX_FRAMES,
                              voices_dir=str(tmp_path_factory.mktemp("voices")))
    live = LiveServer(settings).start()
    yield live
    live.stop()


@pytest.fixture
def live(server):
    yield server
    assert server.wait_idle(), "work left running after the test"


@pytest.fixture
def recorded(monkeypatch):
    """The 24 kHz PCM the server converted for the gateway, recorded at the converter."""
    seen: list[bytes] = []

    class Recording(telephony.RawConverter):
        def push(self, pcm16: bytes) -> bytes:
            seen.append(pcm16)
            return super().push(pcm16)

    monkeypatch.setattr(telephony, "RawConverter", Recording)
    return seen


def url(server) -> str:
    return server.url.replace("http://", "ws://") + "/ws"


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 180))


async def turn(ws) -> tuple[list[bytes], list[dict]]:
    """One turn's binary frames and its JSON messages, through its audio_end (or an error)."""
    frames, messages = [], []
    while True:
        reply = await ws.recv()
        if isinstance(reply, bytes):
            frames.append(reply)
            continue
        messages.append(json.loads(reply))
        if messages[-1]["type"] in ("audio_end", "error"):
            return frames, messages


def frames_for(*sentences: str) -> int:
    """160-byte frames of a turn: each sentence runs to its budget (random weights), 1920 samples a frame at
    24 kHz, a third of that at 8 kHz, rounded up to whole frames."""
    samples = sum(FrameBudget(max_frames=MAX_FRAMES).for_text(s) for s in sentences) * 640
    return -(-samples // 160)


def mulaw_to_float(data: bytes) -> np.ndarray:
    """G.711 mu-law decoding, written from the standard (independent of the server's encoder)."""
    codes = ~np.frombuffer(data, np.uint8).astype(np.int32) & 0xFF
    sign, exponent, mantissa = codes & 0x80, (codes >> 4) & 0x07, codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign, -magnitude, magnitude).astype(np.float32) / 32768.0


def test_generate_sends_whole_mulaw_frames_that_decode_back_to_the_24khz_stream(live, recorded):
    async def main():
        async with websockets.connect(url(live)) as ws:
            await ws.send(json.dumps({"type": "generate", "text": "Hello from the phone line.", "language": "English"}))
            return await turn(ws)

    frames, messages = run(main())
    assert [m["type"] for m in messages] == ["audio_start", "audio_end"]
    assert frames and all(len(f) == 160 for f in frames)
    assert len(frames) == frames_for("Hello from the phone line.")
    phone = mulaw_to_float(b"".join(frames))
    source = np.frombuffer(b"".join(recorded), "<i2").astype(np.float32) / 32768.0
    back = soxr.resample(phone, 8000, 24000)[: len(source)]
    # Telephone band and 8-bit companding lose the highs: compare the band both keep.
    low = soxr.resample(soxr.resample(source, 24000, 8000), 8000, 24000)[: len(back)]
    correlation = np.corrcoef(back, low[: len(back)])[0, 1]
    assert correlation > 0.95


def test_text_in_twenty_pieces_speaks_the_same_sentences_as_the_whole(live, caplog):
    text = "The whole text, sent in pieces as an LLM writes it. It has two sentences."
    cuts = np.linspace(0, len(text), 21).astype(int)
    pieces = [text[a:b] for a, b in zip(cuts, cuts[1:])]

    async def main():
        async with websockets.connect(url(live)) as ws:
            for i, piece in enumerate(pieces):
                await ws.send(json.dumps({"type": "text", "text": piece, "final": i == len(pieces) - 1}))
            streamed = await turn(ws)
            await ws.send(json.dumps({"type": "generate", "text": text}))
            whole = await turn(ws)
            return streamed, whole

    (streamed, _), (whole, _) = run(main())
    assert len(streamed) == len(whole) == frames_for("The whole text, sent in pieces as an LLM writes it.",
                                                      "It has two sentences.")


def test_init_clones_a_session_voice_from_reference_audio(live, reference_audio):
    samples, rate = reference_audio
    wav = io.BytesIO()
    sf.write(wav, samples, rate, format="WAV")
    encoded = base64.b64encode(wav.getvalue()).decode()

    async def main():
        async with websockets.connect(url(live)) as ws:
            await ws.send(json.dumps({"type": "init", "ref_audio_base64": encoded, "x_vector_only": True}))
            ready = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "generate", "text": "Cloned voice."}))
            frames, messages = await turn(ws)
            await ws.send(json.dumps({"type": "init", "ref_audio_base64": encoded}))  # ICL needs its transcript
            refused = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "init", "ref_audio_base64": "/etc/passwd", "x_vector_only": True}))
            path = json.loads(await ws.recv())
            return ready, frames, messages, refused, path

    ready, frames, messages, refused, path = run(main())
    assert ready == {"type": "ready", "voice_loaded": True}
    assert messages[-1]["type"] == "audio_end" and len(frames) == frames_for("Cloned voice.")
    assert refused["type"] == "error" and refused["code"] == "invalid_request"
    assert path["type"] == "error" and path["code"] == "invalid_ref_audio"


def test_cancel_stops_the_turn_and_the_engine(live):
    async def main():
        async with websockets.connect(url(live)) as ws:
            await ws.send(json.dumps({"type": "generate", "text": "A long answer that the caller interrupts."}))
            await ws.send(json.dumps({"type": "generate", "text": "A queued answer never heard."}))
            assert json.loads(await ws.recv()) == {"type": "audio_start"}
            assert isinstance(await ws.recv(), bytes)
            await ws.send(json.dumps({"type": "cancel"}))
            frames, messages = await turn(ws)
            assert await asyncio.to_thread(live.wait_idle, 30)
            return messages

    messages = run(main())
    assert messages[-1] == {"type": "audio_end", "cancelled": True}
    steps = live.backend.engine.model.tap.steps
    assert live.wait_idle(5) and live.backend.engine.model.tap.steps == steps


def test_bad_messages_get_an_error_and_the_call_goes_on(live):
    async def main():
        async with websockets.connect(url(live)) as ws:
            replies = []
            for bad in ("nope", json.dumps({"type": "dance"}), json.dumps({"type": "generate"}),
                        json.dumps({"type": "generate", "text": "Hi.", "language": "Elvish"}),
                        json.dumps({"type": "init", "voice": "Nobody"})):
                await ws.send(bad)
                replies.append(json.loads(await ws.recv()))
            await ws.send(b"\x01\x02")
            replies.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"type": "generate", "text": "Still fine."}))
            frames, messages = await turn(ws)
            return replies, frames, messages

    replies, frames, messages = run(main())
    assert [r["code"] for r in replies] == ["invalid_request", "invalid_request", "invalid_request",
                                            "unknown_language", "unknown_voice", "invalid_message"]
    assert all(r["type"] == "error" and r["message"] for r in replies)
    assert messages[-1]["type"] == "audio_end" and len(frames) == frames_for("Still fine.")


# -- the same encodings over HTTP ------------------------------------------------------------------------


def matches_source(encoded: bytes, source: list[bytes], rate: int) -> float:
    """Correlation of decoded mu-law at `rate`, resampled to 24 kHz, with the recorded 24 kHz source, in the
    band both keep."""
    pcm = np.frombuffer(b"".join(source), "<i2").astype(np.float32) / 32768.0
    back = soxr.resample(mulaw_to_float(encoded), rate, 24000)
    low = soxr.resample(soxr.resample(pcm, 24000, rate), rate, 24000)
    n = min(len(back), len(low))
    return float(np.corrcoef(back[:n], low[:n])[0, 1])


@pytest.mark.parametrize("rate", [8000, 16000])
def test_tts_stream_speaks_mulaw_at_the_asked_rate(live, monkeypatch, rate):
    import httpx

    from qwen_stream.api import tts

    seen: list[bytes] = []

    class Recording(tts.RawConverter):
        def push(self, pcm16: bytes) -> bytes:
            seen.append(pcm16)
            return super().push(pcm16)

    monkeypatch.setattr(tts, "RawConverter", Recording)
    r = httpx.post(live.url + "/tts/stream", json={"text": "Phone call.", "encoding": "pcm_mulaw", "sample_rate": rate},
                   timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/basic"
    assert (r.headers["x-sample-rate"], r.headers["x-sample-format"], r.headers["x-sample-width"]) == (
        str(rate), "mulaw", "1")
    samples_24k = FrameBudget(max_frames=MAX_FRAMES).for_text("Phone call.") * 1920
    assert abs(len(r.content) - samples_24k * rate // 24000) <= 2
    assert matches_source(r.content, seen, rate) > 0.95


def test_openai_speech_offers_mulaw_and_alaw(live, monkeypatch):
    import httpx

    from qwen_stream import audio

    seen: list[bytes] = []

    class Recording(audio.RawConverter):
        def push(self, pcm16: bytes) -> bytes:
            seen.append(pcm16)
            return super().push(pcm16)

    monkeypatch.setattr(audio, "RawConverter", Recording)
    body = {"model": "tts-1", "input": "Phone call.", "voice": "alloy", "response_format": "mulaw"}
    r = httpx.post(live.url + "/v1/audio/speech", json=body, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/basic" and r.headers["x-sample-rate"] == "8000"
    assert matches_source(r.content, seen, 8000) > 0.95
    alaw = httpx.post(live.url + "/v1/audio/speech", json=dict(body, response_format="alaw", sample_rate=16000),
                      timeout=120)
    assert alaw.status_code == 200 and alaw.headers["x-sample-format"] == "alaw"
    assert abs(len(alaw.content) - 2 * len(r.content)) <= 4
    for bad in (dict(body, sample_rate=11025), dict(body, response_format="mp3", sample_rate=8000)):
        refused = httpx.post(live.url + "/v1/audio/speech", json=bad, timeout=60)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_sample_rate"
    refused = httpx.post(live.url + "/tts/stream", json={"text": "Hi.", "sample_rate": 11025}, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_output_format"
