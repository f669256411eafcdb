"""The built-in WebUI (webui.html at /) in headless Chromium, against a real server with the tiny checkpoint.

The page reports what it received and scheduled through `window.qwenStream.stats`; the server side is
checked through the live service (engine, frame tap) and its one log line per request. Needs the Debian
packages `chromium` and `chromium-driver` and the `selenium` pip package. Outside CI the tests skip when
those are missing; with CI set they fail instead, so a broken browser setup cannot pass unnoticed."""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path

import pytest

import normalization
from qwen_stream.config import ServerSettings
from qwen_stream.settings import BYTES_PER_FRAME, FrameBudget

from tests.browser import chromium
from tests.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
MAX_FRAMES = 48  # caps every sentence at 3.84 s of audio: keeps the module fast on two CPU cores
MAX_TEXT_CHARS = 300
BYTES_PER_SECOND = 48_000  # PCM16 mono at 24 kHz
SPEAKERS = ["Vivian", "Serena", "Uncle_Fu", "Dylan", "Eric", "Ryan", "Aiden", "Ono_Anna", "Sohee"]
LANGUAGES = ["Auto", "Chinese", "English", "Japanese", "Korean", "German", "French", "Russian", "Portuguese",
             "Spanish", "Italian"]



def expected_bytes(text: str) -> int:
    """What the server sends for `text`: its frame budget per normalized segment, 3840 bytes a frame."""
    budget = FrameBudget(max_frames=MAX_FRAMES)
    return sum(budget.for_text(s.text) for s in normalization.normalize(text)) * BYTES_PER_FRAME


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def driver():
    # The fake media flags: a synthetic microphone (a beep) that getUserMedia gets without a permission prompt.
    flags = ("--window-size=1280,1000", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
    with chromium(flags, {"goog:loggingPrefs": {"browser": "ALL"}}) as browser:
        browser.set_script_timeout(30)
        yield browser


class ServerLog(logging.Handler):
    """The service's one line per finished request, in the order the server finished them."""

    LINE = re.compile(r"^request id=(\w+) client=(\S+) chars=\d+ segments=\d+ frames=(\d+) .* outcome=(\w+)$")

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def requests(self, client_id: str) -> list[dict]:
        found = []
        for line in self.lines:
            m = self.LINE.match(line)
            if m and m.group(2) == client_id:
                found.append({"id": m.group(1), "frames": int(m.group(3)), "outcome": m.group(4)})
        return found


@pytest.fixture(scope="module")
def server(custom_voice_dir):
    log = logging.getLogger("qwen_stream")
    handler, level = ServerLog(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=MAX_FRAMES,
                              max_text_chars=MAX_TEXT_CHARS)
    live = LiveServer(settings).start()
    live.log = handler
    yield live
    live.stop()
    log.removeHandler(handler)
    log.setLevel(level)


@pytest.fixture
def page(driver, server):
    """The page freshly loaded and ready; afterwards, nothing may be left running on the server."""
    driver.get(server.url + "/")
    wait_until(driver, "return window.qwenStream && window.qwenStream.stats.ready "
                       "&& document.getElementById('voice').options.length > 0")
    yield driver
    driver.execute_script("window.qwenStream.stop({quiet: true})")
    assert server.wait_idle(30), "work left running on the server after the test"


# -- helpers --------------------------------------------------------------------------------------------


def stats(driver) -> dict:
    return driver.execute_script("return window.qwenStream.stats")


def wait_until(driver, script: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for `{script}`; page stats: {stats(driver)}")
        time.sleep(0.05)


def fill(driver, **values) -> None:
    """Sets form fields by id as a user would, firing input and change events."""
    driver.execute_script("""
        for (const [id, value] of Object.entries(arguments[0])) {
          const el = document.getElementById(id);
          if (el.type === 'checkbox') el.checked = value; else el.value = value;
          el.dispatchEvent(new Event('input', {bubbles: true}));
          el.dispatchEvent(new Event('change', {bubbles: true}));
        }""", values)


def click(driver, element_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, element_id).click()


# Until the server has GET /v1/voices, the page's probe of it answers 404, which Chromium logs as a failed
# resource. The fallback to the built-in voices is the documented behaviour, so that one line is allowed.
VOICES_404 = "/v1/voices - Failed to load resource: the server responded with a status of 404"


def console_errors(driver, allow: tuple[str, ...] = ()) -> list[dict]:
    """Console entries of level SEVERE since the last call, less the allowed ones (by message part)."""
    allow = (VOICES_404, *allow)
    entries = driver.get_log("browser")
    return [e for e in entries if e["level"] == "SEVERE" and not any(part in e["message"] for part in allow)]


def steps(server) -> int:
    return server.backend.engine.model.tap.steps


# -- tests ------------------------------------------------------------------------------------------------


def test_page_loads_ready_without_console_errors(page, server):
    s = stats(page)
    assert s["ready"] and s["health"]["model"]["family"] == "custom_voice"
    assert page.execute_script("return document.getElementById('serverState').dataset.state") == "ready"
    options = page.execute_script("return [...document.getElementById('language').options].map(o => o.value)")
    assert options == LANGUAGES
    voices = page.execute_script("return [...document.getElementById('voice').options].map(o => o.value)")
    if s["voicesFrom"] == "fallback":  # no GET /v1/voices on this server: the CustomVoice speakers
        assert voices == SPEAKERS
    else:
        assert voices
    assert console_errors(page) == []

    # The text front end's view of the text, from POST /v1/normalize.
    fill(page, text="Hello there. How are you?", language="English")
    click(page, "preview")
    segments = wait_until(page, "const l = document.querySelectorAll('#segments li:not(.hint)');"
                                "return l.length && [...l].map(li => li.firstChild.textContent)")
    assert segments == ["Hello there.", "How are you?"]

    # The client id is kept in localStorage across reloads.
    fill(page, clientId="webui-kept")
    page.refresh()
    wait_until(page, "return window.qwenStream && window.qwenStream.stats.ready")
    assert page.execute_script("return document.getElementById('clientId').value") == "webui-kept"
    assert console_errors(page) == []


def test_speak_schedules_exactly_the_received_pcm(page, server):
    text = "Hi there."
    fill(page, text=text, clientId="webui-speak", conversation=False, voice="Ryan", language="English")
    click(page, "speak")
    wait_until(page, "return window.qwenStream.stats.state === 'done'")
    s = stats(page)
    [request] = s["requests"]
    assert request["status"] == "done" and request["httpStatus"] == 200 and request["requestId"]
    assert request["ttfb"] > 0
    assert re.fullmatch(r"\d+ms", page.execute_script("return document.getElementById('figTtfb').textContent"))
    # Every byte received was scheduled, and the bytes are what the server makes for this text.
    assert request["bytes"] == expected_bytes(text)
    assert request["samples"] * 2 == request["bytes"]
    assert s["scheduledSamples"] * 2 == s["bytes"] == request["bytes"]
    assert s["scheduledSeconds"] == pytest.approx(s["bytes"] / BYTES_PER_SECOND, rel=1e-12)
    # Headless Chromium really plays: the AudioContext runs at 24 kHz and its clock moves.
    assert s["audioContext"]["state"] == "running" and s["audioContext"]["sampleRate"] == 24000
    assert s["audioContext"]["currentTime"] > 0
    [logged] = server.log.requests("webui-speak")
    assert logged["id"] == request["requestId"] and logged["outcome"] == "done"
    assert logged["frames"] * BYTES_PER_FRAME == request["bytes"]

    # The WAV download holds the same PCM behind a 44-byte header.
    header = page.execute_script("const w = window.qwenStream.wav(); return [w.length, ...w.slice(0, 44)]")
    length, head = header[0], bytes(header[1:])
    assert length == 44 + request["bytes"]
    assert head[:4] == b"RIFF" and head[8:16] == b"WAVEfmt " and head[36:40] == b"data"
    assert int.from_bytes(head[24:28], "little") == 24000 and int.from_bytes(head[40:44], "little") == request["bytes"]
    assert not page.execute_script("return document.getElementById('download').disabled")
    assert console_errors(page) == []


def test_stop_ends_the_server_stream_and_silences_the_page(page, server):
    sentences = ["This first sentence is long enough to keep the engine busy for a while.",
                 "The second one waits.", "So does the third."]
    fill(page, text=" ".join(sentences), clientId="webui-stop", conversation=True, pacing="queued")
    click(page, "speak")
    # Stop while the first sentence streams and the other two wait in the server's queue.
    wait_until(page, "const r = window.qwenStream.stats.requests;"
                     "return r.length === 3 && r[0].bytes > 0 && r[2].status === 'queued'")
    click(page, "stop")
    s = wait_until(page, "const s = window.qwenStream.stats; return s.state === 'stopped' && s.interrupt && s")
    assert s["activeSources"] == 0
    assert s["interrupt"] == {"client_id": "webui-stop", "interrupted": True, "flushed": 2, "status": "interrupted",
                              "queue": "flushed"}

    # The server: the running stream ended early, the queued ones never ran, and the engine stopped.
    assert server.wait_idle(30)
    before = steps(server)
    time.sleep(0.4)
    assert steps(server) == before
    logged = {r["id"]: r for r in server.log.requests("webui-stop")}
    assert [logged[r["requestId"]]["outcome"] for r in s["requests"]] == ["interrupted"] * 3

    # The page: nothing more was scheduled after Stop, and every source it started is stopped.
    after = stats(page)
    time.sleep(0.4)
    later = stats(page)
    assert later["scheduledSamples"] == after["scheduledSamples"] == s["scheduledSamples"]
    assert later["activeSources"] == 0 and later["sourcesStarted"] == later["sourcesStopped"]
    assert [r["status"] for r in later["requests"]] == ["stopped"] * 3
    assert later["requests"][0]["bytes"] < expected_bytes(sentences[0])
    assert later["requests"][1]["bytes"] == later["requests"][2]["bytes"] == 0
    assert console_errors(page) == []


def test_conversation_mode_sends_and_plays_sentences_in_order(page, server):
    sentences = ["One.", "Two!", "Three?"]
    fill(page, text=" ".join(sentences), clientId="webui-talk", conversation=True, pacing="queued")
    # The count comes from the server's splitter (POST /v1/normalize, normalize false), a moment after typing.
    wait_until(page, "return document.getElementById('sentences').textContent.includes('3 sentences')")
    click(page, "speak")
    wait_until(page, "return window.qwenStream.stats.state === 'done'")
    s = stats(page)
    requests = s["requests"]
    assert [r["text"] for r in requests] == sentences
    assert [r["status"] for r in requests] == ["done"] * 3
    for r, sentence in zip(requests, sentences):
        assert r["bytes"] == expected_bytes(sentence) and r["samples"] * 2 == r["bytes"]
    assert s["scheduledSeconds"] == pytest.approx(sum(r["bytes"] for r in requests) / BYTES_PER_SECOND, rel=1e-12)
    for earlier, later in zip(requests, requests[1:]):
        assert later["sentAt"] >= earlier["acceptedAt"]  # sent in order
        assert later["firstByteAt"] >= earlier["endAt"] - 50  # served one after another (ms)
        assert later["audioStart"] >= earlier["audioEnd"] - 1e-9  # played in order, no overlap
    # The server finished the client's requests in the page's order.
    logged = server.log.requests("webui-talk")
    assert [r["id"] for r in logged] == [r["requestId"] for r in requests]
    assert [r["outcome"] for r in logged] == ["done"] * 3

    ARTIFACTS.mkdir(exist_ok=True)
    page.save_screenshot(str(ARTIFACTS / "webui.png"))
    assert console_errors(page) == []


def test_chunks_split_mid_sample_play_every_sample(page):
    """A stand-in for the server's body whose chunk boundaries fall mid-sample (as TCP may deliver it)."""
    page.execute_script("""
        const pcm = new Uint8Array(24000);  // 0.5 s
        for (let i = 0; i < pcm.length; i++) pcm[i] = (i * 7919 + (i >> 3)) & 255;
        window.fakePcm = pcm;
        const sizes = [1, 3, 2, 5, 7, 4095, 1, 11, 998, 3839];
        const realFetch = window.fetch.bind(window);
        window.fetch = async (url, init) => {
          if (!String(url).endsWith('tts/stream')) return realFetch(url, init);
          const body = new ReadableStream({start(c) {
            for (let at = 0, k = 0; at < pcm.length; k++) {
              const n = Math.min(sizes[k % sizes.length], pcm.length - at);
              c.enqueue(pcm.slice(at, at + n));
              at += n;
            }
            c.close();
          }});
          return new Response(body, {status: 200, headers: {'Content-Type': 'audio/pcm', 'X-Request-Id': 'fake'}});
        };
        window.qwenStream.capture(true);""")
    fill(page, text="Odd chunks.", clientId="webui-odd", conversation=False)
    click(page, "speak")
    wait_until(page, "return window.qwenStream.stats.state === 'done'")
    s = stats(page)
    assert s["bytes"] == 24000 and s["scheduledSamples"] == 12000 and s["scheduledSeconds"] == 0.5
    wrong = page.execute_script("""
        const kept = window.qwenStream.capture(false), pcm = window.fakePcm;
        const view = new DataView(pcm.buffer);
        let n = 0, wrong = 0;
        for (const part of kept) for (const v of part) { if (Math.round(v * 32768) !== view.getInt16(2 * n, true)) wrong++; n++; }
        const wav = window.qwenStream.wav();
        for (let i = 0; i < pcm.length; i++) if (wav[44 + i] !== pcm[i]) wrong++;
        return [n, wrong];""")
    assert wrong == [12000, 0]
    assert console_errors(page) == []


def test_error_message_from_the_server_is_shown(page, server):
    fill(page, text="x" * (MAX_TEXT_CHARS + 1), clientId="webui-error", conversation=False)
    click(page, "speak")
    wait_until(page, "return window.qwenStream.stats.state === 'done'")
    [request] = stats(page)["requests"]
    assert request["status"] == "error" and request["httpStatus"] == 400
    message = page.execute_script("return document.getElementById('banner').textContent")
    assert "text_too_long" in message and str(MAX_TEXT_CHARS) in message
    # The 400 itself is logged by Chromium as a failed resource; nothing else may be.
    assert console_errors(page, ("/tts/stream - Failed to load resource",)) == []


def test_loading_server_shows_a_message_until_ready(driver, server):
    backend = server.backend
    backend.state = "loading"  # what /health and /tts/stream answer while the model loads
    try:
        driver.get(server.url + "/")
        # The pill may say "loading" before the first /health answer: wait for the answer's banner itself.
        wait_until(driver, "return document.getElementById('banner').textContent.includes('loading')")
        assert driver.execute_script("return document.getElementById('serverState').dataset.state") == "loading"
        fill(driver, text="Hi.", clientId="webui-early", conversation=False)
        click(driver, "speak")
        wait_until(driver, "return window.qwenStream.stats.state === 'done'")
        [request] = stats(driver)["requests"]
        assert request["httpStatus"] == 503 and "not_ready" in request["error"]
    finally:
        backend.state = "ready"
    wait_until(driver, "return window.qwenStream.stats.ready", timeout=10)
    assert driver.execute_script("return document.getElementById('serverState').dataset.state") == "ready"
    assert not driver.execute_script("return document.getElementById('banner').className.includes('show') "
                                     "&& document.getElementById('banner').dataset.kind === 'warn'")
    # The 503s are logged by Chromium as failed resources; nothing else may be.
    assert console_errors(driver, ("the server responded with a status of 503",)) == []


def test_api_key_field_unlocks_a_keyed_server(driver, custom_voice_dir):
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=MAX_FRAMES,
                              api_key="s3cret-key")
    keyed = LiveServer(settings).start()
    try:
        driver.get(keyed.url + "/")
        wait_until(driver, "return window.qwenStream && window.qwenStream.stats.ready")
        fill(driver, apiKey="", text="Hi.", clientId="webui-keyless", conversation=False)
        click(driver, "speak")
        wait_until(driver, "return window.qwenStream.stats.state === 'done'")
        [refused] = stats(driver)["requests"]
        assert refused["httpStatus"] == 401 and "unauthorized" in refused["error"]

        fill(driver, apiKey="s3cret-key", text="Hi.", clientId="webui-keyed", voice="Ryan")
        click(driver, "speak")
        wait_until(driver, "return window.qwenStream.stats.state === 'done'")
        [accepted] = stats(driver)["requests"]
        assert accepted["httpStatus"] == 200 and accepted["bytes"] == expected_bytes("Hi.")
        # The key is kept for the next visit, like the client id.
        driver.get(keyed.url + "/")
        wait_until(driver, "return window.qwenStream && window.qwenStream.stats.ready")
        assert driver.execute_script("return document.getElementById('apiKey').value") == "s3cret-key"
        driver.execute_script("localStorage.clear()")
        assert keyed.wait_idle(30)
    finally:
        keyed.stop()


# -- token mode: the text typed into GET /v1/tts/websocket as an LLM writes it ------------------------------

OUTPUT_FORMAT = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}


