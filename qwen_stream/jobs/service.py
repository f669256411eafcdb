"""Long-form jobs: accept (validate everything first, then store), report, serve the result, cancel or remove.

A job's text comes as one `text`, as `segments` of {text, voice?, language?, instruct?}, or as a `script` for
people: one `[Speaker] line` per line, speakers mapped to voices by `voices` (a line without a tag continues
the previous speaker). A long text is split at sentence boundaries by the front end, as speech is."""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass
from typing import Any

from ..audio import FORMATS
from ..catalog import FRAME_SECONDS
from ..settings import SamplingSettings
from ..speech.checks import canonical_language, check_input_text
from ..speech.errors import InvalidRequest, NotFound
from ..speech.service import SpeechService
from ..speech.voice_store import InsufficientStorage
from .storage import MAX_EXPIRES
from .store import JobRecord, JobStore
from .worker import JobWorker

MAX_SEGMENTS = 2000
MAX_JOB_CHARS = 200_000  # all segments together: a few chapters, not a library (the body is parsed at once)
INLINE_AUDIO_BYTES = 4 * 2**20  # results up to this size may come inline, base64, in the job's status
_SCRIPT_LINE = re.compile(r"^\s*\[([^\]\n]{1,64})\]\s*(.*)$")


class JobStorageFull(InsufficientStorage):
    """--jobs-max-gb is reached: no new job until results expire or are deleted (507)."""


@dataclass(frozen=True)
class JobInput:
    """What a client asked for, as the route read it (shapes checked, meaning not yet)."""

    text: str | None
    segments: list[dict[str, Any]] | None
    script: str | None
    voices: dict[str, str]
    voice: str | None
    language: str
    instruct: str | None
    output_format: str
    sample_rate: int | None
    pause_ms: int
    max_new_tokens: int | None
    normalize: bool
    s3: dict[str, Any] | None = None  # {"bucket"?, "key"?, "expires"?}: upload the result there
    sampling: SamplingSettings | None = None  # the job's own settings, laid over the server's


def parse_script(script: str, voices: dict[str, str]) -> list[dict[str, Any]]:
    """`[Speaker] line` per line -> segments; a speaker not in `voices` is taken as a voice id itself."""
    segments: list[dict[str, Any]] = []
    speaker: str | None = None
    for number, line in enumerate(script.splitlines(), 1):
        if not line.strip():
            continue
        match = _SCRIPT_LINE.match(line)
        if match:
            speaker, text = match.group(1).strip(), match.group(2).strip()
        elif speaker is None:
            raise InvalidRequest("invalid_script", f"script line {number}: start with [Speaker] (e.g. [Ana] Hello)")
        else:
            text = line.strip()
        if text:
            segments.append({"text": text, "voice": voices.get(speaker, speaker)})
    return segments


