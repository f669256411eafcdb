"""`say --script dialogue.txt --out podcast.mp3` and `say --segments file.json`: long-form speech from the
command line, run as a job on the server's own services (no HTTP), with a progress bar. The voices are the
server's: built-in speakers and the stored voice library."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from .audio import FORMATS
from .catalog import FRAME_SECONDS
from .config import ServerSettings
from .inprocess import InProcessServer
from .jobs.service import JobInput

POLL = 0.1


def output_format(out: str) -> str:
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(f"--out {out}: the file's extension names the format, one of {', '.join(sorted(FORMATS))}")
    return suffix


def voice_map(text: str | None) -> dict[str, str]:
    """ "Host=Ryan,Guest=Vivian" -> {"Host": "Ryan", "Guest": "Vivian"}."""
    pairs = [item.split("=", 1) for item in (text or "").split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[0].strip() or not pair[1].strip() for pair in pairs):
        raise ValueError("--voices: Speaker=voice pairs, separated by commas (Host=Ryan,Guest=Vivian)")
    return {speaker.strip(): voice.strip() for speaker, voice in pairs}


def job_input(args) -> JobInput:
    script = Path(args.script).read_text(encoding="utf-8") if args.script else None
    segments = None
    if args.segments:
        segments = json.loads(Path(args.segments).read_text(encoding="utf-8"))
        if not isinstance(segments, list) or not all(isinstance(s, dict) and "text" in s for s in segments):
            raise ValueError(f"--segments {args.segments}: a JSON list of {{text, voice?, language?, instruct?}}")
    return JobInput(
        text=None,
        segments=segments,
        script=script,
        voices=voice_map(args.voices),
        voice=args.speaker,
        language=args.language,
        instruct=args.instruct,
        output_format=output_format(args.out),
        sample_rate=None,
        pause_ms=args.pause_ms,
        max_new_tokens=args.max_frames,
        normalize=True,
    )


def say_long(args, settings: ServerSettings) -> int:
    from tqdm import tqdm

    job = job_input(args)
    settings = dataclasses.replace(
        settings, model_path=args.model_path, jobs_dir=tempfile.mkdtemp(prefix="qwen-stream-say-")
    )
    server = InProcessServer(settings)
    try:
        jobs = server.server.jobs
        record = server.run(jobs.submit(job))
        started = time.perf_counter()
        with tqdm(total=len(record.segments), unit="segment", desc=Path(args.out).name, file=sys.stderr) as bar:
            while record.status not in ("done", "failed", "cancelled"):
                time.sleep(POLL)
                record = jobs.get(record.id)
                bar.update(sum(s.status == "done" for s in record.segments) - bar.n)
        if record.status != "done":
            print(f"error: {record.error}", file=sys.stderr)
            return 1
        _, path = jobs.result(record.id)
        Path(args.out).write_bytes(path.read_bytes())
        seconds = sum(s.frames for s in record.segments) * FRAME_SECONDS
        print(
            f"{args.out}: {len(record.segments)} segments, {seconds:.2f} s of speech, "
            f"made in {time.perf_counter() - started:.1f} s"
        )
        return 0
    finally:
        server.close()