@pytest.fixture
def token_page(page):
    """The page with every WebSocket message it sends kept in `window.wsSent`; token mode off afterwards, so
    the setting (kept in localStorage) cannot leak into the next test."""
    wait_until(page, "return window.qwenStream.stats.voicesFrom !== null")  # the voice list is in: "Ryan" sticks
    # An earlier test on a keyed server may leave its keyless 401s in the browser's log; nothing else may be there.
    assert console_errors(page, ("the server responded with a status of 401",)) == []
    page.execute_script("""
        window.wsSent = [];
        const send = WebSocket.prototype.send;
        WebSocket.prototype.send = function (data) {
          window.wsSent.push(JSON.parse(data));
          return send.call(this, data);
        };""")
    yield page
    fill(page, tokens=False)


def sent_messages(driver) -> list[dict]:
    return driver.execute_script("return window.wsSent")


def test_token_mode_streams_tokens_and_plays_the_audio(token_page, server):
    page = token_page
    sentences = ["Hello there.", "This is typed as the model writes it."]
    text = " ".join(sentences)
    fill(page, text=text, clientId="webui-tokens", tokens=True, tokenRate="30", voice="Ryan", language="English")
    hint = page.execute_script("return document.getElementById('sentences').textContent")
    assert "Token mode: 12 tokens at 30/s" in hint
    click(page, "speak")
    s = wait_until(page, "const s = window.qwenStream.stats; return s.state === 'done' && s")
    t = s["tokens"]
    tokens = page.execute_script("return window.qwenStream.tokenize(arguments[0])", text)
    assert "".join(tokens) == text and tokens[:4] == ["Hello", " there", ".", " This"] and len(tokens) == 12
    assert s["mode"] == "tokens"
    assert t["state"] == "done" and t["sent"] == t["total"] == 12 and t["rate"] == 30 and not t["cancelled"]
    # Sent at the chosen rate: token i leaves i / 30 s after the first (the timer may be late, never early).
    assert t["lastTokenAt"] - t["firstTokenAt"] >= 11 / 30 * 1000 - 2

    # What went over the socket: one Cartesia message per token with continue true, then the turn's end.
    sent = sent_messages(page)
    assert [m["transcript"] for m in sent] == [*tokens, ""]
    assert [m["continue"] for m in sent] == [True] * 12 + [False]
    for m in sent:
        assert m["context_id"] == t["contextId"] and m["language"] == "English"
        assert m["voice"] == {"mode": "id", "id": "Ryan"} and m["output_format"] == OUTPUT_FORMAT

    # Every byte received was scheduled; the server spoke each sentence to its frame budget.
    [request] = s["requests"]
    assert request["status"] == "done" and request["error"] is None
    assert t["bytes"] == request["bytes"] == sum(expected_bytes(x) for x in sentences)
    assert s["scheduledSamples"] * 2 == s["bytes"] == request["bytes"]
    assert s["audioContext"]["state"] == "running" and s["audioContext"]["currentTime"] > 0

    # The page says when the audio started, counted from the first token.
    assert t["firstAudioMs"] > 0 and 4 <= t["firstAudioToken"] <= 12
    info = page.execute_script("return document.getElementById('tokenInfo').textContent")
    ms = math.floor(t["firstAudioMs"] + 0.5)  # as JavaScript's Math.round
    first = f"First audio {ms} ms after the first token, {t['firstAudioToken']} tokens sent by then"
    assert first in info
    assert page.execute_script("return document.getElementById('figTtfb').textContent").endswith("ms")
    header = page.execute_script("const w = window.qwenStream.wav(); return [w.length, ...w.slice(0, 4)]")
    assert header[0] == 44 + request["bytes"] and bytes(header[1:]) == b"RIFF"
    assert console_errors(page) == []


