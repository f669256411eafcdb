"""The guards in front of the routes (api/guards.py, api/auth.py): body bounds, trusted hosts, the Origin
rule for state-changing requests and WebSocket handshakes, the listings left open with a key, and what
/v1/models says about the `model` field.

Most tests run the app in-process over a stub server (nothing loads); a few run a real uvicorn server, for
what only a socket shows: a chunked upload cut at the limit, a Content-Length refused before its body is
sent, a spoofed Host header."""

from __future__ import annotations

import asyncio
import json
import socket
from types import SimpleNamespace

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from qwen_stream.api.guards import FIELD_ALLOWANCE, BodyLimit, BodyLimits, OriginGuard
from qwen_stream.app import create_app
from qwen_stream.config import ServerSettings

from tests.live_server import LiveServer

KEY = "guard-key-5678"
LOCAL = "http://127.0.0.1:9000"  # what a browser on this machine sends as Host and Origin for the default server
SPEAKERS = ("Vivian", "Ryan")


class StubServer:
    """Just enough of the app's Server for the routes these tests call; nothing loads, nothing generates.
    Its speech and voices are itself: the uploads and interrupts that reached them are recorded."""

    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.state = "ready"
        spec = SimpleNamespace(family="custom_voice", source="Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice")
        info = SimpleNamespace(speakers=SPEAKERS)
        registry = SimpleNamespace(specs={"custom_voice": spec}, serves=lambda f: f == "custom_voice",
                                   info=lambda family=None: info, loaded=lambda: [])
        self.engine = SimpleNamespace(registry=registry)
        self.speech = self.voices = self
        self.uploads: list[int] = []  # sizes of the voice uploads that reached the service
        self.interrupts: list[str] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def health(self):
        return 200, {"status": "ready"}

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 2**20)

    def list(self):
        return [SimpleNamespace(public=lambda: {"id": "voice_1", "name": "mine", "ref_text": "private words"})]

    async def add(self, data, name, transcript, mode, language):
        self.uploads.append(len(data))
        return SimpleNamespace(public=lambda: {"id": "voice_new", "name": name})

    def interrupt(self, client_id: str) -> dict:
        self.interrupts.append(client_id)
        return {"client_id": client_id, "interrupted": False, "flushed": 0}


def app_client(base_url: str = LOCAL, **settings) -> TestClient:
    """The real app (every middleware, every route) over a stub server that loads nothing."""
    config = ServerSettings(**settings)
    return TestClient(create_app(config, StubServer(config)), base_url=base_url)


def upload(client, headers=None, size: int = 1000):
    return client.post("/v1/voices", headers=headers or {}, data={"name": "mine"},
                       files={"file": ("me.wav", b"\0" * size, "audio/wav")})


def is_error(response, status: int, code: str) -> bool:
    return response.status_code == status and response.json()["error"]["code"] == code


# -- body bounds: the middleware alone -------------------------------------------------------------------


class Recorder:
    """An ASGI app that reads the whole body and answers with how much it saw."""

    def __init__(self):
        self.seen = 0
        self.called = False

    async def __call__(self, scope, receive, send):
        self.called = True
        while True:
            message = await receive()
            self.seen += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(self.seen).encode()})


def drive(app, chunks, headers=(), method="POST", path="/"):
    """Runs one request through an ASGI app with the body in `chunks` (no Content-Length unless given);
    returns the status, the parsed body (JSON when it is) and how many chunks the app pulled."""
    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}
        await asyncio.sleep(3600)  # a client that sends no more: only a disconnect would come

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": [(k.encode(), v.encode()) for k, v in headers]}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        body = json.loads(body)
    except ValueError:
        pass
    return status, body, pulled


LIMITS = BodyLimits(multipart=4000, json_audio=3000, json=2000, other=100)