class JobService:
    def __init__(
        self, store: JobStore, worker: JobWorker, speech: SpeechService, max_bytes: int, s3_bucket: str | None = None
    ):
        self.store = store
        self.s3_bucket = s3_bucket
        self.worker = worker
        self.speech = speech
        self.max_bytes = max_bytes

    async def submit(self, job: JobInput) -> JobRecord:
        """Validates every segment as speech would (text, voice, language, instruct), then stores the job.
        Raises InvalidRequest or JobStorageFull; nothing is stored unless all of it is valid."""
        if job.sampling is not None and (problems := job.sampling.problems()):
            raise InvalidRequest("invalid_params", "params: " + "; ".join(problems))
        segments = self._segments(job)
        if job.output_format not in FORMATS:
            raise InvalidRequest("invalid_format", f"output_format must be one of {', '.join(FORMATS)}")
        try:
            FORMATS[job.output_format].at(job.sample_rate)
        except ValueError as e:
            raise InvalidRequest("invalid_sample_rate", str(e)) from e
        total = sum(len(seg["text"]) for seg in segments)
        if total > MAX_JOB_CHARS:
            raise InvalidRequest("text_too_long", f"the job has {total} characters; the limit is {MAX_JOB_CHARS}")
        for index, seg in enumerate(segments):
            try:
                check_input_text(seg["text"], MAX_JOB_CHARS)
                speaker = await self.speech.speaker(seg["voice"], seg.get("instruct"), seg["language"])
                if not await self.speech.requests_for(seg["text"], speaker, job.normalize, sampling=job.sampling):
                    raise InvalidRequest("empty_text", "nothing to speak")
            except InvalidRequest as e:
                raise InvalidRequest(e.code, f"segment {index}: {e}") from e
        output = {} if job.s3 is None else {"s3": self._s3_target(job.s3)}
        if await self._disk_bytes() >= self.max_bytes:
            raise JobStorageFull(
                "the job store is full (--jobs-max-gb); delete finished jobs or wait for them to expire"
            )
        spec = {
            "segments": segments,
            "output_format": job.output_format,
            "sample_rate": job.sample_rate,
            "pause_ms": job.pause_ms,
            "max_new_tokens": job.max_new_tokens,
            "sampling": None if job.sampling is None else job.sampling.overrides(),
            "normalize": job.normalize,
            "output": output,
        }
        record = self.store.create(spec, len(segments))
        self.worker.wake()
        return record

    def _s3_target(self, s3: dict[str, Any]) -> dict[str, Any]:
        bucket = s3.get("bucket") or self.s3_bucket
        if not bucket:
            raise InvalidRequest("invalid_request", "output.s3 needs a bucket (or the server's S3_BUCKET)")
        expires = int(s3.get("expires") or 3600)
        if not 1 <= expires <= MAX_EXPIRES:
            raise InvalidRequest("invalid_request", f"output.s3.expires: 1 to {MAX_EXPIRES} seconds")
        return {"bucket": bucket, "key": s3.get("key"), "expires": expires}

    def _segments(self, job: JobInput) -> list[dict[str, Any]]:
        given = [x for x in (job.text, job.segments, job.script) if x is not None]
        if len(given) != 1:
            raise InvalidRequest("invalid_request", "give exactly one of text, segments or script")
        if job.text is not None:
            raw = [{"text": job.text}]
        elif job.script is not None:
            raw = parse_script(job.script, job.voices)
        else:
            raw = list(job.segments or [])
        if not raw:
            raise InvalidRequest("empty_text", "the job has nothing to speak")
        if len(raw) > MAX_SEGMENTS:
            raise InvalidRequest("too_many_segments", f"at most {MAX_SEGMENTS} segments per job")
        language = canonical_language(job.language)
        return [
            {
                "text": seg["text"],
                "voice": seg.get("voice") or job.voice,
                "language": canonical_language(seg.get("language") or language),
                "instruct": seg.get("instruct") or job.instruct,
            }
            for seg in raw
        ]

    async def _disk_bytes(self) -> int:
        return await asyncio.to_thread(self.store.disk_bytes)

    def get(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id)
        if record is None:
            raise NotFound(f"no job {job_id!r}")
        return record

    def result(self, job_id: str) -> tuple[JobRecord, Any]:
        record = self.get(job_id)
        if record.status != "done":
            raise InvalidRequest("not_done", f"job {job_id} is {record.status}; its audio exists once it is done")
        return record, self.store.result_path(job_id, record.spec["output_format"])

    def delete(self, job_id: str) -> str:
        """A queued or running job is cancelled (its record stays); a finished one is removed with its audio."""
        record = self.get(job_id)
        if record.status in ("queued", "running"):
            if not self.worker.cancel(job_id):
                self.store.set_status(job_id, "cancelled")
            return "cancelled"
        self.store.delete(job_id)
        return "deleted"

    def public(self, record: JobRecord, include_audio: bool = False) -> dict[str, Any]:
        """The job's status; with `include_audio`, a finished result up to INLINE_AUDIO_BYTES inline as base64."""
        done = [s for s in record.segments if s.status == "done"]
        body: dict[str, Any] = {
            "id": record.id,
            "status": record.status,
            "created": record.created,
            "finished": record.finished,
            "output_format": record.spec["output_format"],
            "progress": {
                "segments_done": len(done),
                "segments_total": len(record.segments),
                "audio_seconds_done": round(sum(s.frames for s in done) * FRAME_SECONDS, 2),
            },
            "errors": [
                {"segment": s.index, "error": s.error, "attempts": s.attempts} for s in record.segments if s.error
            ],
        }
        if record.error:
            body["error"] = record.error
        if record.status == "done":
            body["audio_url"] = f"/v1/audio/jobs/{record.id}/audio"
            if record.result_url is not None:
                body["s3_url"] = record.result_url  # presigned: downloads without credentials until it expires
            body["audio_bytes"] = record.result_bytes
            if include_audio and record.result_bytes <= INLINE_AUDIO_BYTES:
                path = self.store.result_path(record.id, record.spec["output_format"])
                body["audio_base64"] = base64.b64encode(path.read_bytes()).decode("ascii")
        return body