def test_token_mode_first_audio_comes_before_the_last_token(token_page, server):
    """At 5 tokens a second, the 20 tokens after the first sentence take 4 s to type: its audio is there well
    before, so this holds by construction and is asserted on token counts, never on wall time."""
    page = token_page
    first = "Hi there."
    rest = "The rest of this answer is still being typed one slow token after another while the first one plays."
    fill(page, text=f"{first} {rest}", clientId="webui-tokens-slow", tokens=True, tokenRate="5", voice="Ryan",
         language="English")
    click(page, "speak")
    early = wait_until(page, "const t = window.qwenStream.stats.tokens; return t && t.firstAudioToken !== null && t")
    assert early["state"] == "streaming" and early["sent"] < early["total"]
    s = wait_until(page, "const s = window.qwenStream.stats; return s.state === 'done' && s", timeout=90)
    t = s["tokens"]
    assert t["sent"] == t["total"] == 23 and t["state"] == "done"
    # Audio cannot start before the first sentence is proven complete (its period and the next word sent) ...
    assert t["firstAudioToken"] >= 4
    # ... and it started before the last token was sent.
    assert t["firstAudioToken"] == early["firstAudioToken"] < t["total"]
    assert s["bytes"] == expected_bytes(first) + expected_bytes(rest)
    assert console_errors(page) == []


