"""GET /v1/tts/websocket (Cartesia's context protocol) on a real uvicorn server, with the `websockets` library
as the client: text in pieces, several contexts in order, cancel, disconnect, output formats, bad input, auth."""

from __future__ import annotations

import asyncio
import base64
import json

import httpx
import numpy as np
import pytest
import websockets

from qwen_stream.config import ServerSettings
from qwen_stream.raw_audio import RawConverter, RawFormat
from qwen_stream.settings import BYTES_PER_FRAME, FrameBudget
from tests.live_server import LiveServer

MAX_FRAMES = 60


def expected_bytes(*sentences: str) -> int:
    """What the server speaks for these sentences: each runs to its frame budget (random weights: no EOS)."""
    return sum(FrameBudget(max_frames=MAX_FRAMES).for_text(s) for s in sentences) * BYTES_PER_FRAME
KEY = "ws-key-4321"


@pytest.fixture(scope="module")
def server(custom_voice_dir):
    live = LiveServer(ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=MAX_FRAMES)).start()
    yield live
    live.stop()


@pytest.fixture
def live(server):
    yield server
    assert server.wait_idle(), "work left running after the test"


def url(server, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "/v1/tts/websocket" + query


def steps(server) -> int:
    return server.backend.engine.model.tap.steps


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 120))


def message(context_id: str, transcript: str, more: bool, **extra) -> str:
    return json.dumps({"context_id": context_id, "transcript": transcript, "continue": more, "voice": {"mode": "id", "id": "Ryan"},
                       "language": "en", **extra})


async def until_done(ws, context_id: str) -> tuple[bytes, list[dict]]:
    """Audio of one context and every message seen meanwhile (any context), up to its done or error."""
    audio, seen = bytearray(), []
    while True:
        reply = json.loads(await ws.recv())
        seen.append(reply)
        if reply.get("context_id") != context_id:
            continue
        if reply["type"] == "chunk":
            audio += base64.b64decode(reply["data"])
        elif reply["type"] in ("done", "error"):
            return bytes(audio), seen


def test_text_in_pieces_is_spoken_as_units_complete_and_the_first_audio_comes_before_the_rest(live):
    async def main():
        async with websockets.connect(url(live)) as ws:
            await ws.send(message("turn", "First sentence here.", True))
            await ws.send(message("turn", " Second one", True))
            # The word after the period proves the first sentence ended: its audio starts while the turn's text
            # is still coming.
            first = json.loads(await ws.recv())
            assert first["type"] == "chunk" and first["context_id"] == "turn" and not first["done"]
            await ws.send(message("turn", ", and the end.", False))
            audio, seen = await until_done(ws, "turn")
            assert seen[-1] == {"type": "done", "context_id": "turn", "done": True, "status_code": 200}
            return len(base64.b64decode(first["data"])) + len(audio)

    # Two units, each spoken to its frame budget.
    assert run(main()) == expected_bytes("First sentence here.", "Second one, and the end.")


def test_contexts_of_one_socket_play_in_the_order_they_were_opened(live):
    async def main():
        async with websockets.connect(url(live)) as ws:
            await ws.send(message("a", "One.", False))
            await ws.send(message("b", "Two.", False))
            order = []
            done = set()
            while done != {"a", "b"}:
                reply = json.loads(await ws.recv())
                order.append(reply["context_id"])
                if reply["type"] == "done":
                    done.add(reply["context_id"])
            return order

    order = run(main())
    assert order == sorted(order) and order.count("a") > 1 and order.count("b") > 1  # every a before any b


def test_cancel_stops_the_engine_within_a_step_and_the_socket_goes_on(live):
    async def main():
        async with websockets.connect(url(live)) as ws:
            await ws.send(message("long", "This sentence would go on for a long time.", False))
            reply = json.loads(await ws.recv())
            assert reply["type"] == "chunk"
            await ws.send(json.dumps({"context_id": "long", "cancel": True}))
            assert await asyncio.to_thread(live.wait_idle, 30)
            before = steps(live)
            await asyncio.sleep(0.3)
            assert steps(live) == before  # the engine stopped
            # Chunks already on their way may still arrive, never a done; the next context works.
            await ws.send(message("next", "Again.", False))
            audio, seen = await until_done(ws, "next")
            assert not any(m.get("context_id") == "long" and m["type"] == "done" for m in seen)
            assert len(audio) == expected_bytes("Again.")

    run(main())


