"""The HTTP server end to end: real uvicorn on loopback, tiny checkpoint, httpx streaming clients."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

import normalization
from qwen_stream.config import ServerSettings
from qwen_stream.generation import SynthesisRequest
from qwen_stream.speech.startup import Server
from qwen_stream.settings import BYTES_PER_FRAME, FrameBudget

from tests.live_server import LiveServer, free_port

ROOT = Path(__file__).resolve().parents[2]
MAX_FRAMES = 150
SHORT = "Hi there."
LONG = "This sentence is long enough to keep the engine busy for quite a few frames of audio."


def expected_frames(text: str) -> int:
    budget = FrameBudget(max_frames=MAX_FRAMES)
    return sum(budget.for_text(s.text) for s in normalization.normalize(text))


@pytest.fixture(scope="module")
def server(custom_voice_dir):
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=MAX_FRAMES, max_queue=2,
                              max_text_chars=500)
    live = LiveServer(settings).start()
    yield live
    live.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
    assert server.wait_idle(), "work left running after the test"


class Stream:
    """One streamed request read on its own thread, with arrival times."""

    def __init__(self, url: str, body: dict):
        self.url, self.body = url, body
        self.status = None
        self.headers = None
        self.chunks: list[bytes] = []
        self.first_byte_at = self.ended_at = None
        self.error: BaseException | None = None
        self.headers_seen = threading.Event()
        self.first_chunk = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> "Stream":
        self._thread.start()
        assert self.headers_seen.wait(60), "no response headers"
        return self

    def _read(self) -> None:
        try:
            with httpx.Client(timeout=120) as c, c.stream("POST", self.url + "/tts/stream", json=self.body) as r:
                self.status, self.headers = r.status_code, r.headers
                self.headers_seen.set()
                for chunk in r.iter_raw():
                    if self.first_byte_at is None:
                        self.first_byte_at = time.perf_counter()
                        self.first_chunk.set()
                    self.chunks.append(chunk)
        except BaseException as e:  # recorded for the test to inspect
            self.error = e
        finally:
            self.ended_at = time.perf_counter()
            self.headers_seen.set()
            self.first_chunk.set()

    def join(self, timeout: float = 120) -> "Stream":
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "stream did not end"
        assert self.error is None, f"stream failed: {self.error!r}"
        return self

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


def steps(server) -> int:
    return server.backend.engine.model.tap.steps


# -- streaming ---------------------------------------------------------------------------------------


def test_stream_headers_chunks_and_length(server, client):
    tap_start = steps(server)
    step_at_first_chunk = None
    chunks = []
    with client.stream("POST", "/tts/stream", json={"text": SHORT, "client_id": "one"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "audio/pcm"
        assert r.headers["x-sample-rate"] == "24000"
        assert r.headers["x-request-id"]
        assert "content-encoding" not in r.headers
        for chunk in r.iter_raw():
            if step_at_first_chunk is None:
                step_at_first_chunk = steps(server)
            chunks.append(chunk)
    data = b"".join(chunks)
    frames = expected_frames(SHORT)
    assert len(chunks) > 1
    assert len(data) == frames * BYTES_PER_FRAME
    assert step_at_first_chunk - tap_start < frames  # the first audio left before generation ended


# Order within a client and fairness between clients are the queue state machine's: tests/speech/test_queues.py
# checks them on a fake engine in milliseconds (arrival order, one job per client in the engine, clients in
# turn). The two uvicorn tests that checked the same through a tiny model (17 s) were retired for them; the
# routes' own part (client_id -> queue) is exercised by the interrupt and disconnect tests below.


# -- interrupt and disconnect ------------------------------------------------------------------------


def test_interrupt_stops_running_and_drops_queued(server, client):
    running = Stream(server.url, {"text": LONG, "client_id": "talker"}).start()
    queued = [Stream(server.url, {"text": LONG, "client_id": "talker"}).start() for _ in range(2)]
    other = Stream(server.url, {"text": SHORT, "client_id": "bystander"}).start()
    assert running.first_chunk.wait(60)

    reply = client.post("/tts/interrupt", params={"client_id": "talker"})
    assert reply.status_code == 200
    assert reply.json() == {"client_id": "talker", "interrupted": True, "flushed": 2,
                            "status": "interrupted", "queue": "flushed"}
    running.join()
    for s in queued:
        s.join()
        assert s.status == 200 and s.data == b""
    assert len(running.data) < expected_frames(LONG) * BYTES_PER_FRAME
    other.join()
    assert len(other.data) == expected_frames(SHORT) * BYTES_PER_FRAME  # the bystander is unharmed

    assert server.wait_idle()
    before = steps(server)
    time.sleep(0.3)
    assert steps(server) == before  # the engine really stopped: no frames for anyone

    after = client.post("/tts/stream", json={"text": SHORT, "client_id": "talker"})
    assert after.status_code == 200 and len(after.content) == expected_frames(SHORT) * BYTES_PER_FRAME


def test_interrupt_accepts_json_body_and_unknown_clients(client):
    reply = client.post("/tts/interrupt", json={"client_id": "nobody-here"})
    assert reply.status_code == 200 and reply.json() == {"client_id": "nobody-here", "interrupted": False, "flushed": 0,
                                                         "status": "idle", "queue": "flushed"}
    bare = client.post("/tts/interrupt")  # no id at all: the default client, as other servers of this API do
    assert bare.status_code == 200 and bare.json()["client_id"] == "default"


def test_disconnect_stops_generation_and_next_request_works(server, client):
    with client.stream("POST", "/tts/stream", json={"text": LONG, "client_id": "leaver"}) as r:
        first = next(r.iter_raw())
        assert first
    # Closing a half-read response closes its connection: the server must notice and stop.
    assert server.wait_idle(30)
    before = steps(server)
    time.sleep(0.3)
    assert steps(server) == before
    again = client.post("/tts/stream", json={"text": SHORT, "client_id": "leaver"})
    assert again.status_code == 200 and len(again.content) == expected_frames(SHORT) * BYTES_PER_FRAME


def test_disconnect_while_queued_removes_only_that_request(server, client):
    first = Stream(server.url, {"text": LONG, "client_id": "queuer"}).start()
    assert first.first_chunk.wait(60)
    with client.stream("POST", "/tts/stream", json={"text": SHORT, "client_id": "queuer"}) as r:
        assert r.status_code == 200
    for _ in range(100):
        if server.backend.speech.queues.waiting == 0:
            break
        time.sleep(0.02)
    assert server.backend.speech.queues.waiting == 0
    first.join()
    assert len(first.data) == expected_frames(LONG) * BYTES_PER_FRAME


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload, code",
    [
        ({"text": ""}, "empty_text"),
        ({"text": "   \n\t "}, "empty_text"),
        ({"text": "x" * 501}, "text_too_long"),
        ({"text": "Hello.", "language": "Klingon"}, "unknown_language"),
        ({"text": "Hello.", "voice": "Nobody"}, "unknown_voice"),
        ({"text": 123}, "invalid_request"),
        ({"text": "Hello.", "normalize": "yes"}, "invalid_request"),
        ({"text": "Hello.", "client_id": ""}, "invalid_request"),
        ({"text": "Hello.", "client_id": 7}, "invalid_request"),
        ({"text": "Hello.", "speed": 2}, "invalid_request"),
        ({"text": "Hello.", "temperature": 0.0}, "invalid_params"),
        ({"text": "Hello.", "top_p": 2.0, "repetition_penalty": -1.0}, "invalid_params"),
        ({"text": "Hello.", "top_k": 2.5}, "invalid_request"),
        ({}, "invalid_request"),
        ([1, 2], "invalid_request"),
    ],
)
def test_bad_input_is_a_4xx_json_error_and_changes_nothing(server, client, payload, code):
    before = steps(server)
    r = client.post("/tts/stream", json=payload)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    assert server.backend.speech.queues.client_count == 0 and server.backend.engine.idle and steps(server) == before


def test_malformed_json_is_a_400(server, client):
    r = client.post("/tts/stream", content=b'{"text": "unterminated', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    assert server.backend.speech.queues.client_count == 0


def test_unknown_route_is_json(client):
    r = client.get("/no/such/route")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_full_queue_is_429(server, client):
    running = Stream(server.url, {"text": LONG, "client_id": "greedy"}).start()
    assert running.first_chunk.wait(60)
    waiting = [Stream(server.url, {"text": SHORT, "client_id": "greedy"}).start() for _ in range(2)]
    refused = client.post("/tts/stream", json={"text": SHORT, "client_id": "greedy"})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "queue_full"
    assert client.post("/tts/interrupt", params={"client_id": "greedy"}).json()["flushed"] == 2
    for s in [running, *waiting]:
        s.join()


def test_overloaded_is_503_with_retry_after_and_nothing_queued(server, client, monkeypatch):
    queues, engine = server.backend.speech.queues, server.backend.engine
    monkeypatch.setattr(queues, "_max_wait", 2.0)  # as --max-wait-ms 2000 would set it
    monkeypatch.setattr(engine, "estimated_wait", lambda: 4.2)
    before = steps(server)
    refused = client.post("/tts/stream", json={"text": SHORT, "client_id": "late"})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "overloaded"
    assert refused.headers["retry-after"] == "5"
    assert queues.client_count == 0 and engine.idle and steps(server) == before


# -- health, metrics, residue ------------------------------------------------------------------------


def test_health_and_metrics_when_ready(server, client):
    health = client.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "ready" and body["demo"] is False
    assert body["model"]["device"] == "cpu" and body["model"]["dtype"] == "float32"
    assert body["active_streams"] == 0 and body["queue_depth"] == 0
    client.post("/tts/stream", json={"text": SHORT, "client_id": "metered"})
    # The request is counted once its response has been sent, which may be just after its last byte arrived.
    deadline = time.monotonic() + 10
    while 'qwen_stream_requests_total{outcome="done"}' not in (text := client.get("/metrics").text):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert 'qwen_stream_requests_total{outcome="done"}' in text
    assert "qwen_stream_ttfb_seconds_bucket" in text and "qwen_stream_rtf_bucket" in text
    assert "qwen_stream_active_streams" in text and "qwen_stream_queue_depth" in text
    assert "qwen_stream_batch_rows" in text and "qwen_stream_step_seconds" in text
    assert "qwen_stream_decode_seconds" in text and "qwen_stream_waiting_heads" in text
    assert server.backend.engine.wait_idle(10)  # the row's slot is counted free just after its End went out
    health = client.get("/health").json()
    engine = health["engine"]
    assert engine["mode"] == "continuous" and engine["step_seconds"] > 0 and engine["batch_rows"] == 0
    assert health["load"] == engine["load"] == 0.0  # nothing in use, nothing waiting
    assert "qwen_stream_load" in text and "qwen_stream_batch_capacity" in text


def test_load_counts_rows_in_use_and_heads_waiting_per_batch_row(server, client):
    """A router's and an autoscaler's figure: busy rows plus waiting heads over --max-batch."""
    streams = [Stream(server.url, {"text": LONG, "client_id": f"loaded-{i}"}).start() for i in range(3)]
    for s in streams:
        assert s.first_chunk.wait(60)
    health = client.get("/health").json()
    engine = health["engine"]
    assert health["load"] == pytest.approx((engine["batch_rows"] + engine["waiting"]) / engine["max_batch"], abs=1e-3)
    assert health["load"] > 0
    client.post("/tts/interrupt", params={"client_id": "loaded-0"})
    for i in range(1, 3):
        client.post("/tts/interrupt", params={"client_id": f"loaded-{i}"})
    for s in streams:
        s.join()


def test_ten_thousand_client_ids_leave_no_residue(server, client):
    backend = server.backend
    # Over HTTP: interrupts and refused requests for many ids create no state.
    for i in range(300):
        client.post("/tts/interrupt", params={"client_id": f"ghost-{i}"})
        client.post("/tts/stream", json={"text": "", "client_id": f"ghost-{i}"})
    assert backend.speech.queues.client_count == 0

    # Through the real queues and engine: 10,000 ids, each with a request that is dropped (half by
    # disconnect, half by interrupt) and every 500th one that really speaks a frame.
    from qwen_stream.speech.queues import ClientQueues

    queues = ClientQueues(backend.engine, max_queue=2, max_clients=10_000)  # all 10,000 in flight at once
    voice = backend.voices.default.voice

    async def churn():
        tickets = []
        for i in range(10_000):
            spoken = i % 500 == 0
            request = SynthesisRequest("Hi.", "English", voice, max_frames=1 if spoken else 50)
            ticket = queues.enqueue(f"client-{i}", [request], 3)
            if not spoken:
                if i % 2:
                    queues.cancel(ticket)
                else:
                    queues.interrupt(f"client-{i}")
            tickets.append(ticket)
        for ticket in tickets:
            async for _ in ticket.events():
                pass
        # Wait on the conditions themselves (the bound only turns a hang into a failure).
        await asyncio.wait_for(queues.drained(), timeout=600)

    asyncio.run(churn())
    assert backend.engine.wait_idle(timeout=600)
    assert queues.client_count == 0 and len(queues._clients) == 0
    assert backend.engine.idle


class GatedServer(Server):
    """Loads only when the test opens the gate, so the 'loading' state can be observed for sure."""

    gate = threading.Event()

    def _load(self):
        assert self.gate.wait(120)
        return super()._load()


def test_health_is_503_while_loading_then_200(custom_voice_dir):
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=20)
    live = LiveServer(settings, GatedServer(settings)).start(wait_ready=False)
    try:
        with httpx.Client(base_url=live.url, timeout=60) as c:
            loading = c.get("/health")
            assert loading.status_code == 503 and loading.json() == {"status": "loading"}
            refused = c.post("/tts/stream", json={"text": "Hello."})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"
            GatedServer.gate.set()
            live.wait_ready()
            assert c.get("/health").json()["status"] == "ready"
    finally:
        live.stop()


# -- the process: flags, logs, SIGTERM ---------------------------------------------------------------



def test_sigterm_ends_active_streams_and_exits_zero(custom_voice_dir, tmp_path):
    port = free_port()
    log_file = tmp_path / "server.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--model-path", str(custom_voice_dir), "--port", str(port),
             "--device", "cpu", "--shutdown-timeout", "1", "--max-frames", "2000"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, log_file.read_text()
            time.sleep(0.2)
        with httpx.Client(timeout=60) as c:
            done = c.post(url + "/tts/stream", json={"text": "Short one.", "client_id": "logged"})
            assert done.status_code == 200
        stream = Stream(url, {"text": "A very long utterance. " * 20, "client_id": "cut"}).start()
        assert stream.first_chunk.wait(60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        stream._thread.join(30)
        assert stream.ended_at is not None  # the body ended (cut by the shutdown), the reader is free
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log_file.read_text()
    assert "client=logged" in text and "outcome=done" in text and "ttfb_ms=" in text and "rtf=" in text


def test_unusable_model_path_is_one_clear_line(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    for path, words in [(tmp_path / "missing", "neither an existing directory"), (tmp_path, "not a Qwen3-TTS")]:
        proc = subprocess.run([sys.executable, str(ROOT / "server.py"), "--model-path", str(path)],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert proc.returncode == 2
        assert words in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


# -- options that change what a client sees ----------------------------------------------------------


def test_normalize_route_and_opting_out(server, client):
    shown = client.post("/v1/normalize", json={"text": "It costs $5. Call at 3:30pm!", "language": "English"})
    assert shown.status_code == 200
    segments = shown.json()["segments"]
    assert [s["language"] for s in segments] == ["English", "English"]
    assert "five dollars" in segments[0]["text"] and "three thirty" in segments[1]["text"].lower()
    assert client.post("/v1/normalize", json={"text": "x", "language": "Elvish"}).status_code == 400
    # normalize false: the sentences as the client wrote them (the WebUI's conversation mode sends these).
    split = client.post("/v1/normalize", json={"text": "It costs $5. Call at 3:30pm! 你好。", "normalize": False})
    assert [(s["text"], s["language"]) for s in split.json()["segments"]] == [
        ("It costs $5.", "English"), ("Call at 3:30pm!", "English"), ("你好。", "Chinese")]

    raw = "Pay $5."
    normalized = client.post("/tts/stream", json={"text": raw, "client_id": "tn"})
    verbatim = client.post("/tts/stream", json={"text": raw, "client_id": "tn", "normalize": False})
    # The frame budget follows the text the model reads: "Pay five dollars." is longer than "Pay $5.".
    assert len(normalized.content) == expected_frames(raw) * BYTES_PER_FRAME
    assert len(verbatim.content) == FrameBudget(max_frames=MAX_FRAMES).for_text(raw) * BYTES_PER_FRAME
    assert len(verbatim.content) < len(normalized.content)


@pytest.mark.parametrize("early", [False, True], ids=["schedule", "early-chunks"])
def test_pre_buffer_holds_the_first_chunks_back(custom_voice_dir, monkeypatch, early):
    """--pre-buffer 2 holds the audio of the schedule's first two chunks (3 frames), also when every chunk after
    the first goes out early, one frame each (the early-chunk rule forced)."""
    if early:
        monkeypatch.setattr("qwen_stream.engine.runs_dry", lambda left, frames_due, load: left is not None)
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=30, pre_buffer=2)
    live = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=live.url, timeout=120) as c, \
                c.stream("POST", "/tts/stream", json={"text": "Buffered speech."}) as r:
            chunks = list(r.iter_raw())
        # Chunks of 1 and 2 frames are held and sent as one write; nothing is lost or reordered.
        assert len(chunks[0]) >= 3 * BYTES_PER_FRAME
        assert len(b"".join(chunks)) == 30 * BYTES_PER_FRAME
    finally:
        live.stop()


def test_cors_only_for_configured_origins(server, custom_voice_dir):
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    with httpx.Client(base_url=server.url) as c:
        assert "access-control-allow-origin" not in c.options("/tts/stream", headers=preflight).headers
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=20,
                              cors_origins=("http://app.example",))
    live = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=live.url) as c:
            allowed = c.options("/tts/stream", headers=preflight)
            assert allowed.headers["access-control-allow-origin"] == "http://app.example"
            other = c.options("/tts/stream", headers=dict(preflight, Origin="http://evil.example"))
            assert other.headers.get("access-control-allow-origin") != "http://evil.example"
            spoken = c.post("/tts/stream", json={"text": "Hi."}, headers={"Origin": "http://app.example"})
            assert "x-request-id" in spoken.headers["access-control-expose-headers"].lower()
    finally:
        live.stop()


def test_demo_serves_all_three_families_and_says_it_is_noise(tmp_path):
    settings = ServerSettings(demo=True, device="cpu", max_frames=20, cache_dir=str(tmp_path / "demo"))
    live = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=live.url, timeout=120) as c:
            health = c.get("/health").json()
            assert health["demo"] is True and "noise" in health["note"]
            assert sorted(m["family"] for m in health["models"]) == ["base", "custom_voice", "voice_design"]
            assert c.post("/tts/stream", json={"text": "Demo."}).status_code == 200
            assert c.post("/tts/stream", json={"text": "Demo.", "instruct": "A bright voice."}).status_code == 200
    finally:
        live.stop()
    assert sorted(p.name for p in (tmp_path / "demo").iterdir() if not p.name.startswith(".")) == \
        ["base-tiny", "custom_voice-tiny", "voice_design-tiny"]
