"""The job worker: one job at a time, one segment at a time, only while live speech leaves the engine free.

Priority: with continuous batching a job sentence takes a batch row that no live job wants, and yields it
(stopped within one step, made again later from its start) when every row is taken and live speech waits; with
static batching it starts only while no live speech is in flight and yields the moment some arrives. Either way
a live request never waits for job work. Seams: segments are generated with the streaming
decoder and joined sample-exact, with `pause_ms` of silence between them (the decoder is causal: no crossfade
is needed). A failed segment is retried (`ATTEMPTS` in all) and then reported in the job, never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import wave
from typing import Any

from ..audio import FORMATS, AudioPipeline
from ..catalog import SAMPLE_RATE
from ..engine import acollect
from ..settings import SamplingSettings
from ..speech.service import SpeechService
from .storage import S3Target, S3Uploader
from .store import JobStore

log = logging.getLogger("qwen_stream.jobs")

ATTEMPTS = 3
SWEEP_SECONDS = 60.0  # how often expired results are looked for
IDLE_POLL = 0.05  # seconds between looks at whether live speech left the engine


class JobWorker:
    def __init__(self, store: JobStore, speech: SpeechService, ttl_seconds: float, uploader: S3Uploader):
        self.store = store
        self.uploader = uploader
        self.speech = speech
        self.ttl_seconds = ttl_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running: tuple[str, asyncio.Task] | None = None  # the job in progress and its task
        self.preempted = 0  # job sentences stopped and redone because live speech needed the engine

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        """Stops at once; a running job stays `running` and resumes at its unfinished segment on restart."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> bool:
        """Stops the job if it is the one running (within one frame step of its sentence)."""
        if self._running is not None and self._running[0] == job_id:
            self._running[1].cancel()
            return True
        return False

    async def _loop(self) -> None:
        while True:
            self._sweep()
            job_id = self.store.next_pending()
            if job_id is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), SWEEP_SECONDS)
                continue
            task = asyncio.ensure_future(self._run(job_id))
            self._running = (job_id, task)
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if not task.cancelled():  # the worker itself is stopping
                    task.cancel()
                    raise
                self.store.set_status(job_id, "cancelled")
            except Exception as error:  # a bug in one job must not end the worker
                log.exception("job %s failed", job_id)
                self.store.set_status(job_id, "failed", f"{type(error).__name__}: {error}")
            finally:
                self._running = None

    def _sweep(self) -> None:
        for job_id in self.store.expired(self.ttl_seconds):
            self.store.delete(job_id)

    async def _run(self, job_id: str) -> None:
        record = self.store.get(job_id)
        if record is None:
            return
        self.store.set_status(job_id, "running")
        spec = record.spec
        for segment in record.segments:
            if segment.status == "done":
                continue
            await self._segment(job_id, segment.index, spec["segments"][segment.index], spec, segment.attempts)
        record = self.store.get(job_id)
        assert record is not None
        failed = [s for s in record.segments if s.status != "done"]
        if failed:
            detail = "; ".join(f"segment {s.index}: {s.error}" for s in failed)
            self.store.set_status(job_id, "failed", detail)
            return
        audio = await asyncio.to_thread(self._assemble, job_id, len(record.segments), spec)
        url = None
        if (s3 := spec.get("output", {}).get("s3")) is not None:
            target = S3Target(
                s3["bucket"], s3.get("key") or f"qwen-stream/{job_id}.{spec['output_format']}", s3["expires"]
            )
            media_type = FORMATS[spec["output_format"]].media_type
            try:
                url = await asyncio.to_thread(self.uploader.upload, audio, target, media_type)
            except Exception as error:  # the job's output did not arrive where it was asked to: it failed
                self.store.set_status(job_id, "failed", f"upload to s3://{target.bucket}/{target.key} failed: {error}")
                return
        self.store.finish(job_id, audio, spec["output_format"], url)
        log.info("job %s done: %d segments, %d bytes", job_id, len(record.segments), len(audio))

    async def _segment(self, job_id: str, index: int, seg: dict[str, Any], spec: dict[str, Any], tried: int) -> None:
        for attempt in range(tried + 1, ATTEMPTS + 1):
            try:
                pcm = await self._speak(seg, spec)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                final = attempt == ATTEMPTS
                log.warning("job %s segment %d attempt %d failed: %s", job_id, index, attempt, error)
                self.store.segment_failed(job_id, index, f"{type(error).__name__}: {error}", attempt, final)
                continue
            self.store.segment_done(job_id, index, pcm)
            return

    async def _speak(self, seg: dict[str, Any], spec: dict[str, Any]) -> bytes:
        speaker = await self.speech.speaker(seg.get("voice"), seg.get("instruct"), seg.get("language") or "Auto")
        sampling = spec.get("sampling")
        requests = await self.speech.requests_for(
            seg["text"],
            speaker,
            spec["normalize"],
            spec.get("max_new_tokens"),
            None if sampling is None else SamplingSettings(**sampling),
        )
        pcm = bytearray()
        for request in requests:
            while True:
                await self._spare_capacity()
                sentence = asyncio.ensure_future(self._sentence(request))
                while not sentence.done() and not self._live_waiting():
                    await asyncio.wait({sentence}, timeout=IDLE_POLL)
                if sentence.done():
                    pcm += sentence.result()  # raises the sentence's error
                    break
                # Live speech arrived: the sentence yields the engine at once (its cancel takes one frame step)
                # and is made again from its start later; its partial audio is dropped, so no seam is left.
                sentence.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sentence
                self.preempted += 1
        return bytes(pcm)

    async def _sentence(self, request) -> bytes:
        pcm, _ = await acollect(self.speech.engine.astream(request))  # raises the job's error; leaving cancels it
        return pcm

    def _live_waiting(self) -> bool:
        """Whether live speech needs what the job's sentence holds. With continuous batching, only when every
        batch row is taken and a job waits for one; with static batching, whenever live speech is in flight
        (its utterance would wait behind the job's sentence)."""
        engine = self.speech.engine
        if engine.settings.engine == "continuous":
            return engine.waiting > 0 and engine.load.live_rows >= engine.settings.max_batch
        queues = self.speech.queues
        return bool(queues.active or queues.waiting)

    def _spare(self) -> bool:
        """Whether a job sentence may start: a batch row no live job wants (continuous), or no live speech at all."""
        engine = self.speech.engine
        if engine.settings.engine == "continuous":
            return engine.waiting == 0 and engine.load.live_rows < engine.settings.max_batch
        queues = self.speech.queues
        return not (queues.active or queues.waiting)

    async def _spare_capacity(self) -> None:
        while not self._spare():
            await asyncio.sleep(IDLE_POLL)

    def _assemble(self, job_id: str, segments: int, spec: dict[str, Any]) -> bytes:
        """The segments joined sample-exact with the pause between them, encoded in the job's format."""
        pause = b"\0\0" * (SAMPLE_RATE * int(spec["pause_ms"]) // 1000)
        if spec["output_format"] == "wav":  # a file, not a stream: its header states the real length
            pcm = pause.join(self.store.segment_path(job_id, i).read_bytes() for i in range(segments))
            file = io.BytesIO()
            with wave.open(file, "wb") as wav:
                wav.setnchannels(1)
                wav.setsampwidth(2)
                wav.setframerate(SAMPLE_RATE)
                wav.writeframes(pcm)
            return file.getvalue()
        pipeline = AudioPipeline(FORMATS[spec["output_format"]].at(spec.get("sample_rate")))
        try:
            out = bytearray()
            for index in range(segments):
                if index:
                    out += pipeline.push(pause)
                out += pipeline.push(self.store.segment_path(job_id, index).read_bytes())
            out += pipeline.finish()
        finally:
            pipeline.close()
        return bytes(out)
