"""What one bad client costs the others, over real HTTP: a reader that stops reading, hostile text, and a
large voice library under unknown-voice requests.

    python benchmarks/bench_isolation.py [--model-path DIR --device cuda] [--runs 10] [--send-timeout 10]

1. Stalled reader: a client's first byte (a short sentence, one request at a time) alone, then while another
   client holds a long stream open and reads nothing (small receive window), until the server cuts it.
2. Hostile text: POST /v1/normalize with "!" * 4999 + "x" (the splitter's old ReDoS), and /health
   latency while such requests run.
3. Voice library: /health latency with 1,000 stored voices while four clients ask for unknown voices.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from benchmarks._common import ROOT, ServerProcess, add_model_args, machine, model_path, pct  # noqa: E402

SHORT = "Hello there, how are you?"
# About 4,700 characters (several minutes of audio): more than the kernel's socket buffers hold, so the
# server really meets a reader that takes nothing.
LONG = " ".join(["This sentence is long enough to keep the engine busy for quite a few frames of audio."] * 55)


def first_byte(client: httpx.Client, body: dict) -> float:
    t0 = time.perf_counter()
    first = None
    with client.stream("POST", "/tts/stream", json=body) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            if chunk and first is None:
                first = time.perf_counter() - t0
    if first is None:
        raise RuntimeError("no audio")
    return first


def stalled_reader(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    body = json.dumps({"text": LONG, "client_id": "stalled"}).encode()
    sock.sendall(f"POST /tts/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def health_latency(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=300) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            client.get("/health")
            out.append(time.perf_counter() - t0)
            time.sleep(0.02)


def row(name: str, values: list[float]) -> str:
    return f"| {name} | {len(values)} | {1000 * pct(values, 50):.1f} | {1000 * pct(values, 95):.1f} | " \
           f"{1000 * max(values):.1f} |"


def bench_stalled(args, rows: list[str]) -> None:
    timeout = () if args.send_timeout is None else ("--send-timeout", str(args.send_timeout))
    server = ServerProcess("--model-path", model_path(args), "--device", args.device, "--dtype", args.dtype,
                           "--threads", "1", "--max-frames", "400", *timeout)
    with server, httpx.Client(base_url=server.url, timeout=300) as client:
        body = {"text": SHORT, "client_id": "victim"}
        first_byte(client, body)  # warm
        alone = [first_byte(client, body) for _ in range(args.runs)]
        sock = stalled_reader(server.port)
        t0 = time.perf_counter()
        beside = []
        while True:
            beside.append(first_byte(client, body))
            cut = any("outcome=stalled" in line for line in server.logs)
            if not cut and time.perf_counter() - t0 < args.watch:
                continue
            break
        cut_after = time.perf_counter() - t0
        sock.close()
    rows.append(row("first byte, alone (ms)", alone))
    rows.append(row("first byte, beside a stalled reader until it is cut (ms)", beside))
    rows.append(f"| the stalled stream {'cut after' if cut else 'still open after'} (s) | 1 | {cut_after:.1f} | | |")


def bench_hostile_text(args, rows: list[str]) -> None:
    server = ServerProcess("--model-path", model_path(args), "--device", args.device, "--threads", "1")
    with server:
        stop, health = threading.Event(), []
        watcher = threading.Thread(target=health_latency, args=(server.url, stop, health))
        watcher.start()
        times = []
        with httpx.Client(base_url=server.url, timeout=300) as client:
            for _ in range(args.runs):
                t0 = time.perf_counter()
                client.post("/v1/normalize", json={"text": "!" * 4999 + "x"}).raise_for_status()
                times.append(time.perf_counter() - t0)
        stop.set()
        watcher.join()
    rows.append(row('POST /v1/normalize "!" * 4999 + "x" (ms)', times))
    rows.append(row("/health meanwhile (ms)", health))


def bench_voice_library(args, rows: list[str]) -> None:
    voices = ROOT / ".pytest_cache" / "bench-isolation-voices"
    shutil.rmtree(voices, ignore_errors=True)
    common = ("--demo", "--cache-dir", str(ROOT / ".pytest_cache" / "qwen-stream"), "--threads", "1",
              "--voices-dir", str(voices), "--max-frames", "20")
    from benchmarks.bench_voices import reference

    with ServerProcess(*common) as server:
        r = httpx.post(server.url + "/v1/voices", files={"file": ("r.wav", reference(1))}, data={"name": "seed"},
                       timeout=300)
        r.raise_for_status()
        seed = voices / r.json()["id"]
    for _ in range(999):  # copies of one stored voice, each under its own id
        new_id = "voice_" + uuid.uuid4().hex[:12]
        shutil.copytree(seed, voices / new_id)
        meta = json.loads((voices / new_id / "meta.json").read_text())
        (voices / new_id / "meta.json").write_text(json.dumps(dict(meta, id=new_id)))
    with ServerProcess(*common) as server:
        quiet: list[float] = []
        stop = threading.Event()
        watcher = threading.Thread(target=health_latency, args=(server.url, stop, quiet))
        watcher.start()
        time.sleep(2)
        stop.set()
        watcher.join()
        stop, busy = threading.Event(), []

        def ask_unknown() -> None:
            with httpx.Client(base_url=server.url, timeout=300) as client:
                while not stop.is_set():
                    client.post("/tts/stream", json={"text": "Hi.", "voice": "voice_000000000000"})

        askers = [threading.Thread(target=ask_unknown) for _ in range(4)]
        watcher = threading.Thread(target=health_latency, args=(server.url, stop, busy))
        for t in (*askers, watcher):
            t.start()
        time.sleep(5)
        stop.set()
        for t in (*askers, watcher):
            t.join()
    shutil.rmtree(voices, ignore_errors=True)
    rows.append(row("/health, 1,000 voices, quiet (ms)", quiet))
    rows.append(row("/health, 1,000 voices, 4 clients asking for unknown voices (ms)", busy))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--send-timeout", type=float, help="the server's --send-timeout (default: its own)")
    parser.add_argument("--only", choices=("stalled", "text", "voices"))
    parser.add_argument("--watch", type=float, default=60.0, help="seconds to measure beside the stalled reader "
                        "at most (a server that never cuts it)")
    args = parser.parse_args()
    rows: list[str] = []
    for name, bench in (("stalled", bench_stalled), ("text", bench_hostile_text), ("voices", bench_voice_library)):
        if args.only in (None, name):
            bench(args, rows)
    print(f"# bench_isolation: {machine()}, model {model_path(args)}, send timeout {args.send_timeout or 'default'}")
    print("| measure | n | p50 | p95 | max |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
