"""python -m qwen_stream.serverless: a worker for scale-to-zero GPU platforms (the `runpod` SDK).

Input, exactly the platform's schema: {"input": {"text" | "segments", "voice", "model", "output_format",
"params"}}. Output: {"audio_base64" | "audio_url", "metadata": {duration_seconds, sample_rate, format,
num_segments, generation_time_seconds}}, or {"error": message, "code": ...}. The models load once per warm
worker; each request runs as a long-form job (jobs/), so the same validation, seams and S3 upload apply.

Models: `QWEN_TTS_MODEL_DIR` holding checkpoints named as released (`Qwen3-TTS-12Hz-1.7B-CustomVoice/`,
`...-Base/`, `...-VoiceDesign/`) is served as found; otherwise the server's own settings (QWEN_STREAM_*
variables) apply. With S3_BUCKET set, results are uploaded and `audio_url` (presigned) is returned.
`python -m qwen_stream.serverless --test_input '{"input": {...}}'` runs one request locally (runpod's mode).
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .api.jobs import JobParams
from .audio import FORMATS
from .catalog import FRAME_SECONDS, SAMPLE_RATE, family_of_hub_name
from .config import ServerSettings, load_settings
from .inprocess import InProcessServer
from .jobs.service import JobInput
from .speech.errors import InvalidRequest, NotFound

_CHECKPOINT_NAME = re.compile(r"^Qwen3-TTS-12Hz-(0\.6B|1\.7B)-(CustomVoice|VoiceDesign|Base)$")
INPUT_KEYS = {"text", "segments", "voice", "model", "output_format", "params", "language", "pause_ms"}
POLL = 0.05


def models_in(directory: Path) -> str | None:
    """A directory of released checkpoints -> --models ("custom_voice=/m/Qwen3-TTS-12Hz-1.7B-CustomVoice,...");
    the larger size wins where both are present; CustomVoice first (the default voice)."""
    found: dict[str, tuple[str, Path]] = {}
    for path in sorted(directory.iterdir()) if directory.is_dir() else ():
        match = _CHECKPOINT_NAME.match(path.name)
        if match and path.is_dir():
            family = family_of_hub_name(match.group(2))
            if family not in found or match.group(1) > found[family][0]:
                found[family] = (match.group(1), path)
    order = sorted(found, key=lambda f: ("custom_voice", "voice_design", "base").index(f))
    return ",".join(f"{family}={found[family][1]}" for family in order) or None


def worker_settings(environ: dict[str, str] | None = None) -> ServerSettings:
    environ = dict(os.environ if environ is None else environ)
    settings = load_settings([], environ)
    model_dir = environ.get("QWEN_TTS_MODEL_DIR")
    if model_dir:
        models = models_in(Path(model_dir))
        if models is None:
            raise ValueError(f"QWEN_TTS_MODEL_DIR={model_dir}: no Qwen3-TTS-12Hz-<size>-<family> checkpoints in it")
        settings = _replace(settings, models=models, model_path=None)
    if settings.jobs_dir is None:  # a worker's jobs live as long as the worker
        settings = _replace(settings, jobs_dir=tempfile.mkdtemp(prefix="qwen-stream-serverless-"))
    return settings


def _replace(settings: ServerSettings, **changes: Any) -> ServerSettings:
    import dataclasses

    return dataclasses.replace(settings, **changes)


class Worker(InProcessServer):
    """The serverless handler over the loaded server; `handle` is called from any thread."""

    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.run(self._handle(event))
        except InvalidRequest as e:
            return {"error": str(e), "code": e.code}

    async def _handle(self, event: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        job = self._job_input(event)
        jobs = self.server.jobs
        record = await jobs.submit(job)
        while (record := jobs.get(record.id)).status not in ("done", "failed", "cancelled"):
            await asyncio.sleep(POLL)
        if record.status != "done":
            return {"error": record.error or f"the job was {record.status}", "code": "generation_failed"}
        fmt = FORMATS[job.output_format]
        frames = sum(s.frames for s in record.segments)
        pauses = (len(record.segments) - 1) * job.pause_ms / 1000
        result: dict[str, Any] = {
            "metadata": {
                "duration_seconds": round(frames * FRAME_SECONDS + pauses, 3),
                "sample_rate": fmt.sample_rate if fmt.name in ("mulaw", "alaw") else SAMPLE_RATE,
                "format": job.output_format,
                "num_segments": len(record.segments),
                "generation_time_seconds": round(time.perf_counter() - started, 3),
            }
        }
        if record.result_url is not None:
            result["audio_url"] = record.result_url
        else:
            _, path = jobs.result(record.id)
            result["audio_base64"] = base64.b64encode(path.read_bytes()).decode("ascii")
        try:
            jobs.delete(record.id)  # the answer holds the audio: the worker keeps nothing
        except NotFound:
            pass
        return result

    def _job_input(self, event: dict[str, Any]) -> JobInput:
        data = event.get("input") if isinstance(event, dict) else None
        if not isinstance(data, dict):
            raise InvalidRequest("invalid_request", 'the event must be {"input": {...}}')
        unknown = set(data) - INPUT_KEYS
        if unknown:
            raise InvalidRequest("invalid_request", f"unknown input fields: {', '.join(sorted(unknown))}")
        raw_params = data.get("params") or {}
        if not isinstance(raw_params, dict):
            raise InvalidRequest("invalid_request", "params must be an object")
        try:
            params = JobParams.model_validate(raw_params)  # the HTTP job route's own schema
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InvalidRequest("invalid_params", f"params.{where}: {first['msg']}") from e
        segments = data.get("segments")
        if segments is not None and not (isinstance(segments, list) and all(isinstance(s, dict) for s in segments)):
            raise InvalidRequest("invalid_request", "segments must be a list of {text, voice?, language?}")
        output_format = data.get("output_format") or "wav"
        if output_format not in FORMATS:
            raise InvalidRequest("invalid_format", f"output_format must be one of {', '.join(FORMATS)}")
        bucket = self.settings.s3_bucket
        return JobInput(
            text=data.get("text"),
            segments=segments,
            script=None,
            voices={},
            voice=data.get("voice"),
            language=params.language or data.get("language") or "Auto",
            instruct=params.instruct,
            output_format=output_format,
            sample_rate=None,
            pause_ms=int(data.get("pause_ms", 300)),
            max_new_tokens=params.max_new_tokens,
            normalize=True,
            s3={"bucket": bucket} if bucket else None,
            sampling=params.sampling(),
        )


def main() -> None:
    import runpod  # the platform's SDK: only the worker needs it

    worker = Worker(worker_settings())
    runpod.serverless.start({"handler": worker.handle})


if __name__ == "__main__":
    main()
