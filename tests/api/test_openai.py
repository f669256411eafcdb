"""The OpenAI-compatible API end to end: the official `openai` SDK against a real server (tiny checkpoint).

Every format is streamed and read back by an independent decoder (tests/decoders.py), and its duration is
compared with the PCM the server generated for that very request (recorded by wrapping the speech service's stream)."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import openai
import pytest

from qwen_stream.api.openai_protocol import OPENAI_VOICES
from qwen_stream.audio import FORMATS
from qwen_stream.config import ServerSettings
from qwen_stream.settings import BYTES_PER_FRAME, SAMPLE_RATE, SAMPLES_PER_FRAME, FrameBudget

from tests.decoders import adts_header, decode
from tests.live_server import LiveServer

MAX_FRAMES = 150
SHORT = "Hi there."  # 25 + 2 * 8 = 41 frames (3.3 s)
LONG = "This sentence is long enough to keep the engine busy for many frames of audio."
FRAME_SECONDS = SAMPLES_PER_FRAME / SAMPLE_RATE
KEY = "test-key-1234"


class PcmTap:
    """Wraps the service's PCM stream to record what each request (by X-Request-Id) really generated."""

    def __init__(self, service):
        self.bytes: dict[str, int] = {}
        original = service.stream

        async def stream(utterance):
            self.bytes[utterance.id] = 0
            async for data in original(utterance):
                self.bytes[utterance.id] += len(data)
                yield data

        service.stream = stream

    def seconds(self, request_id: str) -> float:
        return self.bytes[request_id] / 2 / SAMPLE_RATE


@pytest.fixture(scope="module")
def server(custom_voice_dir):
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=MAX_FRAMES, max_queue=2,
                              max_text_chars=300)
    live = LiveServer(settings).start()
    live.tap = PcmTap(live.backend.speech)
    yield live
    live.stop()


@pytest.fixture
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c
    assert server.wait_idle(), "work left running after the test"


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def steps(server) -> int:
    return server.backend.engine.model.tap.steps


def read_noting_first_step(response, server) -> tuple[bytes, int]:
    """The whole streamed body, and the engine's step count when its first bytes arrived."""
    parts, first_step = [], None
    for part in response.iter_bytes():
        if first_step is None:
            first_step = steps(server)
        parts.append(part)
    return b"".join(parts), first_step


def speak(client, **kwargs) -> tuple[bytes, dict, list[bytes]]:
    kwargs = {"model": "tts-1", "input": SHORT, "voice": "alloy", **kwargs}
    with client.audio.speech.with_streaming_response.create(**kwargs) as r:
        parts = list(r.iter_bytes())
        return b"".join(parts), dict(r.headers), parts


# -- formats -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
def test_every_format_streams_and_decodes_to_the_pcm_duration(server, client, name, tmp_path):
    fmt = FORMATS[name]
    tap_start = steps(server)
    with client.audio.speech.with_streaming_response.create(model="tts-1", input=SHORT, voice="alloy",
                                                             response_format=name) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == fmt.media_type
        request_id = r.headers["x-request-id"]
        data, first_step = read_noting_first_step(r, server)
    pcm_seconds = server.tap.seconds(request_id)
    assert pcm_seconds >= 10 * FRAME_SECONDS
    # The first bytes left before generation ended (FLAC is sent whole, once its header knows the length).
    assert fmt.whole_file or first_step - tap_start < pcm_seconds / FRAME_SECONDS
    if name == "pcm":
        assert r.headers["x-sample-rate"] == "24000" and r.headers["x-sample-format"] == "s16le"
        assert len(data) == server.tap.bytes[request_id] and len(data) % BYTES_PER_FRAME == 0
    if name == "aac":
        assert adts_header(data) == (24000, 1)
    samples, rate = decode(name, data, tmp_path)
    decoded = len(samples) / rate
    slack = (fmt.priming + fmt.frame_samples) / SAMPLE_RATE  # encoder delay and padding, see audio.FORMATS
    assert -FRAME_SECONDS <= decoded - pcm_seconds <= FRAME_SECONDS + slack, (decoded, pcm_seconds)


