"""Server configuration: every option once, as a CLI flag and an environment variable, then defaults.

Precedence: CLI flag, then environment variable, then default. `OPTIONS` is the single table that
builds the argument parser, reads the environment and renders the README's configuration table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .settings import EngineSettings, FrameBudget, ModelSettings, SamplingSettings, StreamingSettings

log = logging.getLogger(__name__)

ENV_PREFIX = "QWEN_STREAM_"


@dataclass(frozen=True)
class Option:
    name: str  # attribute name; the flag is --name-with-dashes
    type: Callable[[str], Any]
    default: Any
    help: str
    env: str | None = None  # environment variable; default QWEN_STREAM_<NAME>

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env_name(self) -> str:
        return self.env or ENV_PREFIX + self.name.upper()


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def voice_map(text: str) -> dict[str, str]:
    """A JSON object of names to voices, given inline or as the path of a JSON file."""
    source = text.strip()
    if source[:1] not in ("{", "["):
        try:
            source = Path(source).expanduser().read_text(encoding="utf-8")
        except OSError as e:
            raise ValueError(f"expected a JSON object or the path of a JSON file: {e}") from e
    try:
        value = json.loads(source)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e})") from e
    _check_voice_map(value)
    return value


def _check_voice_map(value: Any) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and k and isinstance(v, str) and v
                                              for k, v in value.items()):
        raise ValueError('expected a JSON object of names to voices, e.g. {"alloy": "Ryan"}')


OPTIONS: tuple[Option, ...] = (
    Option("model_path", str, None, "checkpoint directory or hub id; default: by GPU memory, >= 12 GiB 1.7B "
           "else 0.6B (CustomVoice, or Base with --ref-audio)", env="MODEL_PATH"),
    Option("demo", _bool, False, "serve a tiny random checkpoint (built once into the cache dir): starts "
           "anywhere with no weights; its audio is noise"),
    Option("models", str, None, "families to serve, e.g. custom_voice:1.7b,base:0.6b,voice_design:1.7b (hub ids) "
           "or base=/models/Base; the first is the default; each loads on first use"),
    Option("max_loaded_models", int, 3, "models kept loaded at once; the least recently used one unloads"),
    Option("voices_dir", str, None, "where cloned and designed voices are stored (default: the user cache dir)"),
    Option("max_upload_mb", float, 10.0, "largest accepted reference audio upload, in MiB"),
    Option("ref_audio", str, None, "reference audio of the default cloned voice (Base models)", env="REF_AUDIO_PATH"),
    Option("ref_text", str, None, "transcript of --ref-audio (ICL mode); without it x-vector mode",
           env="REF_TEXT"),
    Option("host", str, "127.0.0.1", "address to listen on"),
    Option("port", int, 9000, "port to listen on"),
    Option("device", str, "auto", "cuda, cuda:N or cpu; auto picks cuda when available"),
    Option("dtype", str, "auto", "bf16, fp16 or fp32; auto: bf16 on GPUs that support it, fp32 on CPU"),
    Option("attention", str, "auto", "sdpa, eager or flash_attention_2; auto: flash-attn when installed on GPU"),
    Option("threads", int, None, "torch CPU threads (default: torch's choice; 1 is best for tiny models on "
           "small machines)"),
    Option("chunk_size", int, StreamingSettings.chunk_size, "frames per PCM chunk (one frame = 80 ms)"),
    Option("first_chunk_size", int, StreamingSettings.first_chunk_size,
           "frames in the first chunk; later chunks double up to --chunk-size"),
    Option("left_context", int, StreamingSettings.left_context, "decoder left context in frames"),
    Option("max_batch", int, 4, "utterances of one model generated together (as batch rows) when they wait "
           "at the same time; 1 runs them one by one"),
    Option("pre_buffer", int, 0, "chunks held back before the first byte is sent (smooths slow GPUs)"),
    Option("temperature", float, None, "talker sampling temperature (default: the checkpoint's)"),
    Option("top_k", int, None, "talker top-k (default: the checkpoint's)"),
    Option("top_p", float, None, "talker top-p (default: the checkpoint's)"),
    Option("repetition_penalty", float, None, "talker repetition penalty (default: the checkpoint's)"),
    Option("max_text_chars", int, 5000, "longest accepted text per request, in characters"),
    Option("max_queue", int, 32, "requests one client may have waiting; more get 429"),
    Option("max_clients", int, 1024, "clients with requests in flight at once (each request without a client id "
           "is a client of its own); more get 429 server_busy"),
    Option("max_frames", int, FrameBudget.max_frames, "hard cap on frames per sentence (2048 = 164 s)"),
    Option("cors_origins", _csv, (), "comma-separated origins allowed to call the API from a browser; * for any "
           "(pages opened from disk send the origin null)"),
    Option("trusted_hosts", _csv, None, "comma-separated Host names served (* for any); default: loopback names and the "
           "bound address when bound to a loopback address, else any"),
    Option("open_listings", _bool, True, "serve the voice and model listings without the API key (Open WebUI reads "
           "them without one); speech always needs it"),
    Option("max_buffer_seconds", float, 5.0, "audio a stream may run ahead of what its reader has taken; "
           "generation waits beyond it"),
    Option("send_timeout", float, 10.0, "a reader that takes nothing for this many seconds while audio waits is "
           "gone: its stream is cut (outcome stalled)"),
    Option("shutdown_timeout", float, 10.0, "seconds active streams may finish after SIGTERM before they are cut"),
    Option("api_key", str, None, "Bearer key required on every route except /, /health, /metrics and, with "
           "--open-listings, the model and voice listings; off without it (prefer the variable: flags show in ps)",
           env="API_KEY"),
    Option("openai_voices", voice_map, None, "OpenAI voice names mapped to this server's voices, over the "
           "defaults (docs/openai.md): a JSON object or the path of a JSON file"),
    Option("cache_dir", str, None, "where --demo checkpoints live (default: the user cache dir)"),
    Option("log_level", str, "info", "debug, info, warning or error"),
)


@dataclass(frozen=True)
class ServerSettings:
    model_path: str | None = None
    demo: bool = False
    models: str | None = None
    max_loaded_models: int = 3
    voices_dir: str | None = None
    max_upload_mb: float = 10.0
    ref_audio: str | None = None
    ref_text: str | None = None
    host: str = "127.0.0.1"
    port: int = 9000
    device: str = "auto"
    dtype: str = "auto"
    attention: str = "auto"
    threads: int | None = None
    chunk_size: int = StreamingSettings.chunk_size
    first_chunk_size: int = StreamingSettings.first_chunk_size
    left_context: int = StreamingSettings.left_context
    max_batch: int = 4
    pre_buffer: int = 0
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    max_text_chars: int = 5000
    max_queue: int = 32
    max_clients: int = 1024
    max_frames: int = FrameBudget.max_frames
    cors_origins: tuple[str, ...] = ()
    trusted_hosts: tuple[str, ...] | None = None
    open_listings: bool = True
    max_buffer_seconds: float = 5.0
    send_timeout: float = 10.0
    shutdown_timeout: float = 10.0
    api_key: str | None = field(default=None, repr=False)
    openai_voices: Mapping[str, str] | None = None
    cache_dir: str | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.port < 65536:
            problems.append(f"port must be 1-65535, got {self.port}")
        if self.threads is not None and self.threads < 1:
            problems.append("threads must be >= 1")
        if self.max_batch < 1:
            problems.append("max_batch must be >= 1")
        if self.pre_buffer < 0:
            problems.append("pre_buffer must be >= 0")
        if self.max_buffer_seconds <= 0 or self.send_timeout <= 0:
            problems.append("max_buffer_seconds and send_timeout must be > 0")
        if min(self.max_text_chars, self.max_queue, self.max_frames, self.max_clients) < 1:
            problems.append("max_text_chars, max_queue, max_clients and max_frames must be >= 1")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            problems.append(f"log_level must be debug, info, warning or error, got {self.log_level!r}")
        if self.api_key is not None and not self.api_key.strip():
            problems.append("api_key must not be empty")
        if self.openai_voices is not None:
            try:
                _check_voice_map(self.openai_voices)
            except ValueError as e:
                problems.append(f"openai_voices: {e}")
        if sum(bool(x) for x in (self.demo, self.model_path, self.models)) > 1:
            problems.append("give only one of --demo, --model-path and --models")
        if self.models:
            from .registry import parse_models

            try:
                parse_models(self.models)
            except ValueError as e:
                problems.append(str(e))
        if self.max_loaded_models < 1 or self.max_upload_mb <= 0:
            problems.append("max_loaded_models must be >= 1 and max_upload_mb > 0")
        try:
            self.streaming()
        except ValueError as e:
            problems.append(str(e))
        if problems:
            raise ValueError("; ".join(problems))

    def streaming(self) -> StreamingSettings:
        return StreamingSettings(chunk_size=self.chunk_size, first_chunk_size=min(self.first_chunk_size, self.chunk_size),
                                 left_context=self.left_context)

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                                repetition_penalty=self.repetition_penalty)

    def engine(self, model_path: str) -> EngineSettings:
        return EngineSettings(
            model=ModelSettings(path=model_path, device=self.device, dtype=self.dtype, attention=self.attention),
            streaming=self.streaming(),
            sampling=self.sampling(),
            budget=FrameBudget(max_frames=self.max_frames),
            max_batch=self.max_batch,
        )

    def demo_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("qwen-stream")) / "demo"

    def voices_root(self) -> Path:
        if self.voices_dir:
            return Path(self.voices_dir).expanduser()
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("qwen-stream")) / "voices"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="server.py", description="qwen-stream: streaming TTS server on Qwen3-TTS")
    for opt in OPTIONS:
        kwargs: dict[str, Any] = {"dest": opt.name, "default": None, "help": f"{opt.help} [env {opt.env_name}]"}
        if opt.type is _bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = opt.type
            kwargs["metavar"] = opt.name.split("_")[-1].upper()
        parser.add_argument(opt.flag, **kwargs)
    return parser


def load_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ServerSettings:
    """CLI flags over environment variables over defaults. Raises ValueError naming the bad setting."""
    environ = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        cli = getattr(args, opt.name)
        if cli is not None:
            values[opt.name] = cli
        elif opt.env_name in environ:
            raw = environ[opt.env_name]
            try:
                values[opt.name] = opt.type(raw)
            except ValueError as e:
                raise ValueError(f"environment variable {opt.env_name}={raw!r}: {e}") from e
        else:
            values[opt.name] = opt.default
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in {o.env_name for o in OPTIONS})
    for key in unknown:
        log.warning("ignoring unknown environment variable %s", key)
    return ServerSettings(**values)


def markdown_table() -> str:
    """The README's configuration table (tests keep README and this table in step)."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for opt in OPTIONS:
        default = opt.default
        if default is None or default == ():
            shown = "-"
        elif default is False:
            shown = "off"
        else:
            shown = f"`{default}`"
        flag = f"`{opt.flag}`"
        rows.append(f"| {flag} | `{opt.env_name}` | {shown} | {opt.help} |")
    return "\n".join(rows)