def test_token_mode_stop_cancels_the_context_and_the_engine_goes_idle(token_page, server):
    page = token_page
    text = ("This first sentence is long enough to keep the engine busy for a while. "
            + "Then more words keep coming " * 5 + "until the end.")
    fill(page, text=text, clientId="webui-tokens-stop", tokens=True, tokenRate="5", voice="Ryan", language="English")
    click(page, "speak")
    wait_until(page, "const t = window.qwenStream.stats.tokens; return t && t.bytes > 0")
    click(page, "stop")
    s = wait_until(page, "const s = window.qwenStream.stats; return s.state === 'stopped' && s")
    t = s["tokens"]
    assert t["cancelled"] and t["state"] == "stopped" and t["sent"] < t["total"]
    assert s["activeSources"] == 0 and s["requests"][0]["status"] == "stopped"
    # The socket got the tokens so far, every one with continue true, then the cancel.
    sent = sent_messages(page)
    assert sent[-1] == {"context_id": t["contextId"], "cancel": True}
    assert len(sent) == t["sent"] + 1 and all(m["continue"] for m in sent[:-1])

    # The server: the context stopped within a step, the engine went idle and stays so.
    assert server.wait_idle(30)
    before = steps(server)
    time.sleep(0.4)
    assert steps(server) == before

    # The page: no token and no audio after Stop, every source it started is stopped.
    later = stats(page)
    assert len(sent_messages(page)) == len(sent) and later["tokens"]["sent"] == t["sent"]
    assert later["scheduledSamples"] == s["scheduledSamples"] and later["bytes"] == s["bytes"]
    assert later["activeSources"] == 0 and later["sourcesStarted"] == later["sourcesStopped"]
    assert later["bytes"] < expected_bytes("This first sentence is long enough to keep the engine busy for a while.")
    info = page.execute_script("return document.getElementById('tokenInfo').textContent")
    assert f"{t['sent']} of {t['total']} tokens sent at 5/s, then cancelled." in info

    # The socket stays open for the next turn, which plays in full.
    fill(page, text="Again.", tokenRate="50")
    click(page, "speak")
    again = wait_until(page, "const s = window.qwenStream.stats; return s.state === 'done' && s")
    assert again["tokens"]["state"] == "done" and again["bytes"] == expected_bytes("Again.")
    assert page.execute_script("return window.wsSent.filter(m => m.cancel).length") == 1
    assert console_errors(page) == []


