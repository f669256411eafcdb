"""Long-form jobs on a real server: a multi-speaker script becomes one file of the right length, Range
downloads, cancel and delete, bad input refused with nothing stored, and a job that survives SIGKILL."""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import soundfile as sf

from qwen_stream.config import ServerSettings
from qwen_stream.settings import FrameBudget
from tests.live_server import LiveServer, free_port

ROOT = Path(__file__).resolve().parents[2]
MAX_FRAMES = 30
BUDGET = FrameBudget(max_frames=MAX_FRAMES)
LONG_FRAMES = 400


@pytest.fixture(scope="module")
def server(custom_voice_dir, tmp_path_factory):
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=MAX_FRAMES,
                              jobs_dir=str(tmp_path_factory.mktemp("jobs")))
    live = LiveServer(settings).start()
    yield live
    live.stop()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c
    assert server.wait_idle(), "work left running after the test"


def wait_for(client: httpx.Client, job_id: str, *statuses: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/audio/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {statuses}: {job}")


def frames(*sentences: str) -> int:
    return sum(BUDGET.for_text(s) for s in sentences)


def test_a_script_becomes_one_file_of_its_segments_and_pauses(client):
    script = "[Host] Welcome to the show.\n[Guest] Thanks for having me.\nIt is a pleasure.\n\n[Host] Let us begin."
    r = client.post("/v1/audio/jobs", json={"script": script, "voices": {"Host": "Ryan", "Guest": "Vivian"},
                                            "output_format": "wav", "pause_ms": 500})
    assert r.status_code == 202 and r.json()["status"] == "queued"
    job = wait_for(client, r.json()["id"], "done", "failed")
    assert job["status"] == "done" and job["errors"] == []
    assert job["progress"]["segments_done"] == job["progress"]["segments_total"] == 4
    audio = client.get(job["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
    samples, rate = sf.read(io.BytesIO(audio.content), dtype="int16")  # libsndfile: an independent decoder
    spoken = frames("Welcome to the show.", "Thanks for having me.", "It is a pleasure.", "Let us begin.")
    assert rate == 24000 and len(samples) == spoken * 1920 + 3 * 12000  # segments + three 500 ms pauses
    inline = client.get(f"/v1/audio/jobs/{job['id']}", params={"include_audio": "true"}).json()
    assert base64.b64decode(inline["audio_base64"]) == audio.content  # small results may also come inline
    assert "audio_base64" not in job  # not on every poll

    # A Range request gets exactly those bytes (players seek, downloads resume).
    part = client.get(job["audio_url"], headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == audio.content[100:200]

    assert client.delete(f"/v1/audio/jobs/{job['id']}").json() == {"id": job["id"], "result": "deleted"}
    assert client.get(f"/v1/audio/jobs/{job['id']}").status_code == 404


def test_segments_with_their_own_voices_in_flac(client):
    body = {"segments": [{"text": "One.", "voice": "Ryan"}, {"text": "Two.", "voice": "Vivian"}],
            "output_format": "flac", "pause_ms": 0}
    job = wait_for(client, client.post("/v1/audio/jobs", json=body).json()["id"], "done", "failed")
    samples, rate = sf.read(io.BytesIO(client.get(job["audio_url"]).content), dtype="int16")
    assert job["status"] == "done" and len(samples) == frames("One.", "Two.") * 1920


def test_bad_jobs_are_refused_and_nothing_is_stored(server, client):
    before = server.backend.jobs.store.counts()
    cases = [
        ({"text": "Hi.", "segments": [{"text": "Hi."}]}, "invalid_request"),
        ({"output_format": "wav"}, "invalid_request"),
        ({"segments": [{"text": "Fine.", "voice": "Ryan"}, {"text": "Who?", "voice": "Nobody"}]}, "unknown_voice"),
        ({"segments": [{"text": "word " * 20_000, "voice": "Ryan"}] * 3}, "text_too_long"),
        ({"text": "Hi.", "output_format": "mp3", "sample_rate": 8000}, "invalid_sample_rate"),
        ({"text": "Hi.", "params": {"temperature": 0}}, "invalid_params"),
        ({"text": "Hi.", "params": {"top_p": 1.5, "subtalker_top_k": -1}}, "invalid_params"),
        ({"text": "Hi.", "params": {"temprature": 0.5}}, "invalid_request"),
        ({"script": "no speaker tag here"}, "invalid_script"),
        ({"text": "   "}, "empty_text"),
    ]
    for body, code in cases:
        r = client.post("/v1/audio/jobs", json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (body, r.text)
    assert "segment 1" in client.post("/v1/audio/jobs", json=cases[2][0]).json()["error"]["message"]
    assert server.backend.jobs.store.counts() == before


# top-k 1 in both samplers picks the most likely token every time: the audio is fixed by the settings alone.
FIXED = {"top_k": 1, "subtalker_top_k": 1}


def test_a_jobs_sampling_params_decide_its_audio_as_they_decide_a_stream(client):
    """The job's params reach the engine: with settings that fix every token, the job's audio is the stream's
    audio for the same text and settings, and a job without them (the server's sampling) differs."""
    text = "The settings decide this sentence."

    def job_pcm(params: dict | None) -> bytes:
        body = {"text": text, "voice": "Ryan", "output_format": "pcm", "pause_ms": 0, "params": params}
        job = wait_for(client, client.post("/v1/audio/jobs", json=body).json()["id"], "done", "failed")
        assert job["status"] == "done", job
        return client.get(job["audio_url"]).content

    streamed = client.post("/tts/stream", json={"text": text, "voice": "Ryan", **FIXED}).content
    fixed = job_pcm(FIXED)
    assert len(fixed) == frames(text) * 1920 * 2 and fixed == streamed
    assert job_pcm(FIXED) == fixed
    assert job_pcm(None) != fixed


def test_delete_cancels_a_running_job(server, client):
    body = {"segments": [{"text": f"Segment number {i} of many.", "voice": "Ryan"} for i in range(20)]}
    job_id = client.post("/v1/audio/jobs", json=body).json()["id"]
    wait_for(client, job_id, "running")
    assert client.delete(f"/v1/audio/jobs/{job_id}").json()["result"] == "cancelled"
    job = wait_for(client, job_id, "cancelled")
    assert job["progress"]["segments_done"] < 20
    assert server.wait_idle(30)
    assert client.get(f"/v1/audio/jobs/{job_id}/audio").status_code == 400  # no audio for a cancelled job



def _start(model_dir: Path, jobs_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--model-path", str(model_dir), "--port", str(port),
             "--device", "cpu", "--max-frames", str(MAX_FRAMES), "--jobs-dir", str(jobs_dir)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, log.read_text()
        time.sleep(0.2)
    raise AssertionError("server did not start")


def test_a_job_survives_sigkill_and_finished_jobs_stay_intact(custom_voice_dir, tmp_path):
    jobs_dir, log, port = tmp_path / "jobs", tmp_path / "server.log", free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(custom_voice_dir, jobs_dir, port, log)
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            first = wait_for(c, c.post("/v1/audio/jobs", json={"text": "Finished before the crash."}).json()["id"],
                             "done")
            kept = c.get(first["audio_url"]).content
            body = {"segments": [{"text": f"Part {i} of the long job.", "voice": "Ryan"} for i in range(8)]}
            job_id = c.post("/v1/audio/jobs", json=body).json()["id"]
            deadline = time.monotonic() + 120
            while c.get(f"/v1/audio/jobs/{job_id}").json()["progress"]["segments_done"] < 2:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc = _start(custom_voice_dir, jobs_dir, port, log)
        with httpx.Client(base_url=url, timeout=60) as c:
            job = wait_for(c, job_id, "done", "failed")
            assert job["status"] == "done" and job["progress"]["segments_done"] == 8
            samples, _ = sf.read(io.BytesIO(c.get(job["audio_url"]).content), dtype="int16")
            spoken = frames(*(f"Part {i} of the long job." for i in range(8)))
            assert len(samples) == spoken * 1920 + 7 * 7200  # default pause 300 ms
            assert c.get(first["audio_url"]).content == kept
    finally:
        proc.kill()
        proc.wait(30)


# -- results uploaded to S3-compatible storage (moto's server on loopback: real HTTP, real S3 API) ----------


@pytest.fixture(scope="module")
def s3_server(monkeypatch_module):
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    for name, value in (("AWS_ACCESS_KEY_ID", "test-key"), ("AWS_SECRET_ACCESS_KEY", "test-secret"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch_module.setenv(name, value)
    yield f"http://127.0.0.1:{port}"
    moto.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def s3_live(custom_voice_dir, tmp_path_factory, s3_server):
    import boto3

    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket="podcasts")
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=MAX_FRAMES,
                              jobs_dir=str(tmp_path_factory.mktemp("s3jobs")), s3_endpoint=s3_server,
                              s3_region="us-east-1", s3_bucket="podcasts")
    live = LiveServer(settings).start()
    yield live
    live.stop()


def test_a_result_uploaded_to_s3_downloads_the_same_bytes_by_its_presigned_url(s3_live):
    with httpx.Client(base_url=s3_live.url, timeout=120) as c:
        body = {"text": "Uploaded episode.", "voice": "Ryan", "output_format": "mp3",
                "output": {"s3": {"key": "shows/episode-1.mp3", "expires": 600}}}
        job = wait_for(c, c.post("/v1/audio/jobs", json=body).json()["id"], "done", "failed")
        assert job["status"] == "done", job
        local = c.get(job["audio_url"]).content
        assert "shows/episode-1.mp3" in job["s3_url"] and "X-Amz-Signature" in job["s3_url"]
        remote = httpx.get(job["s3_url"], timeout=60)  # no credentials: the signature is the permission
        assert remote.status_code == 200 and remote.content == local and len(local) > 1000

        missing = {"text": "Nowhere.", "voice": "Ryan", "output": {"s3": {"bucket": "no-such-bucket"}}}
        failed = wait_for(c, c.post("/v1/audio/jobs", json=missing).json()["id"], "done", "failed")
        assert failed["status"] == "failed" and "s3://no-such-bucket/" in failed["error"]
        bad = c.post("/v1/audio/jobs", json=dict(body, output={"s3": {"expires": 10**9}}))
        assert bad.status_code == 400
    assert s3_live.wait_idle()


@pytest.fixture(params=["continuous", "static"])
def one_row_server(request, custom_voice_dir, tmp_path):
    """One batch row: a job sentence in the engine holds all of it, so live speech must take it back."""
    # Long sentences (about 130 frames each): a live request sent while one runs lands inside it, however loaded
    # the machine is.
    settings = ServerSettings(model_path=str(custom_voice_dir), device="cpu", max_frames=LONG_FRAMES, max_batch=1,
                              engine=request.param, jobs_dir=str(tmp_path / "jobs"))
    live = LiveServer(settings).start()
    yield live
    live.stop()


def test_live_speech_preempts_a_job_sentence_and_the_job_still_completes(one_row_server):
    """A live request never waits for job work: the job's sentence in the engine yields (it is made again later)."""
    server = one_row_server
    client = httpx.Client(base_url=server.url, timeout=120)
    worker = server.backend.jobs.worker
    texts = [f"A job sentence long enough to be caught running, the {n} one." for n in ("first", "second", "third")]
    body = {"segments": [{"text": text, "voice": "Ryan"} for text in texts], "pause_ms": 0}
    job_id = client.post("/v1/audio/jobs", json=body).json()["id"]
    before = worker.preempted
    wait_for(client, job_id, "running")  # (a queued job has nothing in the engine to preempt yet)
    for _ in range(20):  # each round: wait until a job sentence holds the engine, then speak live
        if worker.preempted > before or client.get(f"/v1/audio/jobs/{job_id}").json()["status"] != "running":
            break
        while server.backend.engine.idle and client.get(f"/v1/audio/jobs/{job_id}").json()["status"] == "running":
            time.sleep(0.005)
        live = client.post("/tts/stream", json={"text": "Live answer.", "client_id": "live-user"})
        assert live.status_code == 200 and live.content
    assert worker.preempted > before, "no job sentence was ever caught in the engine"
    job = wait_for(client, job_id, "done", "failed", timeout=600)
    samples, _ = sf.read(io.BytesIO(client.get(job["audio_url"]).content), dtype="int16")
    expected = sum(FrameBudget(max_frames=LONG_FRAMES).for_text(t) for t in texts)  # words only: read as written
    assert job["status"] == "done" and len(samples) == expected * 1920  # redone sentences: whole, no seam or gap
    client.close()
    assert server.wait_idle()


def test_with_continuous_batching_a_job_shares_the_batch_with_live_speech(server, client):
    """Spare batch rows: the live request is admitted beside the job's sentence, which goes on (no preemption)."""
    worker = server.backend.jobs.worker
    body = {"segments": [{"text": f"Another job sentence that runs beside live speech, number {i}.", "voice": "Ryan"}
                         for i in range(3)], "pause_ms": 0}
    job_id = client.post("/v1/audio/jobs", json=body).json()["id"]
    before = worker.preempted
    while server.backend.engine.idle and client.get(f"/v1/audio/jobs/{job_id}").json()["status"] != "done":
        time.sleep(0.005)
    live = client.post("/tts/stream", json={"text": "Live answer.", "client_id": "live-beside"})
    assert live.status_code == 200 and live.content
    assert wait_for(client, job_id, "done", "failed")["status"] == "done"
    assert worker.preempted == before
