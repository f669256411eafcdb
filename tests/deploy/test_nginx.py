"""The shipped nginx config (deploy/nginx/nginx.conf) in front of two real replicas, with Debian's nginx on
loopback: a client's requests all reach one replica, an interrupt through the proxy stops the right stream, a
disconnect at the proxy stops the replica's work, WebSockets pass, and a dead replica's clients re-hash while
the other's are untouched."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import websockets

from qwen_stream.config import ServerSettings
from tests.live_server import LiveServer, free_port

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = [f"caller-{i}" for i in range(12)]
LONG = "This sentence keeps the replica busy for a good while, so that it can be interrupted midway."

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="Debian's nginx is not installed")



class Proxy:
    """deploy/nginx/nginx.conf with the replicas' and its own addresses put in (nothing else changed)."""

    def __init__(self, replicas: list[LiveServer], workdir: Path):
        self.port = free_port()
        conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
        for name, replica in zip(("replica1:9000", "replica2:9000"), replicas, strict=True):
            assert f"server {name}" in conf
            conf = conf.replace(f"server {name}", f"server 127.0.0.1:{replica.port}")
        assert "listen 80;" in conf
        conf = conf.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        (workdir / "logs").mkdir(exist_ok=True)
        (workdir / "nginx.conf").write_text(conf)
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
             "-g", f"daemon off; pid {workdir}/nginx.pid; error_log {workdir}/logs/error.log;"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert self.proc.poll() is None, self.proc.stdout.read().decode() if self.proc.stdout else ""
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def record_clients(replica: LiveServer) -> list[str]:
    """The client ids of the requests this replica prepared, in order."""
    seen: list[str] = []
    speech = replica.backend.speech
    original = speech.prepare

    async def prepare(client_id, *args, **kwargs):
        seen.append(client_id)
        return await original(client_id, *args, **kwargs)

    speech.prepare = prepare
    return seen


@pytest.fixture
def cluster(custom_voice_dir, tmp_path):
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=120)
    replicas = [LiveServer(settings).start(), LiveServer(settings).start()]
    seen = [record_clients(r) for r in replicas]
    proxy = Proxy(replicas, tmp_path)
    yield proxy, replicas, seen
    proxy.stop()
    for replica in replicas:
        try:
            replica.stop()
        except Exception:
            pass


def where(seen: list[list[str]], client_id: str) -> set[int]:
    return {i for i, ids in enumerate(seen) if client_id in ids}


def test_each_client_lands_on_one_replica_by_header_or_query(cluster):
    proxy, _, seen = cluster
    with httpx.Client(base_url=proxy.url, timeout=120) as c:
        for client_id in CLIENTS:
            for _ in range(2):
                assert c.post("/tts/stream", json={"text": "Hi.", "client_id": client_id},
                              headers={"X-Client-Id": client_id}).status_code == 200
            # The same client by query argument only (as a browser's WebSocket or a bare interrupt would name it).
            assert c.post(f"/tts/stream?client_id={client_id}", json={"text": "Hi.", "client_id": client_id}
                          ).status_code == 200
    homes = {client_id: where(seen, client_id) for client_id in CLIENTS}
    assert all(len(home) == 1 for home in homes.values()), homes
    assert {i for home in homes.values() for i in home} == {0, 1}  # both replicas serve someone


def test_an_interrupt_through_the_proxy_stops_the_stream_on_the_right_replica(cluster):
    proxy, replicas, seen = cluster
    client_id = CLIENTS[0]
    got = bytearray()
    with httpx.Client(base_url=proxy.url, timeout=120) as c:
        with c.stream("POST", "/tts/stream", json={"text": LONG, "client_id": client_id},
                      headers={"X-Client-Id": client_id}) as stream:
            chunks = stream.iter_raw()
            got += next(chunks)
            [home] = where(seen, client_id)
            answer = c.post(f"/tts/interrupt?client_id={client_id}")
            assert answer.json()["interrupted"] is True
            for chunk in chunks:
                got += chunk
    assert replicas[home].wait_idle(30)
    assert len(got) < 120 * 3840  # it ended early: the interrupt reached the replica holding the stream


def test_a_disconnect_at_the_proxy_stops_the_replicas_work(cluster):
    proxy, replicas, seen = cluster
    client_id = CLIENTS[1]
    with httpx.Client(base_url=proxy.url, timeout=120) as c:
        with c.stream("POST", "/tts/stream", json={"text": LONG, "client_id": client_id},
                      headers={"X-Client-Id": client_id}) as stream:
            next(stream.iter_raw())
    [home] = where(seen, client_id)
    assert replicas[home].wait_idle(30)  # the replica's engine stopped: nginx closed its side too
    steps = replicas[home].backend.engine.steps
    time.sleep(0.3)
    assert replicas[home].backend.engine.steps == steps


def test_a_websocket_session_works_through_the_proxy(cluster):
    proxy, _, seen = cluster

    async def main():
        url = proxy.url.replace("http://", "ws://") + "/v1/tts/websocket?client_id=ws-caller"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"context_id": "t", "transcript": "Through the proxy.", "continue": False,
                                      "voice": "Ryan"}))
            kinds = []
            while not kinds or kinds[-1] not in ("done", "error"):
                kinds.append(json.loads(await ws.recv())["type"])
            return kinds

    kinds = asyncio.run(asyncio.wait_for(main(), 120))
    assert kinds[-1] == "done" and "chunk" in kinds
    assert len(where(seen, "ws-caller")) <= 1  # (the session's turns are prepared by the session, not by prepare)


def test_a_dead_replica_rehashes_its_clients_and_leaves_the_others_alone(cluster):
    proxy, replicas, seen = cluster
    with httpx.Client(base_url=proxy.url, timeout=120) as c:
        for client_id in CLIENTS:  # named as the proxy sees it: nginx routes before it reads any body
            assert c.post("/tts/stream", json={"text": "Hi.", "client_id": client_id},
                          headers={"X-Client-Id": client_id}).status_code == 200
        homes = {client_id: where(seen, client_id) for client_id in CLIENTS}
        on_dead = [cid for cid, home in homes.items() if home == {1}]
        on_live = [cid for cid, home in homes.items() if home == {0}]
        assert on_dead and on_live
        replicas[1].stop()
        for s in seen:
            s.clear()
        for client_id in CLIENTS:
            answer = c.post("/tts/stream", json={"text": "Hi.", "client_id": client_id},
                            headers={"X-Client-Id": client_id})
            assert answer.status_code == 200 and answer.content, client_id
    assert all(where(seen, cid) == {0} for cid in on_dead)  # re-hashed to the living replica
    assert all(where(seen, cid) == {0} for cid in on_live)  # the others stayed where they were