def test_closing_the_socket_cancels_its_contexts(live):
    async def main():
        async with websockets.connect(url(live)) as ws:
            await ws.send(message("x", "Talk until the socket closes.", False))
            await ws.send(message("y", "Never spoken.", False))
            assert json.loads(await ws.recv())["type"] == "chunk"
        before = steps(live)
        assert await asyncio.to_thread(live.wait_idle, 30)
        return before

    before = run(main())
    assert steps(live) - before <= 2 * MAX_FRAMES  # x stopped early, y never ran to its cap


@pytest.mark.parametrize("encoding, rate", [("pcm_mulaw", 8000), ("pcm_alaw", 8000), ("pcm_f32le", 24000),
                                            ("pcm_s16le", 16000)])
def test_output_formats_match_the_server_side_conversion_of_the_same_audio(live, encoding, rate):
    async def main():
        async with websockets.connect(url(live)) as ws:
            fmt = {"container": "raw", "encoding": encoding, "sample_rate": rate}
            await ws.send(message("f", "Format test.", False, output_format=fmt))
            chunks = []
            while True:
                reply = json.loads(await ws.recv())
                if reply["type"] == "chunk":
                    chunks.append(base64.b64decode(reply["data"]))
                else:
                    return b"".join(chunks)

    audio = run(main())
    fmt = RawFormat(encoding, rate)
    samples = len(audio) // fmt.bytes_per_sample
    expected = expected_bytes("Format test.") // 2 * rate / 24000
    assert abs(samples - expected) <= 2  # every sample at the asked rate, the resampler's tail included


def test_bad_messages_get_an_error_and_the_socket_stays_usable(live):
    async def main():
        async with websockets.connect(url(live)) as ws:
            errors = []
            for bad in ("not json", json.dumps({"transcript": "no context"}), json.dumps([1, 2]),
                        message("v", "Hi.", False, voice={"mode": "id", "id": "Nobody"}),
                        message("o", "Hi.", False, output_format={"container": "raw", "encoding": "mp3"}),
                        message("l", "Hi.", False, language="Elvish"),
                        message("t", "x" * 100_001, False)):
                await ws.send(bad)
                errors.append(json.loads(await ws.recv()))
            await ws.send(b"\x00\x01")
            errors.append(json.loads(await ws.recv()))
            await ws.send(message("ok", "Still here.", False))
            audio, _ = await until_done(ws, "ok")
            return errors, audio

    errors, audio = run(main())
    assert all(e["type"] == "error" and e["done"] and e["status_code"] == 400 for e in errors)
    assert [e["code"] for e in errors] == ["invalid_request", "invalid_request", "invalid_request", "unknown_voice",
                                           "invalid_output_format", "unknown_language", "invalid_request",
                                           "invalid_message"]
    assert errors[3]["context_id"] == "v" and errors[4]["context_id"] == "o"
    assert len(audio) == expected_bytes("Still here.")


def test_text_after_the_last_piece_is_an_error_for_that_context(live):
    async def main():
        async with websockets.connect(url(live)) as ws:
            await ws.send(message("c", "Done now.", False))
            await ws.send(message("c", "More?", True))
            seen = []
            while not any(m["type"] == "done" for m in seen):
                seen.append(json.loads(await ws.recv()))
            return [m for m in seen if m["type"] == "error"]

    [error] = run(main())
    assert error["code"] == "context_closed" and error["context_id"] == "c"


# top-k 1 in both samplers picks the most likely token every time: the audio is fixed by the settings alone.
FIXED = {"top_k": 1, "subtalker_top_k": 1}


