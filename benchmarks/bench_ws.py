"""First audio from the first token, with the text arriving at LLM speed: the WebSocket against HTTP.

    python benchmarks/bench_ws.py [--model-path DIR --device cuda] [--runs 10] [--rate 30] [--extra "--threads 1"]

Starts `server.py` as a child process on a free loopback port (the tiny checkpoint unless --model-path). An
"LLM" writes the answer at --rate tokens a second (word-ish tokens, as the WebUI's token mode splits them).
Every figure is the time from the moment the first token exists to the first byte of audio at the client:

* WebSocket (`GET /v1/tts/websocket`, one socket kept open as a voice agent keeps it): each token is sent as
  it is written (`continue: true`), then `continue: false`; the server speaks each unit once it is complete.
* HTTP, per sentence: the client waits for the first sentence's last token (its end mark), then POSTs that
  sentence to `/tts/stream` (as the WebUI's conversation mode and sentence-aggregating agents do).
* HTTP, whole answer: the client waits for the last token, then POSTs the whole answer.

Each run stops its audio at the first byte (cancel / interrupt) and waits for the server to be idle, so runs do
not overlap. HTTP uses the standard library's client on a fresh connection per request (httpx adds about 43 ms
per keep-alive request in this sandbox: see docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402
import websockets  # noqa: E402

from benchmarks._common import ServerProcess, add_model_args, machine, model_path, pct  # noqa: E402

ANSWERS = {
    # One long LLM-style sentence with a clause the server may speak before the sentence ends.
    "1 sentence": "I have checked the forecast for the whole week in Paris for you, and it looks sunny with "
                  "highs of 24 degrees on Saturday.",
    "3 sentences": "Sure, here is the plan for the trip. First we book the train to Lyon for Friday morning. "
                   "Then we find a hotel close to the station for two nights.",
}
# The WebUI's tokens (webui.html, tokenize): a word with the blanks before it, or one other mark.
TOKEN = re.compile(r"\s*(?:[\w'\u2019]+|[^\w\s])")
VOICE = "Ryan"
LANGUAGE = "English"


def tokenize(text: str) -> list[str]:
    tokens = TOKEN.findall(text)
    assert "".join(tokens) == text
    return tokens


def first_sentence_end(tokens: list[str]) -> int:
    """Index of the token that ends the first sentence (its end mark)."""
    return next(i for i, t in enumerate(tokens) if t.strip() in (".", "!", "?"))


def wait_idle(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(url + "/health").json()
        if body["active_streams"] == 0 and body["queue_depth"] == 0 and body.get("clients", 0) == 0:
            return
        time.sleep(0.02)
    raise SystemExit("the server did not go idle")


async def ws_first_audio(ws, context_id: str, tokens: list[str], rate: float) -> tuple[float, int]:
    """Seconds from the first token to the first audio chunk, and the tokens sent by then."""
    sent = 0

    def message(transcript: str, more: bool) -> str:
        return json.dumps({"context_id": context_id, "transcript": transcript, "continue": more,
                           "voice": {"mode": "id", "id": VOICE}, "language": LANGUAGE,
                           "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}})

    t0 = time.perf_counter()

    async def write() -> None:
        nonlocal sent
        for i, token in enumerate(tokens):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(message(token, True))
            sent = i + 1
        await ws.send(message("", False))

    writer = asyncio.ensure_future(write())
    try:
        while True:
            reply = json.loads(await ws.recv())
            if reply.get("context_id") != context_id:
                continue  # a chunk of an earlier, cancelled context still on its way
            if reply["type"] == "chunk":
                return time.perf_counter() - t0, sent
            if reply["type"] in ("error", "done"):
                raise SystemExit(f"unexpected reply before any audio: {reply}")
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await ws.send(json.dumps({"context_id": context_id, "cancel": True}))


def http_first_audio(url: str, port: int, text: str, wait: float) -> float:
    """Seconds from the first token to the first body byte: the client waits `wait` s (the LLM writing up to the
    text's last token), then POSTs the text to /tts/stream."""
    t0 = time.perf_counter()
    time.sleep(max(0.0, t0 + wait - time.perf_counter()))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request("POST", "/tts/stream", body=json.dumps(
            {"text": text, "client_id": "bench-http", "voice": VOICE, "language": LANGUAGE}),
            headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            raise SystemExit(f"/tts/stream answered {response.status}: {response.read()[:300]!r}")
        response.read(1)
        first = time.perf_counter() - t0
    finally:
        httpx.post(url + "/tts/interrupt", params={"client_id": "bench-http"})
        conn.close()
    return first


async def measure(server: ServerProcess, runs: int, rate: float) -> dict[str, dict[str, list]]:
    results: dict[str, dict[str, list]] = {}
    ws_url = server.url.replace("http://", "ws://") + "/v1/tts/websocket?client_id=bench-ws"
    async with websockets.connect(ws_url, max_size=None) as ws:
        for name, text in ANSWERS.items():
            tokens = tokenize(text)
            end = first_sentence_end(tokens)
            first_sentence = "".join(tokens[: end + 1]).strip()
            rows = results[name] = {"ws": [], "ws_tokens": [], "http_sentence": [], "http_answer": [],
                                    "tokens": [len(tokens)], "sentence_tokens": [end + 1]}
            for run in range(runs + 1):  # run 0 warms every path up and is not counted
                took, by_then = await ws_first_audio(ws, f"{name[0]}-{run}", tokens, rate)
                await asyncio.to_thread(wait_idle, server.url)
                sentence = await asyncio.to_thread(http_first_audio, server.url, server.port, first_sentence,
                                                   end / rate)
                await asyncio.to_thread(wait_idle, server.url)
                answer = None
                if end < len(tokens) - 1:  # a one-sentence answer: the same request as the row above
                    answer = await asyncio.to_thread(http_first_audio, server.url, server.port, text,
                                                     (len(tokens) - 1) / rate)
                    await asyncio.to_thread(wait_idle, server.url)
                if run:
                    rows["ws"].append(took)
                    rows["ws_tokens"].append(by_then)
                    rows["http_sentence"].append(sentence)
                    if answer is not None:
                        rows["http_answer"].append(answer)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(parser)
    parser.add_argument("--runs", type=int, default=10, help="runs per answer and way (after one warm-up)")
    parser.add_argument("--rate", type=float, default=30.0, help="LLM speed, tokens per second")
    parser.add_argument("--extra", default="", help="extra server flags, e.g. '--threads 1'")
    args = parser.parse_args()

    server = ServerProcess("--model-path", model_path(args), "--device", args.device, "--dtype", args.dtype,
                           "--max-frames", "400", *args.extra.split())
    load_before = os.getloadavg()
    with server:
        health = httpx.get(server.url + "/health").json()
        results = asyncio.run(measure(server, args.runs, args.rate))
    load_after = os.getloadavg()

    def ms(values: list[float], q: float) -> str:
        return f"{1000 * pct(values, q):.0f}"

    print(f"# bench_ws: {machine()}, model {health['model']['source']} ({health['model']['dtype']}), "
          f"{args.rate:g} tokens/s, {args.runs} runs per row {args.extra}")
    print(f"# load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    print("| answer | way | first audio from the first token, p50 / p95 ms | tokens written by then (p50) |")
    print("|---|---|---:|---:|")
    for name, rows in results.items():
        total, sentence = rows["tokens"][0], rows["sentence_tokens"][0]
        print(f"| {name} ({total} tokens) | WebSocket, token by token | {ms(rows['ws'], 50)} / {ms(rows['ws'], 95)} "
              f"| {pct(rows['ws_tokens'], 50):.0f} |")
        which = "first sentence" if rows["http_answer"] else "the sentence"
        print(f"| {name} | HTTP, {which} once written | {ms(rows['http_sentence'], 50)} / "
              f"{ms(rows['http_sentence'], 95)} | {sentence} |")
        if rows["http_answer"]:
            print(f"| {name} | HTTP, whole answer once written | {ms(rows['http_answer'], 50)} / "
                  f"{ms(rows['http_answer'], 95)} | {total} |")


if __name__ == "__main__":
    main()