def test_default_format_is_mp3(http):
    r = http.post("/v1/audio/speech", json={"model": "tts-1", "input": SHORT, "voice": "alloy"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
    assert r.content[:2] in (b"\xff\xf3", b"\xff\xf2", b"\xff\xfb")  # an MPEG-2 layer III frame, no ID3 tag


def test_sse_events_carry_the_whole_stream_then_done_with_usage(server, client):
    with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", input=SHORT, voice="alloy",
                                                             response_format="pcm", stream_format="sse") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        request_id = r.headers["x-request-id"]
        body = b"".join(r.iter_bytes()).decode()
    events = [json.loads(block[len("data: "):]) for block in body.split("\n\n") if block.strip()]
    assert all(block.startswith("data: ") for block in body.split("\n\n") if block.strip())
    deltas, done = events[:-1], events[-1]
    assert len(deltas) > 1 and all(e["type"] == "speech.audio.delta" and set(e) == {"type", "audio"} for e in deltas)
    audio = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    assert len(audio) == server.tap.bytes[request_id]
    assert done["type"] == "speech.audio.done"
    usage = done["usage"]
    assert usage["output_tokens"] == len(audio) // BYTES_PER_FRAME and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_sse_deltas_of_an_encoded_format_join_into_a_file(server, client, tmp_path):
    with client.audio.speech.with_streaming_response.create(model="tts-1", input=SHORT, voice="alloy",
                                                             response_format="opus", stream_format="sse") as r:
        request_id = r.headers["x-request-id"]
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    events = [json.loads(line[len("data: "):]) for line in lines]
    assert events[-1]["type"] == "speech.audio.done"
    data = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    samples, rate = decode("opus", data, tmp_path)
    assert abs(len(samples) / rate - server.tap.seconds(request_id)) <= FRAME_SECONDS


# -- speed -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("speed", [2.0, 0.5])
def test_speed_changes_duration_and_still_streams(server, client, speed):
    tap_start = steps(server)
    with client.audio.speech.with_streaming_response.create(model="tts-1", input=SHORT, voice="alloy",
                                                             response_format="pcm", speed=speed) as r:
        request_id = r.headers["x-request-id"]
        data, first_step = read_noting_first_step(r, server)
    out_seconds = len(data) / 2 / SAMPLE_RATE
    want = server.tap.seconds(request_id) / speed
    assert abs(out_seconds - want) <= 0.02 * want + FRAME_SECONDS, (out_seconds, want)
    assert first_step - tap_start < server.tap.seconds(request_id) / FRAME_SECONDS  # audio before the end


@pytest.mark.parametrize("speed", [0.1, 4.5, 0])
def test_speed_out_of_range_is_a_400_naming_the_range(server, http, speed):
    before = steps(server)
    r = http.post("/v1/audio/speech", json={"model": "tts-1", "input": SHORT, "voice": "alloy", "speed": speed})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_speed"
    assert "0.25" in r.json()["error"]["message"] and "4.0" in r.json()["error"]["message"]
    assert steps(server) == before and server.backend.speech.queues.client_count == 0


# -- voices ------------------------------------------------------------------------------------------


@pytest.fixture
def prepared_voices(server, monkeypatch):
    """The voice each request reached the speech service's prepare with."""
    seen = []
    original = server.backend.speech.prepare

    async def prepare(client_id, text, language, voice, instruct, normalize, **kwargs):
        seen.append((voice, instruct, language))
        return await original(client_id, text, language, voice, instruct, normalize, **kwargs)

    monkeypatch.setattr(server.backend.speech, "prepare", prepare)
    return seen


def test_openai_voices_map_through_the_table_and_our_own_names_pass(client, prepared_voices):
    speak(client, voice="alloy", response_format="pcm")
    speak(client, voice="ONYX", response_format="pcm")
    speak(client, voice="Ryan", response_format="pcm")
    speak(client, voice={"id": "nova"}, response_format="pcm", extra_body={"language": "English"})
    speak(client, voice="default", response_format="pcm", instructions="", extra_body={"normalize": False})
    assert [v for v, _, _ in prepared_voices] == [OPENAI_VOICES["alloy"], OPENAI_VOICES["onyx"], "Ryan",
                                                  OPENAI_VOICES["nova"], "default"]
    assert OPENAI_VOICES["alloy"] == "Serena" and prepared_voices[3][2] == "English"


def test_unknown_voice_is_a_400_listing_the_choices(server, client):
    before = steps(server)
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.speech.create(model="tts-1", input=SHORT, voice="nobody")
    error = caught.value.response.json()["error"]
    assert error["code"] == "unknown_voice" and "alloy" in error["message"] and "Vivian" in error["message"]
    assert steps(server) == before


def test_a_voice_design_model_maps_every_openai_voice_to_default(voice_design_dir):
    settings = ServerSettings(model_path=str(voice_design_dir), device="cpu", max_frames=30)
    live = LiveServer(settings).start()
    try:
        with openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
            data, headers, _ = speak(c, voice="shimmer", instructions="A calm, low voice.", response_format="pcm",
                                     input="Hi.")
            assert data and headers["content-type"] == "audio/pcm"
        with httpx.Client(base_url=live.url, timeout=60) as c:
            voices = c.get("/v1/audio/voices").json()["voices"]
        assert voices[0] == {"id": "default", "name": "default"}
        assert all(v["name"] == f"{v['id']} (default)" for v in voices[1:]) and len(voices) == 1 + len(OPENAI_VOICES)
        assert live.wait_idle()
    finally:
        live.stop()


def test_configured_entries_are_taken_as_written():
    from qwen_stream.api.openai import OpenAISpeech

    speech = OpenAISpeech(ServerSettings(openai_voices={"Echo": "my-clone"}))
    assert speech.voice("echo", ["default"]) == "my-clone"  # a wrong one is then an unknown voice, not 'default'
    assert speech.voice("alloy", ["default"]) == "default" and speech.voice("alloy", ["Serena"]) == "Serena"
    assert speech.voice("Vivian", ["default"]) == "Vivian"  # not an OpenAI name: ours, checked by prepare


# -- listings ----------------------------------------------------------------------------------------


def test_listings_have_the_shapes_openai_clients_read(server, client, http):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert {"tts-1", "tts-1-hd", "gpt-4o-mini-tts"} <= set(ids) and "custom_voice-tiny" in ids
    raw = http.get("/v1/models").json()
    assert raw["object"] == "list"
    assert all({"id", "object", "created", "owned_by", "kind", "description"} <= set(m) and m["object"] == "model" for m in raw["data"])
    audio_models = http.get("/v1/audio/models").json()
    assert [m["id"] for m in audio_models["models"]] == ids
    voices = http.get("/v1/audio/voices").json()["voices"]
    assert all(set(v) == {"id", "name"} for v in voices)
    names = {v["id"] for v in voices}
    assert set(OPENAI_VOICES) <= names and set(server.backend.engine.model.speakers) <= names
    assert {"id": "alloy", "name": "alloy (Serena)"} in voices


# -- validation before the first byte ----------------------------------------------------------------


@pytest.mark.parametrize("payload, headers, code", [
    ({"input": SHORT, "voice": "alloy", "response_format": "ogg"}, {}, "invalid_request"),
    ({"input": SHORT, "voice": "alloy", "stream_format": "chunks"}, {}, "invalid_request"),
    ({"input": "", "voice": "alloy"}, {}, "empty_text"),
    ({"input": "x" * 301, "voice": "alloy"}, {}, "text_too_long"),
    ({"input": SHORT, "voice": "alloy", "language": "Klingon"}, {}, "unknown_language"),
    ({"input": SHORT}, {}, "invalid_request"),
    ({"input": SHORT, "voice": "alloy", "temprature": 0.5}, {}, "invalid_request"),  # a typo is not ignored
    ({"input": SHORT, "voice": "alloy", "temperature": 0}, {}, "invalid_params"),
    ({"input": SHORT, "voice": "alloy", "top_p": "high"}, {}, "invalid_request"),
    ({"input": SHORT, "voice": "alloy", "user": "has space"}, {}, "invalid_request"),
    ({"input": SHORT, "voice": "alloy"}, {"X-Client-Id": "a b"}, "invalid_request"),
])
def test_bad_requests_are_4xx_json_and_change_nothing(server, http, payload, headers, code):
    before = steps(server)
    r = http.post("/v1/audio/speech", json={"model": "tts-1", **payload}, headers=headers)
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    assert steps(server) == before and server.backend.speech.queues.client_count == 0


# top-k 1 in both samplers picks the most likely token every time: the audio is fixed by the settings alone.
FIXED = {"top_k": 1, "subtalker_top_k": 1}


def test_sampling_extensions_sent_as_extra_body_decide_the_audio_as_on_tts_stream(client, http):
    text = "The settings decide this sentence."
    streamed = http.post("/tts/stream", json={"text": text, "voice": "Ryan", **FIXED}).content
    fixed, _, _ = speak(client, input=text, voice="Ryan", response_format="pcm", extra_body=FIXED)
    assert fixed and fixed == streamed
    assert speak(client, input=text, voice="Ryan", response_format="pcm")[0] != fixed  # the server's sampling
    with pytest.raises(openai.BadRequestError) as refused:
        speak(client, input=text, voice="Ryan", extra_body={"temperature": 11})
    assert refused.value.code == "invalid_params" and "temperature" in refused.value.message


def test_any_model_name_is_accepted(client):
    data, headers, _ = speak(client, model="whatever-model-name", response_format="pcm")
    assert data and headers["content-type"] == "audio/pcm"


# -- the streaming contract: disconnect, queues, interrupt -------------------------------------------


def test_disconnect_stops_generation(server, client):
    with client.audio.speech.with_streaming_response.create(model="tts-1", input=LONG, voice="alloy",
                                                             response_format="mp3") as r:
        assert next(r.iter_bytes())
    assert server.wait_idle(30)
    before = steps(server)
    time.sleep(0.3)
    assert steps(server) == before


class Reader:
    """One OpenAI stream read on its own thread."""

    def __init__(self, url: str, headers: dict | None = None, **kwargs):
        self.kwargs = {"model": "tts-1", "voice": "alloy", "response_format": "mp3", **kwargs}
        self.headers = headers or {}
        self.url = url
        self.data = b""
        self.request_id = None
        self.first_byte_at = self.ended_at = None
        self.error: BaseException | None = None
        self.started = threading.Event()
        self.first_chunk = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=120) as c, \
                    c.audio.speech.with_streaming_response.create(extra_headers=self.headers, **self.kwargs) as r:
                self.request_id = r.headers["x-request-id"]
                self.started.set()
                for part in r.iter_bytes():
                    if self.first_byte_at is None:
                        self.first_byte_at = time.perf_counter()
                        self.first_chunk.set()
                    self.data += part
        except BaseException as e:  # recorded for the test to look at
            self.error = e
        finally:
            self.ended_at = time.perf_counter()
            self.started.set()
            self.first_chunk.set()

    def join(self) -> "Reader":
        self._thread.join(120)
        assert not self._thread.is_alive() and self.error is None, self.error
        return self


