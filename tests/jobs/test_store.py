"""The job store on its own: atomic files, state across reopening, and stores made by earlier versions."""

from __future__ import annotations

import sqlite3

from qwen_stream.jobs.store import JobStore


def test_a_store_made_before_result_urls_opens_and_keeps_its_jobs(tmp_path):
    old = sqlite3.connect(tmp_path / "jobs.sqlite3")
    old.executescript("""
        CREATE TABLE jobs (id TEXT PRIMARY KEY, created REAL NOT NULL, status TEXT NOT NULL, spec TEXT NOT NULL,
                           error TEXT, finished REAL, result_bytes INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE segments (job_id TEXT NOT NULL, idx INTEGER NOT NULL, status TEXT NOT NULL,
                               frames INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
                               PRIMARY KEY (job_id, idx));
        INSERT INTO jobs (id, created, status, spec) VALUES ('job_old', 1.0, 'queued', '{"segments": []}');
    """)
    old.commit()
    old.close()
    store = JobStore(tmp_path)
    record = store.get("job_old")
    assert record is not None and record.status == "queued" and record.result_url is None
    store.finish("job_old", b"RIFF", "wav", url="https://example/presigned")
    assert store.get("job_old").result_url == "https://example/presigned"
    store.close()


def test_state_survives_reopening_and_no_partial_file_is_left(tmp_path):
    store = JobStore(tmp_path)
    record = store.create({"segments": [{"text": "a"}, {"text": "b"}]}, 2)
    store.set_status(record.id, "running")
    store.segment_done(record.id, 0, b"\0" * 3840 * 3)
    store.close()
    again = JobStore(tmp_path)
    assert again.next_pending() == record.id  # a running job is resumed first
    reopened = again.get(record.id)
    assert [s.status for s in reopened.segments] == ["done", "queued"] and reopened.segments[0].frames == 3
    assert not list(tmp_path.rglob("*.part"))
    again.close()
