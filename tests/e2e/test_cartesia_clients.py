"""The clients voice agents really use, against a real server (docs/websocket.md, docs/clients.md): the official
`cartesia` SDK's WebSocket client pointed at us with `websocket_base_url`, and Pipecat's CartesiaTTSService with
its `url` pointed at us, in a pipeline. Text in pieces is spoken and ends with done; their cancel (the SDK's
`context.cancel()`, Pipecat's interruption) stops our engine; errors reach them in the shape they read. The
server requires a key, sent as each client sends it (the SDK: `Authorization: Bearer`; Pipecat: `X-API-Key`)."""

from __future__ import annotations

import asyncio
import json

import pytest

from qwen_stream.config import ServerSettings
from qwen_stream.settings import BYTES_PER_FRAME, FRAME_SECONDS, FrameBudget
from tests.live_server import LiveServer

cartesia = pytest.importorskip("cartesia")
pytest.importorskip("pipecat.services.cartesia.tts")

from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    ErrorFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    TTSTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.task import PipelineParams, PipelineTask  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.services.cartesia.tts import CartesiaTTSService  # noqa: E402
from pipecat.services.tts_service import TextAggregationMode  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

MAX_FRAMES = 30  # every unit runs to it: short tests; LONG's cancel lands far before its end
KEY = "agents-key-2468"
VOICE = {"mode": "id", "id": "Ryan"}
PCM16 = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 24000}
LONG = "This sentence would go on for a long time, much longer than the first audio."


def frames(*units: str) -> int:
    """Frames the server speaks for these units: each runs to its frame budget (random weights: no EOS)."""
    return sum(FrameBudget(max_frames=MAX_FRAMES).for_text(unit) for unit in units)


@pytest.fixture(scope="module")
def server(custom_voice_dir):
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=MAX_FRAMES, api_key=KEY)
    live = LiveServer(settings).start()
    yield live
    live.stop()


@pytest.fixture
def live(server):
    yield server
    assert server.wait_idle(), "work left running after the test"


def ws_base(live) -> str:
    return live.url.replace("http://", "ws://")


def steps(live) -> int:
    return live.backend.engine.model.tap.steps


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 120))


async def engine_stopped(live) -> None:
    """The engine went idle and stays so: no frame step after the cancel settled."""
    assert await asyncio.to_thread(live.wait_idle, 30)
    before = steps(live)
    await asyncio.sleep(0.3)
    assert steps(live) == before


# The cartesia SDK.


def sdk_client(live, path: str = ""):
    # websocket_base_url is the SDK's knob for the socket (base_url alone would become wss://); it appends
    # /tts/websocket, which the server serves as well as /v1/tts/websocket.
    return cartesia.AsyncCartesia(api_key=KEY, websocket_base_url=ws_base(live) + path)


def test_sdk_context_with_continued_text_is_spoken_with_timestamps_and_done(live):
    async def main():
        async with sdk_client(live).tts.websocket_connect() as connection:
            context = connection.context(
                model_id="sonic-3", voice=VOICE, language="en", output_format=PCM16, add_timestamps=True
            )
            await context.push("First sentence")
            await context.push(" here. Second")
            await context.push(" one")
            await context.no_more_inputs()  # transcript "", continue false
            audio, events = bytearray(), []
            async for event in context.receive():  # the SDK ends this at done or error
                events.append(event)
                if event.type == "chunk":
                    audio += event.audio
            return bytes(audio), events

    audio, events = run(main())
    assert [e.type for e in events if e.type != "chunk"] == ["timestamps", "timestamps", "done"]
    assert len(audio) == frames("First sentence here.", "Second one") * BYTES_PER_FRAME
    stamps = [e.word_timestamps for e in events if e.type == "timestamps"]
    assert [s.words for s in stamps] == [["First sentence here."], ["Second one"]]
    assert stamps[0].start == [0.0] and stamps[1].start == stamps[0].end
    assert stamps[1].end == [round(frames("First sentence here.", "Second one") * FRAME_SECONDS, 3)]