def test_one_clients_requests_queue_in_order(server, client):
    first = Reader(server.url, {"X-Client-Id": "ordered"}, input=SHORT)
    assert first.started.wait(60)
    second = Reader(server.url, input=SHORT, extra_body={"user": "ordered"}, response_format="pcm")
    first.join(), second.join()
    assert second.first_byte_at > first.ended_at - 0.05  # the same queue: one after the other
    assert len(second.data) == server.tap.bytes[second.request_id]


def test_tts_interrupt_ends_an_openai_stream_and_drops_the_queued_one(server, client, http, tmp_path):
    running = Reader(server.url, {"X-Client-Id": "agent"}, input=LONG, response_format="opus")
    assert running.first_chunk.wait(60)
    queued = Reader(server.url, input=LONG, extra_body={"user": "agent"})
    assert queued.started.wait(60)
    reply = http.post("/tts/interrupt", params={"client_id": "agent"})
    assert reply.json() == {"client_id": "agent", "interrupted": True, "flushed": 1, "status": "interrupted",
                            "queue": "flushed"}
    running.join(), queued.join()
    assert queued.data == b""
    full = FrameBudget(max_frames=MAX_FRAMES).for_text(LONG)  # what an uninterrupted stream would make
    assert server.tap.bytes[running.request_id] < full * BYTES_PER_FRAME
    # An interrupted stream still ends as a whole file: the encoder was flushed and the trailer written.
    samples, rate = decode("opus", running.data, tmp_path)
    assert abs(len(samples) / rate - server.tap.seconds(running.request_id)) <= FRAME_SECONDS


