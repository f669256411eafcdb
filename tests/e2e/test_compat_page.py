"""Clients of the other public Qwen3-TTS server with this API (flyw/Qwen3-TTS-Streaming-Server) work unchanged.

Its WebUI and README client guide POST `{text, language, client_id}` as JSON to /tts/stream, read the raw
PCM16 body with `response.body.getReader()`, and barge in with `POST /tts/interrupt?client_id=X` (no body,
no Content-Type). Its API also takes `client_id: null`, `max_new_tokens`, a bare interrupt (client `default`)
and answers interrupts with `{status, client_id, queue}`. The page below is our own reproduction of that
request pattern (see docs/clients.md), served from another origin and from file:// (Origin null) against a
server started with `--cors-origins '*'`; the httpx tests check each compat point on its own.

The browser tests need Debian's chromium and chromium-driver and the selenium package; outside CI they skip
when those are missing, with CI set they fail."""

from __future__ import annotations

import functools
import http.server
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

import normalization
from qwen_stream.config import load_settings
from qwen_stream.settings import BYTES_PER_FRAME, FrameBudget

from tests.browser import chromium
from tests.live_server import LiveServer

MAX_FRAMES = 48  # the server's own cap per sentence: keeps the module fast on two CPU cores
SUPPORTED = ["Auto", "Chinese", "English", "Japanese", "Korean", "German", "French", "Russian", "Portuguese",
             "Spanish", "Italian"]
# Many sentences, each at the server's cap: a request that runs long enough to be interrupted mid-way, with
# room to spare on a loaded machine (it is cut within a second, so its length costs nothing).
LONG = " ".join(["This first sentence is long enough to keep the engine busy for a while. The second one "
                 "follows it. Then comes a third sentence of some length. And a fourth one closes the paragraph."]
                * 3)


# The client page. Its requests are shaped as the other server's WebUI and README guide send them:
#   stream:    fetch(URL, {method: 'POST', headers: {'Content-Type': 'application/json'},
#                          body: JSON.stringify({text, language, client_id})}), then a getReader() loop that
#              views each Uint8Array as Int16 samples and schedules them on a 24 kHz AudioContext;
#   interrupt: fetch(`${BASE}/tts/interrupt?client_id=${id}`, {method: 'POST'}), then stop the sources.
# `bare` interrupts send no query at all (that server's default client). What happened is kept in
# window.compat for the test to read.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>compat client</title></head><body>
<script>
const BASE = new URLSearchParams(location.search).get('server');
const compat = window.compat = {runs: {}, interrupts: []};
let audioCtx = null, nextStartTime = 0, sources = [];

function audio() {
  // As that page: one 24 kHz context, buffers scheduled back to back.
  if (!audioCtx) audioCtx = new AudioContext({sampleRate: 24000});
  return audioCtx;
}

function play(run, bytes) {
  run.chunks++;
  run.bytes += bytes.byteLength;
  if (bytes.byteLength % 2) run.oddChunks++;
  let samples;
  try {
    samples = new Int16Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.byteLength / 2));
  } catch (e) {  // that page would throw here on an odd byteOffset: count it, the test requires none
    run.viewErrors++;
    return;
  }
  const ctx = audio(), floats = new Float32Array(samples.length);
  for (let i = 0; i < samples.length; i++) floats[i] = samples[i] / 32768;
  run.samples += samples.length;
  const buffer = ctx.createBuffer(1, floats.length, 24000);
  buffer.getChannelData(0).set(floats);
  const source = ctx.createBufferSource();
  source.buffer = buffer;
  source.connect(ctx.destination);
  const at = Math.max(nextStartTime, ctx.currentTime);
  source.start(at);
  nextStartTime = at + buffer.duration;
  sources.push(source);
}

async function speak(key, text, language, clientId) {
  const run = compat.runs[key] = {status: 'sending', httpStatus: null, bytes: 0, chunks: 0, samples: 0,
                                  oddChunks: 0, viewErrors: 0, error: null};
  try {
    const response = await fetch(BASE + '/tts/stream', {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({text: text, language: language, client_id: clientId}),
    });
    run.httpStatus = response.status;
    if (!response.ok) { run.body = await response.text(); throw new Error('Server Error'); }
    run.status = 'streaming';
    const reader = response.body.getReader();
    while (true) {
      const {done, value} = await reader.read();
      if (done) break;
      if (value && value.length > 0) play(run, value);
    }
    run.status = 'done';
  } catch (e) {
    run.status = 'error';
    run.error = String(e);
  }
}