def test_sdk_v2_style_send_gets_its_default_float_format_and_errors_as_exceptions(live):
    async def main():
        connection = await sdk_client(live, "/v1").tts.websocket()  # the /v1 path, through the v2-style wrapper
        try:
            # The SDK's own default format: 32-bit float at 44.1 kHz.
            output = await connection.send(
                model_id="sonic-3",
                transcript="Hello there.",
                voice=VOICE,
                output_format={"container": "raw", "encoding": "pcm_f32le", "sample_rate": 44100},
                language="en",
                stream=False,
            )
            with pytest.raises(RuntimeError, match="unknown voice 'Nobody'"):
                await connection.send(
                    model_id="sonic-3",
                    transcript="Hi.",
                    voice={"mode": "id", "id": "Nobody"},
                    output_format=PCM16,
                    stream=False,
                )
            return output
        finally:
            await connection.close()

    output = run(main())
    seconds = frames("Hello there.") * FRAME_SECONDS
    assert len(output.audio) % 4 == 0 and abs(len(output.audio) / 4 - seconds * 44100) < 0.01 * 44100


def test_sdk_error_event_has_the_fields_the_sdk_reads(live):
    async def main():
        async with sdk_client(live).tts.websocket_connect() as connection:
            context = connection.context(model_id="sonic-3", voice=VOICE, language="xx", output_format=PCM16)
            await context.push("Hi.", continue_=False)
            return [event async for event in context.receive()]

    (event,) = run(main())
    assert event.type == "error" and event.error_code == "unknown_language" and event.status_code == 400
    assert "xx" in event.message and event.error.startswith("Unknown language: ")


def test_sdk_cancel_stops_the_engine_and_the_connection_goes_on(live):
    async def main():
        async with sdk_client(live).tts.websocket_connect(extra_query={"client_id": "room-7"}) as connection:
            context = connection.context(model_id="sonic-3", voice=VOICE, language="en", output_format=PCM16)
            await context.push(LONG, continue_=False)
            async for event in context.receive():
                assert event.type == "chunk"
                break  # the first audio is out: barge in
            start = steps(live)
            await context.cancel()  # {"context_id", "cancel": true}
            await engine_stopped(live)
            assert steps(live) - start < frames(LONG)  # stopped before its end
            after = connection.context(model_id="sonic-3", voice=VOICE, language="en", output_format=PCM16)
            await after.push("Again.", continue_=False)
            audio = bytearray()
            async for event in after.receive():
                assert event.type in ("chunk", "done"), event
                if event.type == "chunk":
                    audio += event.audio
            assert len(audio) == frames("Again.") * BYTES_PER_FRAME

    run(main())


# Pipecat's CartesiaTTSService.