def test_an_over_size_content_length_is_refused_before_the_app_runs():
    app = Recorder()
    status, body, pulled = drive(BodyLimit(app, LIMITS), [b"x" * 50], headers=[("content-length", "2001"),
                                                                               ("content-type", "application/json")])
    assert status == 413 and body["error"]["code"] == "too_large"
    assert not app.called and pulled == 0  # not one byte of the body was read


def test_a_chunked_body_is_cut_at_the_limit_and_the_app_never_sees_more():
    app = Recorder()
    chunks = [b"x" * 600] * 10  # 6000 bytes, no Content-Length
    status, body, pulled = drive(BodyLimit(app, LIMITS), chunks, headers=[("content-type", "application/json")])
    assert status == 413 and body == {"error": {"code": "too_large", "message": body["error"]["message"]}}
    assert app.seen <= LIMITS.json and pulled == 4  # the 4th chunk crossed the limit; nothing after it was read
    whole = Recorder()
    status, body, _ = drive(BodyLimit(whole, LIMITS), chunks[:3], headers=[("content-type", "application/json")])
    assert (status, body) == (200, 1800)


@pytest.mark.parametrize("content_type, method, limit, path", [
    ("multipart/form-data; boundary=b", "POST", 4000, "/"), ("application/json", "POST", 2000, "/"),
    ("application/merge-patch+json", "PATCH", 2000, "/"), (None, "POST", 2000, "/"), ("text/plain", "POST", 100, "/"),
    ("application/x-www-form-urlencoded", "POST", 100, "/"), ("application/json", "GET", 100, "/"),
    ("multipart/form-data; boundary=b", "DELETE", 100, "/"),
    ("application/json", "POST", 3000, "/tts/stream"), ("application/json", "POST", 2000, "/v1/audio/speech"),
])
def test_the_limit_follows_the_kind_of_body(content_type, method, limit, path):
    """Only /tts/stream's JSON may carry audio (base64 ref_audio); other JSON is text and a few fields."""
    headers = [("content-type", content_type)] if content_type else []
    assert drive(BodyLimit(Recorder(), LIMITS), [b"x" * limit], headers, method, path)[0] == 200
    assert drive(BodyLimit(Recorder(), LIMITS), [b"x" * (limit + 1)], headers, method, path)[0] == 413


def test_limits_fit_an_upload_and_its_base64_with_the_longest_text():
    limits = BodyLimits.from_settings(ServerSettings(max_upload_mb=3, max_text_chars=1000))
    assert limits.multipart == 3 * 2**20 + FIELD_ALLOWANCE
    assert limits.json_audio == 4 * 2**20 + 12 * 1000 + FIELD_ALLOWANCE  # base64 of 3 MiB is 4 MiB
    assert limits.json == 12 * 1000 + FIELD_ALLOWANCE
    assert limits.other == FIELD_ALLOWANCE


# -- body bounds through the app -------------------------------------------------------------------------


def test_an_over_size_upload_is_refused_before_the_route_reads_it():
    with app_client(max_upload_mb=0.01) as c:
        assert upload(c, size=1000).status_code == 201
        too_big = upload(c, size=int(0.01 * 2**20) + FIELD_ALLOWANCE)
        assert is_error(too_big, 413, "too_large")
        assert c.app.state.server.uploads == [1000]


def test_a_json_body_is_read_up_to_its_limit_and_not_more():
    with app_client(max_upload_mb=0.01, max_text_chars=100) as c:
        limit = BodyLimits.from_settings(ServerSettings(max_upload_mb=0.01, max_text_chars=100)).json
        big = json.dumps({"client_id": "x", "pad": "a" * (limit - 100)})
        read = c.post("/tts/interrupt", content=big, headers={"content-type": "application/json"})
        assert is_error(read, 400, "invalid_request") and "pad" in read.json()["error"]["message"]  # parsed whole
        over = json.dumps({"client_id": "x", "pad": "a" * limit})
        assert is_error(c.post("/tts/interrupt", content=over, headers={"content-type": "application/json"}),
                        413, "too_large")
        text = c.post("/tts/interrupt?client_id=x", content="a" * (FIELD_ALLOWANCE + 1),
                      headers={"content-type": "text/plain"})
        assert is_error(text, 413, "too_large")  # no route reads more than a few fields of any other body


