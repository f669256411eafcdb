"""Hostile and careless input over real sockets: nothing a client sends can hurt another request."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time

import httpx
import pytest

from qwen_stream.config import ServerSettings
from qwen_stream.settings import BYTES_PER_FRAME, FrameBudget

from tests.live_server import LiveServer

MAX_FRAMES = 400
LONG = "This sentence is long enough to keep the engine busy for quite a few frames of audio."


def expected_frames(text: str) -> int:
    import normalization

    budget = FrameBudget(max_frames=MAX_FRAMES)
    return sum(budget.for_text(s.text) for s in normalization.normalize(text))


@pytest.fixture(scope="module")
def server(custom_voice_dir):
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=MAX_FRAMES,
                              max_text_chars=500)
    live = LiveServer(settings).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def impatient(custom_voice_dir):
    """A server that gives up on readers quickly, for the stalled-reader tests only."""
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=MAX_FRAMES,
                              max_text_chars=500, max_buffer_seconds=0.5, send_timeout=1.5)
    live = LiveServer(settings)
    # Accepted sockets inherit the listener's send buffer: a small fixed one (no autotuning up to 4 MB)
    # makes a stalled reader show within a few chunks, as it would behind a slow network.
    live._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    live.start()
    yield live
    live.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
    assert server.wait_idle(), "work left running after the test"


def raw_post(port: int, path: str, body: bytes, rcvbuf: int | None = None) -> socket.socket:
    """A POST over a bare socket (JSON the client libraries would refuse to send, or a reader that stalls)."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    # Connection: close, so that reading to the end takes the response, not the server's keep-alive timeout too.
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n")
    sock.sendall(head.encode() + body)
    return sock


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(60)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    return data