class Collector(FrameProcessor):
    """The end of the pipeline: keeps what the TTS service pushes downstream."""

    def __init__(self):
        super().__init__()
        self.frames: list = []
        self.audio = asyncio.Event()
        self.stopped = asyncio.Event()

    async def process_frame(self, frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            self.frames.append(frame)
            if isinstance(frame, TTSAudioRawFrame):
                self.audio.set()
            elif isinstance(frame, TTSStoppedFrame):
                self.stopped.set()
        await self.push_frame(frame, direction)

    def reset(self) -> None:
        self.frames.clear()
        self.audio.clear()
        self.stopped.clear()

    def pcm(self) -> bytes:
        return b"".join(f.audio for f in self.frames if isinstance(f, TTSAudioRawFrame))

    def of(self, kind) -> list:
        return [f for f in self.frames if isinstance(f, kind)]


class Agent:
    """A minimal Pipecat pipeline: CartesiaTTSService, url pointed at the server, then the collector. Records
    what the service sends on its socket (the client's side only)."""

    def __init__(self, live, mode: TextAggregationMode = TextAggregationMode.SENTENCE):
        self.tts = CartesiaTTSService(
            api_key=KEY,  # sent as X-API-Key, as Cartesia reads it
            url=ws_base(live) + "/tts/websocket?client_id=agent",
            settings=CartesiaTTSService.Settings(voice="Ryan"),
            text_aggregation_mode=mode,
        )
        self.sink = Collector()
        self.sent: list[dict] = []
        self.task = PipelineTask(
            Pipeline([self.tts, self.sink]),
            params=PipelineParams(audio_out_sample_rate=24000),
            idle_timeout_secs=None,
            enable_rtvi=False,
        )
        self._runner = WorkerRunner(handle_sigint=False)
        self._running: asyncio.Future | None = None

    async def __aenter__(self) -> Agent:
        await self._runner.add_workers(self.task)  # pipecat >= 1.3: workers are added before run()
        self._running = asyncio.ensure_future(self._runner.run())
        while self.tts._websocket is None:  # connected once the StartFrame went through
            assert not self._running.done()
            await asyncio.sleep(0.01)
        send = self.tts._websocket.send

        async def recording_send(message, *args, **kwargs):
            self.sent.append(json.loads(message))
            return await send(message, *args, **kwargs)

        self.tts._websocket.send = recording_send
        return self

    async def __aexit__(self, *exc) -> None:
        await self.task.queue_frame(EndFrame())
        assert self._running is not None
        await asyncio.wait_for(self._running, 30)

    async def say(self, *frames_in) -> None:
        for frame in frames_in:
            await self.task.queue_frame(frame)


def test_pipecat_speaks_a_speak_frame_with_its_text_from_the_timestamps(live):
    async def main():
        async with Agent(live) as agent:
            await agent.say(TTSSpeakFrame("Hello there. This is a test."))
            await agent.sink.stopped.wait()
            return agent.sink, agent.sent

    sink, sent = run(main())
    assert len(sink.pcm()) == frames("Hello there.", "This is a test.") * BYTES_PER_FRAME
    assert all(f.sample_rate == 24000 and f.num_channels == 1 for f in sink.of(TTSAudioRawFrame))
    # Pipecat builds its spoken-text frames from our unit timestamps.
    assert [f.text for f in sink.of(TTSTextFrame)] == ["Hello there.", "This is a test."]
    assert not sink.of(ErrorFrame)
    first = sent[0]
    assert first["voice"] == VOICE and first["language"] == "en" and first["add_timestamps"] is True
    assert first["output_format"] == PCM16 and first["continue"] is True
    assert sent[-1]["transcript"] == "" and sent[-1]["continue"] is False  # its flush_audio ends the context


@pytest.mark.parametrize("mode", [TextAggregationMode.SENTENCE, TextAggregationMode.TOKEN])
def test_pipecat_speaks_llm_tokens(live, mode):
    tokens = ["The first", " sentence", " is here.", " And a", " second", " one."]

    async def main():
        async with Agent(live, mode) as agent:
            await agent.say(LLMFullResponseStartFrame(), *(LLMTextFrame(t) for t in tokens), LLMFullResponseEndFrame())
            await agent.sink.stopped.wait()
            return agent.sink, agent.sent

    sink, sent = run(main())
    assert len(sink.pcm()) == frames("The first sentence is here.", "And a second one.") * BYTES_PER_FRAME
    assert " ".join(m["transcript"] for m in sent).split() == "".join(tokens).split()
    assert len({m["context_id"] for m in sent}) == 1 and sent[-1]["continue"] is False
    assert not sink.of(ErrorFrame)


def test_pipecat_interruption_cancels_the_context_and_stops_the_engine(live):
    async def main():
        async with Agent(live) as agent:
            await agent.say(TTSSpeakFrame(LONG))
            await agent.sink.audio.wait()
            start = steps(live)
            await agent.say(InterruptionFrame())
            await engine_stopped(live)
            assert steps(live) - start < frames(LONG)  # stopped before its end
            cancels = [m for m in agent.sent if m.get("cancel")]
            assert cancels == [{"context_id": agent.sent[0]["context_id"], "cancel": True}]
            # The same connection speaks the next turn.
            agent.sink.reset()
            await agent.say(TTSSpeakFrame("Again."))
            await agent.sink.stopped.wait()
            assert len(agent.sink.pcm()) == frames("Again.") * BYTES_PER_FRAME
            assert not agent.sink.of(ErrorFrame)

    run(main())