async function interrupt(clientId) {
  const url = clientId === undefined ? BASE + '/tts/interrupt'
                                     : `${BASE}/tts/interrupt?client_id=${clientId}`;
  try {
    const response = await fetch(url, {method: 'POST'});
    compat.interrupts.push({httpStatus: response.status, reply: await response.json()});
  } catch (e) {
    compat.interrupts.push({error: String(e)});
  }
  for (const source of sources) { try { source.stop(); } catch (e) {} }
  sources = [];
  nextStartTime = audioCtx ? audioCtx.currentTime : 0;
}

window.speak = speak;
window.interrupt = interrupt;
compat.ready = true;
</script></body></html>
"""


def expected_bytes(text: str) -> int:
    """What the server sends for `text` with the tiny checkpoint (it never samples EOS): its frame budget
    per normalized sentence."""
    budget = FrameBudget(max_frames=MAX_FRAMES)
    return sum(budget.for_text(s.text) for s in normalization.normalize(text)) * BYTES_PER_FRAME


# -- servers --------------------------------------------------------------------------------------------------


class OriginLog:
    """ASGI middleware that notes the Origin header of every request, preflights included, so the tests can
    tell which origin the browser really sent (file:// pages send the literal `null`)."""

    def __init__(self, app, seen: list):
        self.app, self.seen = app, seen

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            self.seen.append((scope["method"], scope["path"], headers.get(b"origin", b"").decode("latin-1")))
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def server(custom_voice_dir):
    # Parsed from the command line, as an operator would start it for a page hosted elsewhere.
    settings = load_settings(["--model-path", str(custom_voice_dir), "--device", "cpu",
                              "--max-frames", str(MAX_FRAMES), "--cors-origins", "*"], environ={})
    live = LiveServer(settings)
    live.origins = []
    live.app.add_middleware(OriginLog, seen=live.origins)  # outermost: sees what the browser sent
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def page_dir():
    folder = Path(tempfile.mkdtemp(prefix="qwen-stream-compat-"))
    (folder / "compat.html").write_text(PAGE, encoding="utf-8")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def page_origin(page_dir):
    """A second, unrelated HTTP server on another port: the page's origin differs from the API's."""
    handler = functools.partial(_QuietHandler, directory=str(page_dir))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output to failures
        pass


@pytest.fixture(scope="module")
def driver():
    with chromium() as browser:
        yield browser


# -- browser helpers -------------------------------------------------------------------------------------------


def page_state(driver) -> dict:
    return driver.execute_script("return window.compat")


def wait_until(driver, script: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for `{script}`; page: {page_state(driver)}")
        time.sleep(0.05)


def open_page(driver, url: str) -> None:
    driver.get(url)
    wait_until(driver, "return window.compat && window.compat.ready")


class Queued:
    """A second request of the page's client, sent from the test and read to its end on a thread."""

    def __init__(self, url: str, client: str):
        self.status: int | None = None
        self.body = b""
        self._thread = threading.Thread(target=self._post, args=(url, client), daemon=True)
        self._thread.start()

    def _post(self, url: str, client: str) -> None:
        reply = httpx.post(f"{url}/tts/stream", json={"text": "Waiting here.", "client_id": client}, timeout=120)
        self.status, self.body = reply.status_code, reply.content

    def join(self) -> None:
        self._thread.join(120)
        assert not self._thread.is_alive(), "the queued request never ended"


def run(driver, key: str) -> dict:
    return driver.execute_script("return window.compat.runs[arguments[0]]", key)


# -- the page, from another origin ----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["http", "file"])
def test_page_elsewhere_streams_and_interrupts(driver, server, page_origin, page_dir, where):
    query = f"?server={server.url}"
    if where == "http":
        open_page(driver, f"{page_origin}/compat.html{query}")
        origin = page_origin
    else:
        open_page(driver, (page_dir / "compat.html").as_uri() + query)
        origin = "null"  # what Chromium sends for a page opened from disk

    # Speak: `auto` is that page's lower-case menu entry; the whole body arrives and is whole samples.
    client = f"web-client-{where}"
    driver.execute_script("window.speak('short', arguments[0], 'auto', arguments[1])", "Hi there.", client)
    wait_until(driver, "const r = window.compat.runs.short; return r && r.status !== 'sending' "
                       "&& r.status !== 'streaming'")
    short = run(driver, "short")
    assert short["status"] == "done" and short["httpStatus"] == 200, short
    assert short["bytes"] == expected_bytes("Hi there.") > 0
    assert short["viewErrors"] == 0 and short["samples"] * 2 == short["bytes"]

    # Barge in as its README does, while the page's long request streams and a second request of the same
    # client waits behind it. The second one is sent from here: when a browser sends a page's second fetch is
    # its own business (after other tests, Chromium held it until the first body ended, every round).
    queues = server.backend.speech.queues
    for _ in range(3):
        driver.execute_script("window.speak('long', arguments[0], 'English', arguments[1])", LONG, client)
        # Its first audio, or its end: 'sending' (no response yet) is neither.
        wait_until(driver, "const r = window.compat.runs.long; return r.bytes > 0 "
                           "|| (r.status !== 'sending' && r.status !== 'streaming')")
        queued = Queued(server.url, client)
        deadline = time.monotonic() + 30
        while queues.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        if run(driver, "long")["status"] == "streaming" and queues.waiting >= 1:
            break
        queued.join()  # the long one ended first on a loaded machine: play the round again
        wait_until(driver, "return window.compat.runs.long.status !== 'streaming'")
    assert run(driver, "long")["status"] == "streaming" and queues.waiting >= 1, "never mid-stream in 3 rounds"
    driver.execute_script("window.interrupt(arguments[0])", client)
    wait_until(driver, "const c = window.compat; return c.interrupts.length === 1 && c.runs.long.status === 'done'")
    queued.join()
    state = page_state(driver)
    [reply] = state["interrupts"]
    assert reply["httpStatus"] == 200
    assert reply["reply"] == {"client_id": client, "interrupted": True, "flushed": 1,
                              "status": "interrupted", "queue": "flushed"}
    # Both bodies ended cleanly: the long one early, the queued one before any audio.
    assert 0 < state["runs"]["long"]["bytes"] < expected_bytes(LONG)
    assert queued.status == 200 and queued.body == b""
    assert server.wait_idle(30), "work left running on the server after the interrupt"

    # The server saw the page's own origin on every call, preflights included.
    calls = [(method, path) for method, path, seen in server.origins if seen == origin]
    assert ("OPTIONS", "/tts/stream") in calls and ("POST", "/tts/stream") in calls
    assert ("POST", "/tts/interrupt") in calls


def test_page_elsewhere_bare_interrupt_stops_a_null_client(driver, server, page_origin):
    """`client_id: null` streams in the default queue; a bare interrupt (no query, no body) stops it."""
    open_page(driver, f"{page_origin}/compat.html?server={server.url}")
    driver.execute_script("window.speak('long', arguments[0], 'Chinese', null)", LONG)
    wait_until(driver, "const r = window.compat.runs.long; return r && r.bytes > 0")
    driver.execute_script("window.interrupt()")
    wait_until(driver, "const c = window.compat; return c.interrupts.length === 1 "
                       "&& c.runs.long.status === 'done'")
    state = page_state(driver)
    assert state["interrupts"][0]["reply"] == {"client_id": "default", "interrupted": True, "flushed": 0,
                                               "status": "interrupted", "queue": "flushed"}
    assert 0 < state["runs"]["long"]["bytes"] < expected_bytes(LONG)
    assert server.wait_idle(30)


# -- each compat point over plain HTTP ----------------------------------------------------------------------


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client
    assert server.wait_idle(30), "work left running on the server after the test"


def speak_bytes(api, **body) -> int:
    with api.stream("POST", "/tts/stream", json=body) as response:
        assert response.status_code == 200, response.read()
        return sum(len(chunk) for chunk in response.iter_bytes())


def test_bare_interrupt_means_the_default_client(api):
    response = api.post("/tts/interrupt")  # no query, no body, no Content-Type
    assert response.status_code == 200
    assert response.json() == {"client_id": "default", "interrupted": False, "flushed": 0,
                               "status": "idle", "queue": "flushed"}


@pytest.mark.parametrize("how, expected", [
    ({"json": {}}, "default"),
    ({"json": {"client_id": None}}, "default"),
    ({"json": {"client_id": "web-client-1"}}, "web-client-1"),
    ({"params": {"client_id": "web-client-1"}}, "web-client-1"),
    ({"params": {"client_id": "from-query"}, "json": {"client_id": "from-body"}}, "from-query"),
])
def test_interrupt_names_its_client_by_query_body_or_nothing(api, how, expected):
    response = api.post("/tts/interrupt", **how)
    assert response.status_code == 200
    assert response.json()["client_id"] == expected


def test_interrupt_refuses_a_malformed_client_id(api):
    response = api.post("/tts/interrupt", params={"client_id": "two words"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


def test_null_client_id_joins_the_default_queue(api, server):
    """A stream sent with `client_id: null` is the one a bare interrupt stops."""
    with api.stream("POST", "/tts/stream", json={"text": LONG, "language": "English", "client_id": None}) as r:
        assert r.status_code == 200
        chunks = r.iter_bytes()
        received = len(next(chunks))
        with httpx.Client(base_url=server.url) as other:
            reply = other.post("/tts/interrupt").json()
        received += sum(len(chunk) for chunk in chunks)
    assert reply == {"client_id": "default", "interrupted": True, "flushed": 0, "status": "interrupted",
                     "queue": "flushed"}
    assert 0 < received < expected_bytes(LONG)


def test_max_new_tokens_caps_frames_per_sentence(api):
    assert speak_bytes(api, text="Hello there.", max_new_tokens=5) == 5 * BYTES_PER_FRAME
    # Two sentences, each its own generation, each capped.
    assert speak_bytes(api, text="One. Two.", max_new_tokens=3, language="English") == 2 * 3 * BYTES_PER_FRAME


def test_max_new_tokens_never_lengthens_past_the_servers_cap(api):
    # 2048 is that server's default: here the server's own budget for the text still decides.
    assert speak_bytes(api, text="Hello there.", max_new_tokens=2048) == expected_bytes("Hello there.")
    assert speak_bytes(api, text=LONG, max_new_tokens=10**9) == expected_bytes(LONG)


@pytest.mark.parametrize("value", [0, -1, "5", 5.5, True])
def test_max_new_tokens_refuses_what_is_not_a_positive_integer(api, value):
    response = api.post("/tts/stream", json={"text": "Hi.", "max_new_tokens": value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "max_new_tokens" in error["message"]


@pytest.mark.parametrize("language", ["auto", "Chinese", "English", "Japanese", "Korean"])
def test_languages_of_its_menu_are_spoken(api, language):
    assert speak_bytes(api, text="Hi.", language=language, max_new_tokens=2) == 2 * BYTES_PER_FRAME


def test_cantonese_from_its_menu_is_refused_naming_the_supported_languages(api):
    # No Qwen3-TTS language is Cantonese; reading it as Mandarin would be a silent substitution.
    response = api.post("/tts/stream", json={"text": "你好。", "language": "Cantonese", "client_id": "web-client-1"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unknown_language" and "Cantonese" in error["message"]
    assert all(name in error["message"] for name in SUPPORTED)


def test_older_pages_sampling_fields_are_honoured_and_checked(api):
    # Its earlier WebUI sent `temperature`; that server now ignores it. Here a request's sampling is its own
    # (laid over --temperature), so the field does what it says; a value out of range is named, not dropped.
    response = api.post("/tts/stream", json={"text": "Hi.", "temperature": 0.8})
    assert response.status_code == 200 and len(response.content) == expected_bytes("Hi.")
    response = api.post("/tts/stream", json={"text": "Hi.", "temperature": -0.8})
    assert response.status_code == 400
    assert response.json()["error"] == {"code": "invalid_params", "message": "temperature must be > 0 and <= 10"}


def test_preflight_and_calls_from_a_null_origin_are_allowed(api):
    preflight = api.options("/tts/stream", headers={
        "Origin": "null", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "*"
    reply = api.post("/tts/interrupt", headers={"Origin": "null"})
    assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == "*"
    assert reply.json()["client_id"] == "default"