def test_token_mode_sends_the_api_key_in_the_query(driver, custom_voice_dir):
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=MAX_FRAMES,
                              api_key="s3cret-key")
    keyed = LiveServer(settings).start()
    try:
        driver.get(keyed.url + "/")
        fill(driver, apiKey="s3cret-key")
        wait_until(driver, "return window.qwenStream && window.qwenStream.stats.ready "
                           "&& window.qwenStream.stats.voicesFrom === 'server'")
        console_errors(driver, ("status of 401",))  # the keyless first load's 401s, before the key was set
        fill(driver, text="Hi there.", clientId="webui-tokens-key", tokens=True, tokenRate="60", voice="Ryan")
        click(driver, "speak")
        # The server refuses a keyless WebSocket handshake (403): a turn that is spoken came with ?api_key=.
        s = wait_until(driver, "const s = window.qwenStream.stats; return s.state === 'done' && s")
        assert s["tokens"]["state"] == "done" and s["bytes"] == expected_bytes("Hi there.")
        assert console_errors(driver) == []
        fill(driver, tokens=False)
        driver.execute_script("localStorage.clear()")
        assert keyed.wait_idle(30)
    finally:
        keyed.stop()


# -- studio: the Voices and Script panels -------------------------------------------------------------------


@pytest.fixture(scope="module")
def studio_server(custom_voice_dir, base_dir, voice_design_dir):
    """All three families: built-in speakers, cloning (Base) and designing (VoiceDesign + Base)."""
    models = f"custom_voice={custom_voice_dir},base={base_dir},voice_design={voice_design_dir}"
    live = LiveServer(ServerSettings(models=models, device="cpu", max_frames=MAX_FRAMES,
                                     max_text_chars=MAX_TEXT_CHARS, max_upload_mb=2)).start()
    yield live
    live.stop()


