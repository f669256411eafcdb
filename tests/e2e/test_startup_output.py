"""What the real server prints from start to one request to shutdown: none of the libraries' alarming but
harmless lines (SoX probe, flash-attn banner, config defaults, pad_token_id), our own one-line notes
instead; on a machine with SoX and, through a PATH without it, on one without."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from qwen_stream.config import OPTIONS

from tests.conftest import CACHE
from tests.live_server import free_port

ROOT = Path(__file__).resolve().parents[2]

# Lines of qwen-tts and its dependencies that a first install showed at start or on every request.
ALARMING = (
    "sox: not found",  # /bin/sh, from the `sox` package's probe at import when the binary is absent
    "SoX could not be found",  # the `sox` package's own warning then
    "flash-attn is not installed",  # print() in qwen-tts' whisper_encoder at import
    "is None. Initializing",  # qwen-tts config classes, dozens of times while loading
    "Setting `pad_token_id`",  # transformers' generate, on every request
)
FLASH_NOTE = "flash-attn not installed: using sdpa attention"
SOX_NOTE = "SoX not installed: fine, qwen-stream never uses it"


def _path_without_sox(tmp: Path) -> str:
    """PATH with every directory that holds `sox` replaced by a copy of its links minus that one."""
    dirs = []
    for i, directory in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        if directory and (Path(directory) / "sox").exists():
            shadow = tmp / f"path{i}"
            shadow.mkdir()
            for entry in Path(directory).iterdir():
                if entry.name != "sox":
                    (shadow / entry.name).symlink_to(entry)
            directory = str(shadow)
        dirs.append(directory)
    path = os.pathsep.join(dirs)
    assert shutil.which("sox", path=path) is None
    return path



def _run_server_once(tmp_path: Path, path: str) -> str:
    """Starts `server.py --demo`, waits for /health 200, streams one utterance, stops it; its output."""
    env = {k: v for k, v in os.environ.items() if k not in {o.env_name for o in OPTIONS}}
    env.update(PATH=path, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    port = free_port()
    log_file = tmp_path / "server.log"
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "server.py"), "--demo", "--port", str(port), "--threads", "1",
             "--cache-dir", str(CACHE), "--voices-dir", str(tmp_path / "voices"), "--log-level", "info",
             "--shutdown-timeout", "5"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300  # a fresh cache builds the three demo checkpoints first
        while True:
            assert proc.poll() is None, log_file.read_text()
            assert time.monotonic() < deadline, "server not ready:\n" + log_file.read_text()
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        with httpx.Client(timeout=120) as client:
            response = client.post(url + "/tts/stream", json={"text": "Hello there."})
            assert response.status_code == 200 and len(response.content) > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log_file.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log_file.read_text()


@pytest.mark.parametrize("sox", ["sox on PATH", "no sox on PATH"])
def test_start_and_request_print_only_our_notes(tmp_path, sox):
    if sox == "sox on PATH":
        if shutil.which("sox") is None:
            pytest.skip("the sox command is not installed (Debian package sox)")
        path = os.environ.get("PATH", "")
    else:
        path = _path_without_sox(tmp_path)

    output = _run_server_once(tmp_path, path)

    assert "ready:" in output and "POST /tts/stream" in output, output
    for line in ALARMING:
        assert line not in output, f"{line!r} printed:\n{output}"
    if importlib.util.find_spec("flash_attn") is None:
        assert output.count(FLASH_NOTE) == 1, output
    assert output.count(SOX_NOTE) == (sox == "no sox on PATH"), output