def error_of(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


# -- text that the tokenizer cannot take, or that says nothing ------------------------------------------


@pytest.mark.parametrize("path,field", [("/tts/stream", "text"), ("/v1/normalize", "text"),
                                        ("/v1/audio/speech", "input")])
def test_a_lone_surrogate_is_refused_with_400(server, client, path, field):
    body = {field: "a\\ud800b"}
    if path == "/v1/audio/speech":
        body.update(model="tts-1", voice="alloy")
    raw = json.dumps(body).replace("\\\\ud800", "\\ud800").encode()  # JSON's escape of a lone surrogate
    status, error = error_of(read_all(raw_post(server.port, path, raw)))
    assert status == 400 and error["code"] == "invalid_text" and "Unicode" in error["message"]


def test_a_lone_surrogate_among_other_clients_cuts_none_of_them(server, client):
    done = []

    def speak(i):
        r = httpx.post(server.url + "/tts/stream", json={"text": "Fine words.", "client_id": f"mate-{i}"},
                       timeout=120)
        done.append((r.status_code, len(r.content)))

    threads = [threading.Thread(target=speak, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    bad = b'{"text": "a\\ud800b", "client_id": "bad"}'
    assert error_of(read_all(raw_post(server.port, "/tts/stream", bad)))[0] == 400
    for t in threads:
        t.join(120)
    assert len(done) == 4 and all(status == 200 and size and size % BYTES_PER_FRAME == 0 for status, size in done)


@pytest.mark.parametrize("text", ["\u200b\u200b\u200b", "\x00\x00", "\u200d \ufeff\t\n", "\u2028\u2029"])
def test_text_of_only_invisible_characters_is_empty(server, client, text):
    for path, body in (("/tts/stream", {"text": text}), ("/v1/normalize", {"text": text}),
                       ("/v1/audio/speech", {"input": text, "model": "tts-1", "voice": "alloy"})):
        r = client.post(path, json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "empty_text", (path, r.text)


def test_normalize_has_the_same_length_limit_as_speech(server, client):
    r = client.post("/v1/normalize", json={"text": "word " * 101})
    assert r.status_code == 400 and r.json()["error"]["code"] == "text_too_long"
    assert client.post("/v1/normalize", json={"text": "word " * 99}).status_code == 200


# -- client ids: one pattern everywhere ------------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["a\r\nFAKE request id=1", "tab\there", "", "x" * 129, "naïve"])
def test_client_id_is_validated_the_same_everywhere(server, client, client_id, caplog):
    caplog.set_level(logging.INFO, logger="qwen_stream")
    responses = [
        client.post("/tts/interrupt", params={"client_id": client_id}),
        client.post("/tts/interrupt", json={"client_id": client_id}),
        client.post("/tts/stream", json={"text": "Hi.", "client_id": client_id}),
    ]
    if client_id and client_id.isascii() and "\r" not in client_id and "\t" not in client_id:
        responses.append(client.post("/v1/audio/speech", headers={"X-Client-Id": client_id},
                                     json={"model": "tts-1", "input": "Hi.", "voice": "alloy"}))
    responses.append(client.post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi.", "voice": "alloy",
                                                           "user": client_id}))
    assert [r.status_code for r in responses] == [400] * len(responses)
    assert not any("FAKE" in record.getMessage() for record in caplog.records)


# -- requests that name no client ----------------------------------------------------------------------


def test_openai_requests_without_a_client_id_do_not_share_a_queue(server, client, caplog):
    caplog.set_level(logging.INFO, logger="qwen_stream")
    body = {"model": "tts-1", "input": LONG, "voice": "alloy", "response_format": "pcm"}
    first_bytes = threading.Event()

    def first():
        with httpx.stream("POST", server.url + "/v1/audio/speech", json=body, timeout=120) as r:
            for _ in r.iter_raw():
                first_bytes.set()

    reader = threading.Thread(target=first)
    reader.start()
    assert first_bytes.wait(60)
    second = httpx.post(server.url + "/v1/audio/speech", json=dict(body, input="Short one."), timeout=120)
    assert second.status_code == 200 and second.content
    reader.join(120)

    def logged_clients() -> set[str]:
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request id=")]
        return {line.split("client=")[1].split()[0] for line in lines}

    # A request's line is written when the server has sent its last byte, which may come a moment after the
    # client read it: wait for the condition (the bound only turns a hang into a failure).
    deadline = time.monotonic() + 30
    while len(logged_clients()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    clients = logged_clients()
    assert len(clients) == 2 and all(c.startswith("anonymous-") for c in clients)


# -- a reader that stops reading -----------------------------------------------------------------------


def wait_until_dropped(server) -> None:
    deadline = time.monotonic() + 120
    while not server.backend.speech.queues.client_count and time.monotonic() < deadline:
        time.sleep(0.01)  # until the request has taken its place
    while server.backend.speech.queues.client_count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.backend.speech.queues.client_count == 0, "the stalled stream was never dropped"


def stalled_outcomes(client) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("qwen_stream_requests_total") and 'outcome="stalled"' in line:
            return float(line.split()[-1])
    return 0.0


def test_a_stalled_reader_is_cut_and_frees_the_engine(impatient):
    server, client = impatient, httpx.Client(base_url=impatient.url, timeout=120)
    steps = server.backend.engine.model.tap.steps
    # A small receive window, and nothing read: the server must stop generating ahead of the reader.
    text = " ".join([LONG] * 5)  # about 800 frames (3 MB of PCM): far more than socket buffers hold
    before = stalled_outcomes(client)
    stalled = raw_post(server.port, "/tts/stream", json.dumps({"text": text, "client_id": "stalled"}).encode(),
                       rcvbuf=4096)
    wait_until_dropped(server)
    made = server.backend.engine.model.tap.steps - steps
    assert made < expected_frames(text) // 2  # generation stopped long before the utterance's end
    assert stalled_outcomes(client) == before + 1

    other = client.post("/tts/stream", json={"text": "Next in line.", "client_id": "other"})
    assert other.status_code == 200 and other.content

    data = read_all(stalled)  # what the kernel held, then the server's close: no clean end of the body
    assert data.startswith(b"HTTP/1.1 200") and not data.endswith(b"0\r\n\r\n")


# -- the schema tells the truth ----------------------------------------------------------------------------


def test_openapi_documents_the_error_shape_and_no_422(server, client):
    schema = client.get("/openapi.json").json()
    assert "Error" in schema["components"]["schemas"] and "HTTPValidationError" not in schema["components"]["schemas"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path != "/health":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref == "#/components/schemas/Error", (method, path, status)


def _concrete(path: str) -> str:
    return path.replace("{voice_id}", "voice_000000000000")


def test_every_error_the_server_answers_is_in_the_schema(server, client):
    """Bad bodies, a foreign Origin, an untrusted Host, unknown ids: each answer's status is documented for
    its operation, and its body has the documented shape."""
    schema = client.get("/openapi.json").json()
    seen = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            url = _concrete(path)
            attempts = [dict(), dict(headers={"Host": "evil.example"})]
            if method == "post":
                attempts += [dict(content=b"{not json", headers={"Content-Type": "application/json"}),
                             dict(json={"unknown_field": 1}),
                             dict(json={}, headers={"Origin": "http://evil.example"})]
            for kwargs in attempts:
                r = client.request(method.upper(), url, **kwargs)
                if r.status_code >= 400:
                    assert str(r.status_code) in operation["responses"], (method, path, kwargs, r.text)
                    if path != "/health":
                        assert set(r.json()["error"]) == {"code", "message"}
                    seen.add(r.status_code)
    assert {400, 403, 404, 421} <= seen


def test_a_reader_that_stalls_after_generation_ended_is_cut_too(impatient):
    """FLAC is sent whole at the end: nothing is left for the engine to hold back, and the send itself
    blocks. The send timeout ends it all the same."""
    server, client = impatient, httpx.Client(base_url=impatient.url, timeout=120)
    before = stalled_outcomes(client)
    body = {"model": "tts-1", "input": LONG, "voice": "alloy", "response_format": "flac", "user": "flac-stall"}
    stalled = raw_post(server.port, "/v1/audio/speech", json.dumps(body).encode(), rcvbuf=4096)
    deadline = time.monotonic() + 120
    while stalled_outcomes(client) == before and time.monotonic() < deadline:
        time.sleep(0.1)  # generation ends first; the cut comes a send timeout later
    assert stalled_outcomes(client) == before + 1
    assert client.post("/tts/stream", json={"text": "Next.", "client_id": "after-flac"}).status_code == 200
    stalled.close()


def test_clients_in_flight_are_bounded(custom_voice_dir):
    """Requests without a client id each get a queue of their own: --max-clients bounds them all."""
    from qwen_stream.speech.queues import ClientQueues, ServerBusy

    async def fill():
        queues = ClientQueues(engine=None, max_queue=2, max_clients=2)
        queues.reserve("a"), queues.reserve("b"), queues.reserve("a")  # a known client may still queue
        with pytest.raises(ServerBusy):
            queues.reserve("c")

    asyncio.run(fill())