def load_studio(driver, url: str) -> None:
    driver.get(url + "/")
    wait_until(driver, "return window.qwenStream && window.qwenStream.stats.ready "
                       "&& window.qwenStream.studio.voices.length > 0")


@pytest.fixture
def studio(driver, studio_server):
    load_studio(driver, studio_server.url)
    console_errors(driver)  # only this test's entries from here on
    yield driver
    assert studio_server.wait_idle(60), "work left running on the server after the test"


def studio_stats(driver) -> dict:
    return driver.execute_script("return window.qwenStream.studio")


def last_action(driver, action: str, count_before: int) -> dict:
    """Waits for the panel's next `action` after `count_before` actions, and returns it."""
    return wait_until(driver, f"const a = window.qwenStream.studio.actions.slice({count_before})"
                              f".filter(a => a.action === '{action}'); return a.length && a[0]", timeout=180)


def press(driver, selector: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, selector).click()


def picker(driver) -> list[str]:
    return driver.execute_script("return [...document.getElementById('voice').options].map(o => o.value)")


def listed(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#voiceList tr[data-id]')]"
                                 ".map(r => r.dataset.id)")


def wav_file(path: Path, samples, rate: int) -> Path:
    import soundfile as sf

    sf.write(path, samples, rate, format="WAV", subtype="PCM_16")
    return path


def assert_reference_plays(driver, server, voice_id: str) -> None:
    import httpx

    press(driver, f'#voiceList button[data-act="play"][data-id="{voice_id}"]')
    ref = wait_until(driver, "const r = window.qwenStream.studio.reference; "
                             "return (r.state === 'playing' || r.state === 'ended' || r.state === 'error') && r")
    assert ref["state"] in ("playing", "ended") and ref["voice"] == voice_id, ref
    wait_until(driver, "const r = window.qwenStream.studio.reference; return r.currentTime > 0 || r.state === 'ended'")
    # The page played the server's reference WAV, every byte of it.
    assert ref["bytes"] == len(httpx.get(f"{server.url}/v1/voices/{voice_id}/audio").content)


def delete_in_page(driver, voice_id: str) -> None:
    before = len(studio_stats(driver)["actions"])
    press(driver, f'#voiceList button[data-act="delete"][data-id="{voice_id}"]')
    button = f'#voiceList button[data-act="delete"][data-id="{voice_id}"]'
    wait_until(driver, f"return document.querySelector('{button}').textContent === 'Sure?'")
    press(driver, f'#voiceList button[data-act="delete"][data-id="{voice_id}"]')  # the second click deletes
    assert last_action(driver, "delete", before)["ok"]
    wait_until(driver, f"return !window.qwenStream.studio.voices.some(v => v.id === '{voice_id}')")


