"""Long-form jobs on disk: their state in SQLite, their audio in files, under one directory.

A job is a list of segments (text, voice, language, instruct); each segment's PCM is written to its own file
when it is complete, so a restart loses nothing that finished and redoes only the segment that was running.
Every file is written to a temporary name and renamed into place, so a half-written file is never read.
One connection, used from the event loop thread only (the calls are short: no audio passes through SQLite).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import BYTES_PER_FRAME

STATUSES = ("queued", "running", "done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    error TEXT,
    finished REAL,
    result_bytes INTEGER NOT NULL DEFAULT 0,
    result_url TEXT
);
CREATE TABLE IF NOT EXISTS segments (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,
    frames INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    PRIMARY KEY (job_id, idx)
);
"""


_ADDED_COLUMNS = (("result_url", "TEXT"),)  # (name, type) in the order they were added


@dataclass
class Segment:
    index: int
    status: str  # queued, done, failed
    frames: int = 0
    attempts: int = 0
    error: str | None = None


@dataclass
class JobRecord:
    id: str
    created: float
    status: str
    spec: dict[str, Any]
    error: str | None = None
    finished: float | None = None
    result_bytes: int = 0
    result_url: str | None = None  # a presigned URL of the uploaded result
    segments: list[Segment] = field(default_factory=list)


class JobStore:
    def __init__(self, root: Path):
        self.root = root
        (root / "audio").mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(root / "jobs.sqlite3", isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added since a store was made: a store made by an earlier version keeps its jobs."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self._db.close()

    # -- jobs -----------------------------------------------------------------------------------------------
    def create(self, spec: dict[str, Any], segments: int) -> JobRecord:
        job_id = "job_" + uuid.uuid4().hex
        with self._db:
            self._db.execute(
                "INSERT INTO jobs (id, created, status, spec) VALUES (?, ?, 'queued', ?)",
                (job_id, time.time(), json.dumps(spec)),
            )
            self._db.executemany(
                "INSERT INTO segments (job_id, idx, status) VALUES (?, ?, 'queued')",
                [(job_id, i) for i in range(segments)],
            )
        record = self.get(job_id)
        assert record is not None
        return record

    def get(self, job_id: str) -> JobRecord | None:
        row = self._db.execute(
            "SELECT id, created, status, spec, error, finished, result_bytes, result_url FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        record = JobRecord(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7])
        record.segments = [
            Segment(*r)
            for r in self._db.execute(
                "SELECT idx, status, frames, attempts, error FROM segments WHERE job_id = ? ORDER BY idx", (job_id,)
            )
        ]
        return record

    def next_pending(self) -> str | None:
        """The oldest job not finished: a running one first (a restart resumes it), then the queue."""
        row = self._db.execute(
            "SELECT id FROM jobs WHERE status IN ('running', 'queued') ORDER BY status = 'queued', created LIMIT 1"
        ).fetchone()
        return None if row is None else row[0]

    def set_status(self, job_id: str, status: str, error: str | None = None) -> None:
        finished = time.time() if status in ("done", "failed", "cancelled") else None
        self._db.execute(
            "UPDATE jobs SET status = ?, error = ?, finished = ? WHERE id = ?", (status, error, finished, job_id)
        )

    def segment_done(self, job_id: str, index: int, pcm: bytes) -> None:
        _write_atomic(self.segment_path(job_id, index), pcm)
        self._db.execute(
            "UPDATE segments SET status = 'done', frames = ?, error = NULL WHERE job_id = ? AND idx = ?",
            (len(pcm) // BYTES_PER_FRAME, job_id, index),
        )

    def segment_failed(self, job_id: str, index: int, error: str, attempts: int, final: bool) -> None:
        self._db.execute(
            "UPDATE segments SET status = ?, attempts = ?, error = ? WHERE job_id = ? AND idx = ?",
            ("failed" if final else "queued", attempts, error, job_id, index),
        )

    def finish(self, job_id: str, audio: bytes, suffix: str, url: str | None = None) -> None:
        _write_atomic(self.result_path(job_id, suffix), audio)
        with self._db:
            self._db.execute(
                "UPDATE jobs SET status = 'done', finished = ?, result_bytes = ?, result_url = ? WHERE id = ?",
                (time.time(), len(audio), url, job_id),
            )
        shutil.rmtree(self._segment_dir(job_id), ignore_errors=True)  # the result holds them now

    def delete(self, job_id: str) -> bool:
        with self._db:
            deleted = self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0
        shutil.rmtree(self._segment_dir(job_id), ignore_errors=True)
        for path in (self.root / "audio").glob(f"{job_id}.*"):
            path.unlink(missing_ok=True)
        return deleted

    def expired(self, ttl_seconds: float) -> list[str]:
        cutoff = time.time() - ttl_seconds
        rows = self._db.execute(
            "SELECT id FROM jobs WHERE finished IS NOT NULL AND finished < ? ORDER BY finished", (cutoff,)
        )
        return [r[0] for r in rows]

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())

    # -- files ----------------------------------------------------------------------------------------------
    def _segment_dir(self, job_id: str) -> Path:
        return self.root / "segments" / job_id

    def segment_path(self, job_id: str, index: int) -> Path:
        return self._segment_dir(job_id) / f"{index:05d}.pcm"

    def result_path(self, job_id: str, suffix: str) -> Path:
        return self.root / "audio" / f"{job_id}.{suffix}"


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".part")
    with open(temporary, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