def test_a_turns_own_sampling_decides_its_audio_as_on_tts_stream(live):
    """The sampling fields of /tts/stream on a turn's first message: with settings that fix every token, the
    turn's audio is the HTTP stream's for the same text and settings, and differs without them. Out-of-range
    values are refused before the turn opens, and a later message that changes them is refused whole (its text
    is not spoken), the turn going on."""
    text = "The settings decide this sentence."

    def streamed(words: str) -> bytes:
        reply = httpx.post(live.url + "/tts/stream", json={"text": words, "voice": "Ryan", **FIXED}, timeout=120)
        assert reply.status_code == 200
        return reply.content

    async def main():
        async with websockets.connect(url(live)) as ws:
            await ws.send(message("fixed", text, False, **FIXED))
            fixed, _ = await until_done(ws, "fixed")
            await ws.send(message("free", text, False))
            free, _ = await until_done(ws, "free")
            before = steps(live)
            await ws.send(message("hot", text, False, temperature=11))
            _, hot = await until_done(ws, "hot")
            refused_steps = steps(live) - before
            await ws.send(message("turn", "First part,", True, **FIXED))
            await ws.send(message("turn", "", True, top_k=1))  # repeating some of them is fine
            await ws.send(message("turn", " said twice?", False, top_k=5))
            _, changed = await until_done(ws, "turn")
            await ws.send(message("turn", " then more.", False))
            turn, _ = await until_done(ws, "turn")
            return fixed, free, hot[-1], refused_steps, changed[-1], turn

    fixed, free, hot, refused_steps, changed, turn = run(main())
    assert fixed == streamed(text) and free != fixed
    assert hot["type"] == "error" and hot["code"] == "invalid_params" and "temperature" in hot["message"]
    assert refused_steps == 0
    assert changed["type"] == "error" and changed["code"] == "invalid_params" and changed["context_id"] == "turn"
    assert changed["message"].endswith("first message: top_k")
    assert turn == streamed("First part, then more.")


def test_api_key_in_a_header_or_the_query(custom_voice_dir):
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=4, api_key=KEY)
    locked = LiveServer(settings).start()
    try:
        async def main():
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                async with websockets.connect(url(locked)):
                    pass
            # The handshake is refused before it is accepted; uvicorn answers that with 403.
            assert refused.value.response.status_code == 403
            for target, headers in ((url(locked), {"Authorization": f"Bearer {KEY}"}), (url(locked, f"?api_key={KEY}"), {})):
                async with websockets.connect(target, additional_headers=headers) as ws:
                    await ws.send(message("k", "Key.", False))
                    audio, _ = await until_done(ws, "k")
                    assert len(audio) == 4 * BYTES_PER_FRAME  # the server's cap: 4 frames

        run(main())
    finally:
        locked.stop()


def test_mulaw_and_alaw_encode_every_sample_as_the_reference_does():
    audioop = pytest.importorskip("audioop")  # the reference C code, in the standard library up to 3.12
    from qwen_stream.raw_audio import linear_to_alaw, linear_to_mulaw

    every = np.arange(-32768, 32768, dtype=np.int16)
    assert linear_to_mulaw(every).tobytes() == audioop.lin2ulaw(every.tobytes(), 2)
    assert linear_to_alaw(every).tobytes() == audioop.lin2alaw(every.tobytes(), 2)


def test_resampling_chunk_by_chunk_equals_resampling_the_whole():
    rng = np.random.default_rng(7)
    pcm = (np.sin(np.arange(48_000) * 2 * np.pi * 440 / 24_000) * 12_000 + rng.normal(0, 300, 48_000)).astype("<i2")
    whole = RawConverter(RawFormat("pcm_f32le", 8000))
    one = whole.push(pcm.tobytes()) + whole.finish()
    chunked = RawConverter(RawFormat("pcm_f32le", 8000))
    pieces = [chunked.push(pcm[i:i + 1920].tobytes()) for i in range(0, len(pcm), 1920)] + [chunked.finish()]
    a, b = np.frombuffer(one, "<f4"), np.frombuffer(b"".join(pieces), "<f4")
    assert len(a) == len(b) == 16_000
    assert np.max(np.abs(a - b)) < 1e-5  # no seam at the 80 ms chunk borders