# -- auth --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked(custom_voice_dir):
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=40, api_key=KEY,
                              openai_voices={"alloy": "Ryan", "narrator": "Uncle_Fu"})
    live = LiveServer(settings).start()
    yield live
    live.stop()


def test_auth_is_off_by_default(http):
    assert http.get("/v1/models").status_code == 200


@pytest.mark.parametrize("method, path", [("POST", "/v1/audio/speech"), ("GET", "/v1/voices"),
                                          ("DELETE", "/v1/voices/x"), ("POST", "/tts/stream"),
                                          ("POST", "/tts/interrupt?client_id=x"), ("POST", "/v1/normalize")])
def test_api_key_guards_v1_and_tts(locked, method, path):
    body = {"model": "tts-1", "input": "Hi.", "voice": "alloy"} if "speech" in path else {"text": "Hi."}
    with httpx.Client(base_url=locked.url, timeout=60) as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                        {"Authorization": f"Basic {KEY}"}):
            r = c.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (headers, r.status_code)
            assert r.json() == {"error": {"code": "unauthorized", "message": r.json()["error"]["message"]}}
            assert r.headers["www-authenticate"].startswith("Bearer")
    assert locked.backend.speech.queues.client_count == 0


def test_api_key_lets_the_sdk_in_and_leaves_health_open(locked):
    with openai.OpenAI(base_url=locked.url + "/v1", api_key="wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            c.models.list()
    with openai.OpenAI(base_url=locked.url + "/v1", api_key=KEY, max_retries=0, timeout=120) as c:
        assert "tts-1" in [m.id for m in c.models.list().data]
        with c.audio.speech.with_streaming_response.create(model="tts-1", input="Hi.", voice="alloy",
                                                           response_format="wav") as r:
            assert r.status_code == 200 and b"".join(r.iter_bytes())[:4] == b"RIFF"
    with httpx.Client(base_url=locked.url, timeout=60) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/").status_code != 401
        voices = c.get("/v1/audio/voices", headers={"Authorization": f"Bearer {KEY}"}).json()["voices"]
    # --openai-voices overrides the table and adds names.
    assert {"id": "alloy", "name": "alloy (Ryan)"} in voices
    assert {"id": "narrator", "name": "narrator (Uncle_Fu)"} in voices
    assert locked.wait_idle()
