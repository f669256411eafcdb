"""A real uvicorn server on a loopback socket, run in a thread so tests can also look at its engine."""

from __future__ import annotations

import dataclasses
import socket
import tempfile
import threading
import time

import httpx
import uvicorn

from qwen_stream.app import create_app
from qwen_stream.config import ServerSettings


def free_port() -> int:
    """A loopback port nobody listens on now (for servers and proxies that tests start as processes)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, settings: ServerSettings, backend=None):
        if settings.voices_dir is None:  # never the user's own voice library
            self._voices = tempfile.TemporaryDirectory(prefix="qwen-stream-voices-")
            settings = dataclasses.replace(settings, voices_dir=self._voices.name)
        if settings.jobs_dir is None:  # nor the user's job store (a server resumes the jobs it finds)
            self._jobs = tempfile.TemporaryDirectory(prefix="qwen-stream-jobs-")
            settings = dataclasses.replace(settings, jobs_dir=self._jobs.name)
        if backend is not None:  # a Server (or a stand-in) built by the test: it serves these settings
            backend.settings = settings
        self.settings = settings
        self.app = create_app(settings, backend)
        self.backend = self.app.state.server  # the qwen_stream Server: its engine, speech and voices
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self, wait_ready: bool = True, timeout: float = 180) -> "LiveServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        if wait_ready:
            self.wait_ready(deadline - time.monotonic())
        return self

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url) as client:
            while time.monotonic() < deadline:
                response = client.get("/health")
                if response.status_code == 200:
                    return
                if response.json().get("status") == "failed":
                    raise RuntimeError(f"model failed to load: {response.json()}")
                time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def wait_idle(self, timeout: float = 60) -> bool:
        """True once no client has work and the engine holds no job."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            backend = self.backend
            if backend.speech.queues.client_count == 0 and backend.engine.idle:
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._sock.close()