def test_flush_speaks_the_buffered_text_and_is_acknowledged_after_its_audio(live):
    async def main():
        async with websockets.connect(url(live)) as ws:
            await ws.send(message("fl", "Hello there", True, flush=True))  # no end mark: only the flush speaks it
            before = bytearray()
            while True:
                reply = json.loads(await ws.recv())
                if reply["type"] == "flush_done":
                    break
                before += base64.b64decode(reply["data"])
            await ws.send(message("fl", "Bye.", False))
            after, seen = await until_done(ws, "fl")
            return bytes(before), reply, after

    before, ack, after = run(main())
    assert ack == {"type": "flush_done", "context_id": "fl", "flush_id": 1, "flush_done": True, "done": False,
                   "status_code": 206}
    assert len(before) == expected_bytes("Hello there") and len(after) == expected_bytes("Bye.")


def test_timestamps_place_each_spoken_unit_in_the_context_audio(live):
    first, second = "The first sentence.", "And a second one."

    async def main():
        async with websockets.connect(url(live)) as ws:
            await ws.send(message("ts", f"{first} {second}", False, add_timestamps=True))
            _, seen = await until_done(ws, "ts")
            return [m["word_timestamps"] for m in seen if m["type"] == "timestamps"]

    stamps = run(main())
    seconds = [expected_bytes(text) / 48_000 for text in (first, second)]
    assert [s["words"] for s in stamps] == [[first], [second]]
    assert stamps[0]["start"] == [0.0] and stamps[0]["end"] == [pytest.approx(seconds[0], abs=1e-3)]
    assert stamps[1]["start"] == stamps[0]["end"]
    assert stamps[1]["end"] == [pytest.approx(sum(seconds), abs=1e-3)]


def test_numbers_and_abbreviations_split_across_pieces_are_spoken_whole(live):
    pieces = ["It costs $1", ",000", ".50 today, says Mr", ". Smith of the U", ".S. office. Next", " one."]

    async def main():
        async with websockets.connect(url(live)) as ws:
            for i, piece in enumerate(pieces):
                await ws.send(message("n", piece, i < len(pieces) - 1, add_timestamps=True))
            _, seen = await until_done(ws, "n")
            return [m["word_timestamps"]["words"][0] for m in seen if m["type"] == "timestamps"]

    assert run(main()) == ["It costs $1,000.50 today, says Mr. Smith of the U.S. office.", "Next one."]


def test_a_flood_of_small_messages_is_taken_in_order_and_the_socket_stays_usable(live):
    words = [f" w{i}" for i in range(150)]

    async def main():
        async with websockets.connect(url(live)) as ws:
            for word in words:  # no waiting between them: as fast as the socket takes them
                await ws.send(message("flood", word, True, add_timestamps=True))  # read from the first
            await ws.send(message("flood", ".", False, add_timestamps=True))
            audio, seen = await until_done(ws, "flood")
            units = [m["word_timestamps"]["words"][0] for m in seen if m["type"] == "timestamps"]
            await ws.send(message("after", "Still here.", False))
            after, _ = await until_done(ws, "after")
            return units, after

    units, after = run(main())
    assert " ".join(units).replace(" .", ".") == "".join(words).strip() + "."  # every word, in order, once
    assert len(after) == expected_bytes("Still here.")


def test_the_clause_threshold_is_tunable_per_context(live):
    text = "Right after the long opening clause, the rest follows."

    async def units(extra: dict) -> list[str]:
        async with websockets.connect(url(live)) as ws:
            await ws.send(message("c", text, False, add_timestamps=True, **extra))
            _, seen = await until_done(ws, "c")
            return [m["word_timestamps"]["words"][0] for m in seen if m["type"] == "timestamps"]

    assert run(units({})) == [text]  # 35 characters before the comma: under the default 60
    assert run(units({"min_clause_chars": 20})) == ["Right after the long opening clause,", "the rest follows."]
