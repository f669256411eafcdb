"""Many clients misbehaving at once: the server stays consistent and the well-behaved get whole streams.

Bounded: 6 clients x 5 actions, a fixed random seed, loopback only."""

from __future__ import annotations

import random
import threading

import httpx
import pytest

from qwen_stream.config import ServerSettings
from qwen_stream.settings import BYTES_PER_FRAME

from tests.live_server import LiveServer

TEXTS = ["Hi.", "Short and sweet.", "Numbers like 42 and 3:30pm get read out.", "一句中文。", "OK then."]


@pytest.fixture(scope="module")
def server(custom_voice_dir):
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=40, max_queue=3)
    live = LiveServer(settings).start()
    yield live
    live.stop()


def test_mixed_misbehaviour_leaves_a_consistent_server(server):
    rng = random.Random(1234)
    outcomes: list[tuple[str, int, int]] = []  # (action, status, bytes)
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(name: str, seed: int) -> None:
        local = random.Random(seed)
        with httpx.Client(base_url=server.url, timeout=120) as c:
            for _ in range(5):
                action = local.choice(["full", "full", "leave", "interrupt", "bad", "openai"])
                body = {"text": local.choice(TEXTS), "client_id": name}
                try:
                    if action == "full":
                        r = c.post("/tts/stream", json=body)
                        record = (action, r.status_code, len(r.content))
                    elif action == "leave":
                        with c.stream("POST", "/tts/stream", json=body) as r:
                            next(r.iter_raw(), b"")
                        record = (action, r.status_code, -1)
                    elif action == "interrupt":
                        r = c.post("/tts/interrupt", params={"client_id": name})
                        record = (action, r.status_code, -1)
                    elif action == "bad":
                        r = c.post("/tts/stream", json={"text": "", "client_id": name})
                        record = (action, r.status_code, -1)
                    else:
                        r = c.post("/v1/audio/speech", json={"model": "tts-1", "input": body["text"],
                                                             "voice": "alloy", "response_format": "mp3"},
                                   headers={"X-Client-Id": name})
                        record = (action, r.status_code, len(r.content))
                except httpx.HTTPError as e:  # a 200 stream cut by this client's own interrupt is fine
                    record = (action, -1, -1)
                    if action != "full":
                        with lock:
                            errors.append(e)
                with lock:
                    outcomes.append(record)

    done = threading.Event()
    barged = []

    def barge_in() -> None:
        """Interrupts random clients while they stream, as voice-chat users do."""
        local = random.Random(99)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not done.wait(local.uniform(0.1, 0.6)):
                reply = c.post("/tts/interrupt", params={"client_id": f"chaos-{local.randrange(6)}"}).json()
                barged.append(reply["interrupted"])

    threads = [threading.Thread(target=client, args=(f"chaos-{i}", rng.randrange(10**6))) for i in range(6)]
    barger = threading.Thread(target=barge_in)
    for t in [*threads, barger]:
        t.start()
    for t in threads:
        t.join(300)
    done.set()
    barger.join(60)
    assert any(barged), "no interrupt hit a running stream: the test would prove little"
    assert not any(t.is_alive() for t in threads)
    assert not errors

    for action, status, size in outcomes:
        if action == "bad":
            assert status == 400
        elif action == "interrupt":
            assert status == 200
        elif action in ("full", "leave", "openai"):
            assert status in (200, 429), (action, status)
        if action == "full" and status == 200:
            assert size % BYTES_PER_FRAME == 0  # whole frames, even when cut short by an interrupt

    assert server.wait_idle(60)
    queues = server.backend.speech.queues
    assert queues.client_count == 0 and queues.waiting == 0
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ready" and health["active_streams"] == 0 and health["queue_depth"] == 0
    # And it still serves a plain request in full.
    r = httpx.post(server.url + "/tts/stream", json={"text": "Hi.", "client_id": "after"}, timeout=120)
    assert r.status_code == 200 and len(r.content) == (25 + 2 * 3) * BYTES_PER_FRAME
    metrics = httpx.get(server.url + "/metrics").text
    assert 'qwen_stream_requests_total{outcome="error"}' not in metrics
