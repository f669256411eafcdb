"""The server's life: which models to serve, loading them, the default voice, warm-up, and the health state.

`Server` is what the app holds. Until the models are loaded it has only a state (loading, failed); once they
are, it holds the speech and voice services, built then with everything they need, and the accessors below
are the one place that says "not ready yet"."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import normalization

from ..catalog import FAMILIES_BY_DEFAULT, FRAME_SECONDS, Family, hub_id
from ..cloning import VoiceError, clone_prompt, read_audio
from ..config import ServerSettings
from ..engine import Engine
from ..generation import SynthesisError, SynthesisRequest, Voice
from ..jobs.service import JobService
from ..jobs.storage import S3Uploader
from ..jobs.store import JobStore
from ..jobs.worker import JobWorker
from ..metrics import Metrics
from ..model import ModelLoadError
from ..registry import ModelRegistry, ModelSpec, info_from_source, parse_models
from .errors import NotReady
from .queues import ClientQueues
from .service import SpeechService
from .voice_store import VoiceLibrary, builtin_voices
from .voices import DefaultVoice, VoiceService

log = logging.getLogger("qwen_stream")


def model_specs(settings: ServerSettings) -> list[ModelSpec]:
    """The models to serve, default first: --demo (tiny checkpoints of all three families), --models,
    --model-path, or else a hub id chosen by GPU memory (>= 12 GiB: 1.7B, else 0.6B)."""
    if settings.demo:
        from ..tiny import ensure_checkpoint

        order: tuple[Family, ...] = (
            ("base", *(f for f in FAMILIES_BY_DEFAULT if f != "base")) if settings.ref_audio else FAMILIES_BY_DEFAULT
        )
        paths = {family: str(ensure_checkpoint(settings.demo_cache_dir(), family)) for family in order}
        return [ModelSpec(f, p, info_from_source(p)) for f, p in paths.items()]
    if settings.models:
        return [ModelSpec(f, src, info_from_source(src, f)) for f, src in parse_models(settings.models).items()]
    source = settings.model_path
    if not source:
        import torch

        big = torch.cuda.is_available() and torch.cuda.get_device_properties(0).total_memory >= 12 * 2**30
        source = hub_id("base" if settings.ref_audio else "custom_voice", "1.7b" if big else "0.6b")
    info = info_from_source(source)
    return [ModelSpec(info.family, source, info)]


@dataclass(frozen=True)
class Services:
    """What exists once the models are loaded."""

    engine: Engine
    speech: SpeechService
    voices: VoiceService
    jobs: JobService


class Server:
    def __init__(self, settings: ServerSettings):
        self.settings = settings
        self.state = "loading"
        self.error: str | None = None
        self._services: Services | None = None
        self.metrics = Metrics(
            active_streams=lambda: self._services.speech.queues.active if self._services else 0,
            queue_depth=lambda: self._services.speech.queues.waiting if self._services else 0,
            engine_report=lambda: self._services.engine.report() if self._services else {},
        )

    # -- the accessors the routes use -------------------------------------------------------------------
    @property
    def services(self) -> Services:
        if self.state != "ready" or self._services is None:
            raise NotReady(self.state, self.error)
        return self._services

    @property
    def speech(self) -> SpeechService:
        return self.services.speech

    @property
    def voices(self) -> VoiceService:
        return self.services.voices

    @property
    def engine(self) -> Engine:
        return self.services.engine

    @property
    def jobs(self) -> JobService:
        return self.services.jobs

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            engine, library, default = await asyncio.to_thread(self._load)
        except (ModelLoadError, SynthesisError, VoiceError, ValueError, OSError) as e:
            self.state, self.error = "failed", str(e)
            log.error("model failed to load: %s", e)
            return
        except Exception as e:  # e.g. out of GPU memory: /health must say so, not "loading" forever
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"
            log.exception("model failed to load")
            return
        queues = ClientQueues(
            engine,
            self.settings.max_queue,
            max_ahead_frames=math.ceil(self.settings.max_buffer_seconds / FRAME_SECONDS),
            send_timeout=self.settings.send_timeout,
            max_clients=self.settings.max_clients,
            max_wait=self.settings.max_wait_ms / 1000 if self.settings.max_wait_ms else None,
        )
        voices = VoiceService(self.settings, engine, library, default)
        speech = SpeechService(self.settings, engine, queues, voices, self.metrics)
        store = JobStore(self.settings.jobs_root())
        uploader = S3Uploader(self.settings.s3_endpoint, self.settings.s3_region)
        worker = JobWorker(store, speech, self.settings.jobs_ttl_hours * 3600, uploader)
        jobs = JobService(store, worker, speech, int(self.settings.jobs_max_gb * 2**30), self.settings.s3_bucket)
        self._services = Services(engine, speech, voices, jobs)
        worker.start()  # resumes what a previous run left queued or running
        self.state = "ready"
        model = engine.model
        log.info(
            "ready: %s%s",
            model.describe() if model else engine.registry.families,
            " (demo checkpoints: random weights, audio is noise)" if self.settings.demo else "",
        )

    def _load(self) -> tuple[Engine, VoiceLibrary, DefaultVoice]:
        started = time.perf_counter()
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        specs = model_specs(self.settings)
        engine_settings = self.settings.engine_settings(specs[0].source)
        registry = ModelRegistry(specs, engine_settings.model, self.settings.max_loaded_models)
        engine = Engine(registry, engine_settings)
        try:
            speakers = registry.info("custom_voice").speakers if registry.serves("custom_voice") else ()
            library = VoiceLibrary(self.settings.voices_root(), builtin_voices(speakers))
            default = engine.run_task(self._default_voice).result()
            registry.default_family = default.family
            normalization.warmup()
            if default.voice is not None:
                frames = self.settings.first_chunk_size + 2 * self.settings.chunk_size
                engine.warmup(
                    SynthesisRequest("Hello.", "English", default.voice, max_frames=frames, family=default.family)
                )
        except BaseException:
            engine.close()
            raise
        log.info("loaded and warmed up in %.1f s", time.perf_counter() - started)
        return engine, library, default

    def _default_voice(self, registry: ModelRegistry) -> DefaultVoice:
        """Runs on the engine thread: loads the default model (and builds the --ref-audio clone)."""
        if self.settings.ref_audio:
            if not registry.serves("base"):
                raise ModelLoadError("--ref-audio clones a voice: it needs a Base model")
            samples, rate = read_audio(Path(self.settings.ref_audio).expanduser().read_bytes())
            return DefaultVoice(
                "base", Voice(clone=clone_prompt(registry.get("base"), samples, rate, self.settings.ref_text))
            )
        for family in FAMILIES_BY_DEFAULT:
            if registry.serves(family):
                model = registry.get(family)
                if family == "custom_voice":
                    speaker = "Vivian" if "Vivian" in model.speakers else model.speakers[0]
                    return DefaultVoice(family, Voice(speaker=speaker))
                if family == "voice_design":
                    return DefaultVoice(family, Voice(instruct=""))
                return DefaultVoice(family, None)
        raise ModelLoadError("no model to serve")

    async def stop(self) -> None:
        if self._services is not None:
            await self._services.jobs.worker.stop()  # a running job stays running: the next start resumes it
            self._services.speech.queues.shutdown()
            await asyncio.to_thread(self._services.engine.close)
            self._services.jobs.store.close()

    # -- health ---------------------------------------------------------------------------------------
    def health(self) -> tuple[int, dict]:
        if self.state != "ready" or self._services is None:
            body: dict[str, Any] = {"status": self.state}
            if self.error:
                body["error"] = self.error
            return 503, body
        engine, queues, library = self._services.engine, self._services.speech.queues, self._services.voices.library
        registry = engine.registry
        loaded = {m.family for m in registry.loaded()}
        model = engine.model
        report = engine.report()
        body = {
            "status": "ready",
            "model": model.describe() if model else None,
            "models": [
                {"family": f, "source": spec.source, "loaded": f in loaded} for f, spec in registry.specs.items()
            ],
            "default_voice": self._services.voices.default.family,
            "demo": self.settings.demo,
            "active_streams": queues.active,
            "queue_depth": queues.waiting,
            "clients": queues.client_count,
            "broken": library.broken(),  # stored voices left out of the library, and why
            "engine": report,
            "load": report["load"],  # rows in use plus waiting heads per batch row: a router's and a scaler's figure
        }
        if self.settings.demo:
            body["note"] = "demo checkpoint with random weights: the audio is noise"
        return 200, body