# -- trusted hosts -----------------------------------------------------------------------------------------


def test_a_loopback_server_serves_loopback_names_only():
    with app_client() as c:
        for host in ("localhost", "localhost:9000", "127.0.0.1:1234", "[::1]:9000", "[::1]", "LocalHost"):
            assert c.get("/v1/models", headers={"host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:9000", "127.0.0.1.evil.example", "localhost.evil",
                     "[::1]evil.example", "[::1]:evil"):
            for method, path in (("GET", "/v1/models"), ("GET", "/health"), ("POST", "/tts/interrupt?client_id=x")):
                r = c.request(method, path, headers={"host": host})
                assert is_error(r, 421, "untrusted_host"), (host, method, path, r.status_code)
        assert c.app.state.server.interrupts == []


def test_trusted_hosts_setting():
    with app_client(host="0.0.0.0") as c:  # bound to every address: any name (a LAN address, a proxy's)
        assert c.get("/v1/models", headers={"host": "tts.lan:9000"}).status_code == 200
    with app_client(trusted_hosts=("tts.example.com", "::1")) as c:
        assert c.get("/v1/models", headers={"host": "tts.example.com"}).status_code == 200
        assert c.get("/v1/models", headers={"host": "[::1]:9000"}).status_code == 200
        assert c.get("/v1/models", headers={"host": "localhost"}).status_code == 421  # listed names only
    with app_client(trusted_hosts=("*",)) as c:
        assert c.get("/v1/models", headers={"host": "anything.example"}).status_code == 200
    with app_client(host="127.0.0.2") as c:  # the address it is bound to is a name it serves
        assert c.get("/v1/models", headers={"host": "127.0.0.2:9000"}).status_code == 200


# -- Origin ------------------------------------------------------------------------------------------------


def test_a_cross_origin_form_post_creates_no_voice():
    with app_client() as c:
        for origin in ("http://evil.example", "null", "http://127.0.0.1:9001", "http://localhost:9000"):
            r = upload(c, headers={"origin": origin})
            assert is_error(r, 403, "forbidden_origin"), origin
        assert c.app.state.server.uploads == []
        assert upload(c, headers={"origin": LOCAL}).status_code == 201  # the server's own page (the WebUI)
        assert upload(c).status_code == 201  # no Origin: curl, SDKs
        assert len(c.app.state.server.uploads) == 2
        # Reads pass: what a page may read is CORS's business (off by default).
        r = c.get("/v1/models", headers={"origin": "http://evil.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("method, path", [("POST", "/tts/interrupt?client_id=x"), ("DELETE", "/v1/voices/voice_1"),
                                          ("PUT", "/v1/voices/voice_1"), ("PATCH", "/v1/voices/voice_1")])
def test_every_state_changing_method_checks_the_origin(method, path):
    with app_client() as c:
        assert is_error(c.request(method, path, headers={"origin": "http://evil.example"}), 403, "forbidden_origin")


def test_listed_origins_may_post_and_star_allows_null():
    with app_client(cors_origins=("http://app.example",)) as c:
        assert c.post("/tts/interrupt?client_id=x", headers={"origin": "http://app.example"}).status_code == 200
        assert c.post("/tts/interrupt?client_id=x", headers={"origin": "http://evil.example"}).status_code == 403
        assert c.post("/tts/interrupt?client_id=x", headers={"origin": "null"}).status_code == 403
    with app_client(cors_origins=("*",)) as c:
        for origin in ("null", "http://evil.example"):  # the operator asked for any page, the disk's included
            assert c.post("/tts/interrupt?client_id=x", headers={"origin": origin}).status_code == 200


def test_same_origin_through_a_proxy_that_rewrites_host():
    with app_client(trusted_hosts=("127.0.0.1",)) as c:
        headers = {"origin": "https://tts.example.com", "x-forwarded-host": "tts.example.com"}
        assert c.post("/tts/interrupt?client_id=x", headers=headers).status_code == 200
        headers = {"origin": "https://evil.example", "x-forwarded-host": "tts.example.com"}
        assert c.post("/tts/interrupt?client_id=x", headers=headers).status_code == 403


WS_URL = "ws://127.0.0.1:9000/ws"


def ws_app(cors_origins=()):
    async def echo(websocket):
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    return OriginGuard(Starlette(routes=[WebSocketRoute("/ws", echo)]), cors_origins=cors_origins)


def test_websocket_handshakes_follow_the_origin_rule():
    with TestClient(ws_app(), base_url=LOCAL) as c:
        with pytest.raises(WebSocketDisconnect) as refused:
            with c.websocket_connect(WS_URL, headers={"origin": "http://evil.example"}):
                pass
        assert refused.value.code == 1008
        for headers in ({"origin": LOCAL}, {}):
            with c.websocket_connect(WS_URL, headers=headers) as ws:
                assert ws.receive_text() == "hello"
    with TestClient(ws_app(("http://app.example",)), base_url=LOCAL) as c, \
            c.websocket_connect(WS_URL, headers={"origin": "http://app.example"}) as ws:
        assert ws.receive_text() == "hello"


# -- CORS, auth and the order of the middlewares -----------------------------------------------------------


def test_refusals_carry_cors_headers_and_preflights_need_no_key():
    with app_client(cors_origins=("http://app.example",), api_key=KEY, max_upload_mb=0.01) as c:
        page = {"origin": "http://app.example"}
        preflight = c.options("/v1/voices", headers=dict(page, **{"access-control-request-method": "POST",
                                                                    "access-control-request-headers": "authorization"}))
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://app.example"
        refusals = [
            (c.get("/v1/models", headers=dict(page, host="evil.example")), 421, "untrusted_host"),
            (c.post("/tts/interrupt?client_id=x", headers=page), 401, "unauthorized"),
            (upload(c, headers=dict(page, authorization=f"Bearer {KEY}"), size=2 * FIELD_ALLOWANCE), 413, "too_large"),
        ]
        for response, status, code in refusals:
            assert is_error(response, status, code)
            assert response.headers["access-control-allow-origin"] == "http://app.example", code
        assert upload(c, headers=dict(page, authorization=f"Bearer {KEY}")).status_code == 201


def test_a_foreign_origin_is_refused_even_with_the_key():
    with app_client(api_key=KEY) as c:
        headers = {"origin": "http://evil.example", "authorization": f"Bearer {KEY}"}
        r = c.post("/tts/interrupt?client_id=x", headers=headers)
        assert is_error(r, 403, "forbidden_origin")


def test_open_listings_serve_open_webui_without_a_key():
    with app_client(api_key=KEY) as c:
        for path in ("/v1/models", "/v1/audio/models", "/v1/audio/voices"):
            assert c.get(path).status_code == 200, path
        voices = c.get("/v1/audio/voices").json()["voices"]
        assert {"id": "Ryan", "name": "Ryan"} in voices and {"id": "ash", "name": "ash (Ryan)"} in voices
        # Still behind the key: speech, every change, and /v1/voices (it holds the users' transcripts).
        for method, path in (("GET", "/v1/voices"), ("POST", "/v1/audio/speech"), ("POST", "/tts/stream"),
                             ("POST", "/tts/interrupt?client_id=x"), ("POST", "/v1/models"),
                             ("DELETE", "/v1/voices/voice_1"), ("GET", "/v1/voices/voice_1")):
            assert is_error(c.request(method, path), 401, "unauthorized"), (method, path)
        assert upload(c).status_code == 401 and c.app.state.server.uploads == []
        # A key that is sent must be right, even for a listing: a client checking its key learns it is wrong.
        assert is_error(c.get("/v1/models", headers={"authorization": "Bearer wrong"}), 401, "unauthorized")
        assert c.get("/v1/models", headers={"authorization": f"Bearer {KEY}"}).status_code == 200
    with app_client(api_key=KEY, open_listings=False) as c:
        for path in ("/v1/models", "/v1/audio/models", "/v1/audio/voices"):
            assert is_error(c.get(path), 401, "unauthorized"), path
            assert c.get(path, headers={"authorization": f"Bearer {KEY}"}).status_code == 200


# -- /v1/models --------------------------------------------------------------------------------------------


def test_models_say_that_the_voice_decides():
    with app_client() as c:
        audio = c.get("/v1/audio/models").json()["models"]
        with openai.OpenAI(base_url=LOCAL + "/v1", api_key="unused", http_client=c, max_retries=0) as sdk:
            cards = sdk.models.list().data
    assert [m.id for m in cards] == ["Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice", "tts-1", "tts-1-hd", "gpt-4o-mini-tts"]
    served, *aliases = cards
    assert (served.kind, served.family, served.object) == ("checkpoint", "custom_voice", "model")
    assert all(a.kind == "alias" and a.family is None for a in aliases)
    assert all("the voice decides" in m.description for m in cards)
    assert [m["id"] for m in audio] == [m.id for m in cards]
    assert audio[1] == {"id": "tts-1", "name": "tts-1 (alias; the voice picks the model)"}


# -- over a real socket ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def live():
    settings = ServerSettings(max_upload_mb=0.01)
    server = LiveServer(settings, StubServer(settings)).start()
    yield server
    server.stop()


def raw_request(live, head: str, body_parts=()) -> tuple[int, dict]:
    """Sends a request head and body parts over a plain socket and reads the answer that comes back.
    The request is never finished: an answer proves the server did not wait for the rest of the body."""
    with socket.create_connection(("127.0.0.1", live.port), timeout=60) as sock:
        sock.sendall(head.encode("latin-1"))
        for part in body_parts:
            sock.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {data!r}"
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_live_content_length_over_the_limit_is_answered_before_any_body(live):
    head = ("POST /v1/voices HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {10 * 2**20}\r\n\r\n")
    assert raw_request(live, head)[0] == 413


def test_live_chunked_upload_is_cut_at_the_limit(live):
    limit = BodyLimits.from_settings(live.settings).multipart
    part = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n" + b"\0" * 8192
    parts = [chunk(part)] + [chunk(b"\0" * 8192)] * (limit // 8192 + 2)  # past the limit; never finished
    head = ("POST /v1/voices HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    status, body = raw_request(live, head, parts)
    assert status == 413 and body["error"]["code"] == "too_large"
    assert live.backend.uploads == []


def test_live_streamed_httpx_upload_over_the_limit(live):
    def body():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n"
        for _ in range(40):
            yield b"\0" * 8192
        yield b"\r\n--b--\r\n"

    with httpx.Client(base_url=live.url, timeout=60) as c:
        r = c.post("/v1/voices", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert is_error(r, 413, "too_large")
        assert c.get("/health").status_code == 200  # the same connection serves the next request
    assert live.backend.uploads == []


def test_live_spoofed_host_is_refused(live):
    for host, status in (("evil.example", 421), (f"localhost:{live.port}", 200)):
        head = f"GET /v1/audio/voices HTTP/1.1\r\nHost: {host}\r\n\r\n"
        assert raw_request(live, head)[0] == status, host


def test_live_cross_origin_form_post(live):
    form = "--b\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx\r\n--b--\r\n"
    head = ("POST /v1/voices HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
            f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {len(form)}\r\n\r\n{form}")
    status, body = raw_request(live, head)
    assert status == 403 and body["error"]["code"] == "forbidden_origin"