def test_studio_clones_from_a_file_lists_plays_and_deletes(studio, studio_server, reference_audio, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By

    driver, server = studio, studio_server
    assert "Ryan" in listed(driver) and "Ryan" in picker(driver)
    # Built-in voices have no reference audio and cannot be deleted: no buttons for them.
    assert not driver.find_elements(By.CSS_SELECTOR, '#voiceList tr[data-id="Ryan"] button')

    samples, rate = reference_audio
    path = wav_file(tmp_path / "reference.wav", samples, rate)
    fill(driver, cloneName="Narrator", cloneTranscript="", language="English")
    driver.find_element(By.ID, "cloneFile").send_keys(str(path))
    before = len(studio_stats(driver)["actions"])
    click(driver, "cloneUpload")
    action = last_action(driver, "clone", before)
    assert action["ok"], action
    voice = action["detail"]
    # No transcript: an x-vector clone, spoken by the Base model.
    assert voice["kind"] == "cloned" and voice["mode"] == "xvector" and voice["name"] == "Narrator"
    assert voice["language"] == "English"
    # At once in the list (kind, name, id) and in the page's voice picker.
    assert voice["id"] in listed(driver) and voice["id"] in picker(driver)
    row = driver.find_element(By.CSS_SELECTOR, f'#voiceList tr[data-id="{voice["id"]}"]').text
    assert "cloned" in row and "Narrator" in row and voice["id"] in row
    assert voice["id"] in [v["id"] for v in httpx.get(f"{server.url}/v1/voices").json()["voices"]]

    assert_reference_plays(driver, server, voice["id"])

    # Rename in place: PATCH /v1/voices/{id}; the id stays, the list and the picker show the new name.
    press(driver, f'#voiceList button[data-act="rename"][data-id="{voice["id"]}"]')
    field = driver.find_element(By.CSS_SELECTOR, f'#voiceList input.rename[data-id="{voice["id"]}"]')
    field.clear()
    field.send_keys("Storyteller")
    before = len(studio_stats(driver)["actions"])
    press(driver, f'#voiceList button[data-act="rename-save"][data-id="{voice["id"]}"]')
    action = last_action(driver, "rename", before)
    assert action["ok"] and action["detail"]["name"] == "Storyteller" and action["detail"]["id"] == voice["id"]
    wait_until(driver, f"return window.qwenStream.studio.voices.some(v => v.id === '{voice['id']}' "
                       "&& v.name === 'Storyteller')")
    assert "Storyteller" in driver.find_element(By.CSS_SELECTOR, f'#voiceList tr[data-id="{voice["id"]}"]').text
    assert driver.execute_script(f"return document.querySelector('#voice option[value=\"{voice['id']}\"]').text"
                                 ).startswith("Storyteller")
    assert httpx.get(f"{server.url}/v1/voices/{voice['id']}").json()["name"] == "Storyteller"

    # The page speaks with the new voice from the picker.
    fill(driver, text="Hi there.", clientId="webui-cloned", conversation=False, tokens=False, voice=voice["id"])
    click(driver, "speak")
    s = wait_until(driver, "const s = window.qwenStream.stats; return s.state === 'done' && s", timeout=120)
    assert s["requests"][0]["status"] == "done" and s["bytes"] == expected_bytes("Hi there.")

    delete_in_page(driver, voice["id"])
    assert voice["id"] not in listed(driver) and voice["id"] not in picker(driver)
    assert httpx.get(f"{server.url}/v1/voices/{voice['id']}").status_code == 404
    assert console_errors(driver) == []


def test_studio_clones_from_the_microphone(studio, studio_server):
    import httpx

    driver, server = studio, studio_server
    click(driver, "recordStart")
    # Chromium's fake microphone (a beep): record until the page has counted 3 s of it.
    wait_until(driver, "const r = window.qwenStream.studio.recording; return r.state === 'recording' && r.seconds >= 3")
    click(driver, "recordStop")
    rec = wait_until(driver, "const r = window.qwenStream.studio.recording; "
                             "return (r.state === 'recorded' || r.state === 'error') && r")
    assert rec["state"] == "recorded", rec
    assert rec["seconds"] > 2 and rec["bytes"] > 44 and rec["mimeType"].startswith("audio/")
    assert driver.execute_script("return document.getElementById('cloneRecorded').disabled") is False

    fill(driver, cloneName="Microphone", cloneTranscript="Beep beep beep.")
    before = len(studio_stats(driver)["actions"])
    click(driver, "cloneRecorded")
    action = last_action(driver, "clone", before)
    assert action["ok"], action
    voice = action["detail"]
    # With a transcript: an ICL clone.
    assert voice["kind"] == "cloned" and voice["mode"] == "icl" and voice["ref_text"] == "Beep beep beep."
    assert voice["id"] in listed(driver) and voice["id"] in picker(driver)
    # What was stored is the page's WAV of the recording (24 kHz mono 16-bit): its length is the recording's.
    ref = httpx.get(f"{server.url}/v1/voices/{voice['id']}/audio").content
    assert (len(ref) - 44) / BYTES_PER_SECOND == pytest.approx(rec["seconds"], abs=0.05)
    delete_in_page(driver, voice["id"])
    assert console_errors(driver) == []


def test_studio_designs_and_saves_a_voice(studio, studio_server):
    import httpx

    driver, server = studio, studio_server
    # CustomVoice is this server's default voice: the preview asks for the reserved voice "design" (VoiceDesign).
    assert driver.execute_script("return document.getElementById('designPreview').disabled") is False
    assert driver.execute_script("return document.getElementById('designSave').disabled") is False
    fill(driver, designName="Deep", designDescription="A deep, calm narrator.",
         designSample="Hello there, I read slowly.", language="English")
    before = len(studio_stats(driver)["actions"])
    click(driver, "designPreview")
    previewed = last_action(driver, "preview", before)
    assert previewed["ok"], previewed
    preview = wait_until(driver, "const p = window.qwenStream.studio.preview; return "
                                 "(p.state === 'playing' || p.state === 'ended' || p.state === 'error') && p")
    assert preview["bytes"] == expected_bytes("Hello there, I read slowly.")
    before = len(studio_stats(driver)["actions"])
    click(driver, "designSave")
    action = last_action(driver, "design", before)
    assert action["ok"], action
    voice = action["detail"]
    assert voice["kind"] == "designed" and voice["name"] == "Deep" and voice["description"] == "A deep, calm narrator."
    assert voice["id"] in listed(driver) and voice["id"] in picker(driver)
    assert_reference_plays(driver, server, voice["id"])  # the designed clip
    delete_in_page(driver, voice["id"])
    assert httpx.get(f"{server.url}/v1/voices/{voice['id']}").status_code == 404
    assert console_errors(driver) == []


def test_studio_previews_a_design_where_voicedesign_is_the_default(driver, voice_design_dir):
    """A server of VoiceDesign alone speaks `instruct` as the voice's description: the page previews with it."""
    sample = "Hello there, I read slowly."
    live = LiveServer(ServerSettings(model_path=str(voice_design_dir), device="cpu", max_frames=MAX_FRAMES)).start()
    try:
        driver.get(live.url + "/")
        wait_until(driver, "return window.qwenStream && window.qwenStream.stats.ready "
                           "&& !document.getElementById('designPreview').disabled")
        console_errors(driver)
        # Saving needs a Base model too, which this server lacks.
        assert driver.execute_script("return document.getElementById('designSave').disabled") is True
        fill(driver, designDescription="A bright, cheerful young voice.", designSample=sample, language="English",
             clientId="webui-preview")
        before = len(studio_stats(driver)["actions"])
        click(driver, "designPreview")
        action = last_action(driver, "preview", before)
        assert action["ok"], action
        preview = wait_until(driver, "const p = window.qwenStream.studio.preview; return "
                                     "(p.state === 'playing' || p.state === 'ended' || p.state === 'error') && p")
        assert preview["state"] in ("playing", "ended"), preview
        assert preview["bytes"] == expected_bytes(sample)
        assert console_errors(driver) == []
        assert live.wait_idle(30)
    finally:
        live.stop()


def test_studio_runs_a_two_speaker_script_job(studio, studio_server, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By

    driver, server = studio, studio_server
    script = "[Host] Welcome to the show.\n[Guest] Thanks for having me.\nIt is good to be here."
    fill(driver, scriptText=script, language="English")
    # One voice select per speaker found in the script, filled from the voice list.
    selects = driver.execute_script(
        "return [...document.querySelectorAll('#speakerMap select')].map(s => [s.dataset.speaker, s.id, "
        "[...s.options].map(o => o.value)])")
    assert [speaker for speaker, _, _ in selects] == ["Host", "Guest"]
    assert all("Ryan" in options and "Vivian" in options for _, _, options in selects)
    fill(driver, **{selects[0][1]: "Ryan", selects[1][1]: "Vivian"}, jobFormat="wav", jobPause="200")
    assert studio_stats(driver)["mapping"] == {"Host": "Ryan", "Guest": "Vivian"}

    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)})
    click(driver, "jobStart")
    job = wait_until(driver, "const j = window.qwenStream.studio.job; return j && (j.downloadedBytes !== null "
                             "|| ['failed', 'cancelled', 'error'].includes(j.status)) && j",
                     timeout=300)
    assert job["status"] == "done", job
    assert job["segmentsTotal"] == 3 and job["segmentsDone"] == 3
    # The progress bar went up and ended full.
    assert driver.execute_script("return document.getElementById('jobProgress').value") == 100
    assert job["percents"][-1] == 100 and job["percents"] == sorted(job["percents"])
    # The job on the server: done, with the bytes the page fetched.
    body = httpx.get(f"{server.url}/v1/audio/jobs/{job['id']}").json()
    assert body["status"] == "done" and body["output_format"] == "wav"
    served = httpx.get(f"{server.url}/v1/audio/jobs/{job['id']}/audio").content
    assert job["audioBytes"] == body["audio_bytes"] == job["downloadedBytes"] == len(served)

    # Download: the file saved by the browser is the job's audio.
    link = driver.find_element(By.ID, "jobDownload")
    assert link.is_displayed() and link.get_attribute("download") == f"qwen-stream-{job['id']}.wav"
    link.click()
    saved = tmp_path / f"qwen-stream-{job['id']}.wav"
    deadline = time.monotonic() + 60
    while not (saved.exists() and saved.stat().st_size == len(served)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert saved.read_bytes() == served

    # Play: the result plays in the page.
    click(driver, "jobPlay")
    played = wait_until(driver, "const p = window.qwenStream.studio.job.play; "
                                "return (p.state === 'playing' || p.state === 'ended' || p.state === 'error') && p")
    assert played["state"] in ("playing", "ended"), played
    assert console_errors(driver) == []
