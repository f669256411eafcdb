"""Server configuration: every option once, as a CLI flag and an environment variable, then defaults.

Precedence: CLI flag, then environment variable, then default. The fields of `ServerSettings` are the
single table: each carries its help (and, where it is not QWEN_STREAM_<NAME>, its environment variable)
as field metadata, and the argument parser, the environment loading, the README's configuration table
and `say`'s shared options are all derived from `dataclasses.fields(ServerSettings)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .settings import (
    DECODE_MODES,
    ENGINES,
    NOISE_DRAWS,
    SWITCH,
    TOGGLE,
    EngineSettings,
    FrameBudget,
    ModelSettings,
    SamplingSettings,
    StreamingSettings,
)

log = logging.getLogger(__name__)

ENV_PREFIX = "QWEN_STREAM_"


def opt(help: str, *, env: str | None = None, parse: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """A field's entry in the settings table, for `field(metadata=...)`.

    `env` overrides the variable's name (a few keep the names users already set); `parse` overrides the
    parser inferred from the field's type (only needed where the type alone does not say how to read text).
    """
    return {"help": help, "env": env, "parse": parse}


@dataclass(frozen=True)
class Option:
    """One row of the table, as read from a field: a derived view, never declared by hand."""

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
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ValueError('expected a JSON object of names to voices, e.g. {"alloy": "Ryan"}')


# How text from a flag or a variable becomes a value, by the field's type once `| None` is removed.
_PARSERS: dict[Any, Callable[[str], Any]] = {bool: _bool, int: int, float: float, str: str, tuple[str, ...]: _csv}


def _parser_for(hint: Any) -> Callable[[str], Any]:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint
    if base not in _PARSERS:
        raise TypeError(f"no text parser for {hint!r}: give opt(..., parse=...)")
    return _PARSERS[base]


@dataclass(frozen=True)
class ServerSettings:
    """The server's options: each field is one row of the table (flag, environment variable, default, help)."""

    model_path: str | None = field(
        default=None,
        metadata=opt(
            "checkpoint directory or hub id; default: by GPU memory, >= 12 GiB 1.7B else 0.6B (CustomVoice, or Base "
            "with --ref-audio)",
            env="MODEL_PATH",
        ),
    )
    demo: bool = field(
        default=False,
        metadata=opt(
            "serve a tiny random checkpoint (built once into the cache dir): starts anywhere with no weights; its "
            "audio is noise"
        ),
    )
    models: str | None = field(
        default=None,
        metadata=opt(
            "families to serve, e.g. custom_voice:1.7b,base:0.6b,voice_design:1.7b (hub ids) or base=/models/Base; "
            "the first is the default; each loads on first use"
        ),
    )
    max_loaded_models: int = field(
        default=3, metadata=opt("models kept loaded at once; the least recently used one unloads")
    )
    voices_dir: str | None = field(
        default=None, metadata=opt("where cloned and designed voices are stored (default: the user cache dir)")
    )
    max_upload_mb: float = field(default=10.0, metadata=opt("largest accepted reference audio upload, in MiB"))
    jobs_dir: str | None = field(
        default=None, metadata=opt("where long-form jobs and their audio are kept (default: the user data dir)")
    )
    jobs_ttl_hours: float = field(default=24.0, metadata=opt("finished jobs and their audio are deleted after this"))
    jobs_max_gb: float = field(default=10.0, metadata=opt("disk the job store may use; new jobs get 507 beyond it"))
    s3_endpoint: str | None = field(
        default=None,
        metadata=opt(
            "S3-compatible endpoint for job uploads (default: AWS); keys: the AWS env/config", env="S3_ENDPOINT"
        ),
    )
    s3_region: str | None = field(default=None, metadata=opt("region of the S3 endpoint", env="S3_REGION"))
    s3_bucket: str | None = field(default=None, metadata=opt("bucket of job uploads that name none", env="S3_BUCKET"))
    ref_audio: str | None = field(
        default=None, metadata=opt("reference audio of the default cloned voice (Base models)", env="REF_AUDIO_PATH")
    )
    ref_text: str | None = field(
        default=None, metadata=opt("transcript of --ref-audio (ICL mode); without it x-vector mode", env="REF_TEXT")
    )
    host: str = field(default="127.0.0.1", metadata=opt("address to listen on"))
    port: int = field(default=9000, metadata=opt("port to listen on"))
    device: str = field(
        default=ModelSettings.device, metadata=opt("cuda, cuda:N or cpu; auto picks cuda when available")
    )
    dtype: str = field(
        default=ModelSettings.dtype, metadata=opt("bf16, fp16 or fp32; auto: bf16 on GPUs that support it, fp32 on CPU")
    )
    attention: str = field(
        default=ModelSettings.attention,
        metadata=opt("sdpa, eager or flash_attention_2; auto: flash-attn when installed on GPU"),
    )
    threads: int | None = field(
        default=None,
        metadata=opt("torch CPU threads (default: torch's choice; 1 is best for tiny models on small machines)"),
    )
    chunk_size: int = field(
        default=StreamingSettings.chunk_size, metadata=opt("frames per PCM chunk (one frame = 80 ms)")
    )
    first_chunk_size: int = field(
        default=StreamingSettings.first_chunk_size,
        metadata=opt("frames in the first chunk; later chunks double up to --chunk-size"),
    )
    decode: str = field(
        default=StreamingSettings.decode,
        metadata=opt(
            "carried: each chunk decodes only its own frames, the decoder's state carried from the chunk before "
            "(equal to a one-shot decode); window: each chunk decodes --left-context frames of context again"
        ),
    )
    left_context: int = field(
        default=StreamingSettings.left_context, metadata=opt("decoder left context in frames (--decode window)")
    )
    max_batch: int = field(
        default=EngineSettings.max_batch,
        metadata=opt("utterances of one model generated together, as rows of one batch; 1 runs them one by one"),
    )
    engine: str = field(
        default=EngineSettings.engine,
        metadata=opt(
            "continuous: utterances join and leave the running batch between frame steps; static: a batch is the "
            "utterances that waited together, generated to its end (the older path, kept for comparison)"
        ),
    )
    cuda_graphs: str = field(
        default=EngineSettings.cuda_graphs,
        metadata=opt(
            "auto, on or off: capture the continuous engine's step (on a static KV cache), its prefill and the "
            "carried chunk decode as CUDA graphs per batch-size bucket; auto: on CUDA with sdpa or eager attention, "
            "eager where capture fails; on: fail instead"
        ),
    )
    static_len: int = field(
        default=EngineSettings.static_len,
        metadata=opt(
            "positions per row of a static KV cache (prompt + frames; a longer row is shortened to fit); "
            "0: a dynamic cache, or the frame cap + 512 when CUDA graphs or torch.compile are on"
        ),
    )
    torch_compile: str = field(
        default=EngineSettings.torch_compile,
        metadata=opt(
            "on or off: run the continuous engine's step (static KV cache) through torch.compile, one graph per "
            "batch-size bucket, compiled at start-up for the default model (tens of seconds per bucket; other "
            "models at their first batch); eager where compiling fails"
        ),
    )
    decode_overlap: str = field(
        default=EngineSettings.decode_overlap,
        metadata=opt(
            "auto, on or off: decode each step's audio windows on a thread and CUDA stream of their own, beside the "
            "next talker step; auto: on CUDA only (on CPU the threads contend and it gains nothing); off: between "
            "steps, on the engine thread"
        ),
    )
    noise_draws: str = field(
        default=EngineSettings.noise_draws,
        metadata=opt(
            "auto, token or block: how each row draws its sampling noise; token: a call per token, as qwen-tts does "
            "(16 per row per step); block: 16 steps per call, from the row's own generator (on a GPU each call is "
            "a kernel launch every step pays for; on CUDA a seeded row then differs from the library's frames, on "
            "CPU it does not); auto: block on CUDA"
        ),
    )
    early_chunks: str = field(
        default=EngineSettings.early_chunks,
        metadata=opt(
            "on or off: the continuous engine sends a stream's frames as a chunk ahead of the chunk schedule when "
            "its reader would otherwise run out of audio first (audio sent, less the time since, below what the "
            "scheduled chunk's steps and decode take); off: the schedule only"
        ),
    )
    max_wait_ms: int = field(
        default=0,
        metadata=opt(
            "refuse a new utterance at once (503 overloaded, Retry-After) when its estimated wait for a batch slot "
            "exceeds this; 0: never (continuous engine only)"
        ),
    )
    pre_buffer: int = field(
        default=0,
        metadata=opt(
            "the audio of the chunk schedule's first N chunks (2: 3 frames) held back before the first byte is sent "
            "(smooths slow GPUs)"
        ),
    )
    temperature: float | None = field(
        default=None, metadata=opt("talker sampling temperature (default: the checkpoint's)")
    )
    top_k: int | None = field(default=None, metadata=opt("talker top-k (default: the checkpoint's)"))
    top_p: float | None = field(default=None, metadata=opt("talker top-p (default: the checkpoint's)"))
    repetition_penalty: float | None = field(
        default=None, metadata=opt("talker repetition penalty (default: the checkpoint's)")
    )
    max_text_chars: int = field(default=5000, metadata=opt("longest accepted text per request, in characters"))
    max_queue: int = field(default=32, metadata=opt("requests one client may have waiting; more get 429"))
    max_clients: int = field(
        default=1024,
        metadata=opt(
            "clients with requests in flight at once (each request without a client id is a client of its own); "
            "more get 429 server_busy"
        ),
    )
    max_frames: int = field(
        default=FrameBudget.max_frames, metadata=opt("hard cap on frames per sentence (2048 = 164 s)")
    )
    cors_origins: tuple[str, ...] = field(
        default=(),
        metadata=opt(
            "comma-separated origins allowed to call the API from a browser; * for any (pages opened from disk send "
            "the origin null)"
        ),
    )
    trusted_hosts: tuple[str, ...] | None = field(
        default=None,
        metadata=opt(
            "comma-separated Host names served (* for any); default: loopback names and the bound address when "
            "bound to a loopback address, else any"
        ),
    )
    open_listings: bool = field(
        default=True,
        metadata=opt(
            "serve the voice and model listings without the API key (Open WebUI reads them without one); speech "
            "always needs it"
        ),
    )
    max_buffer_seconds: float = field(
        default=5.0,
        metadata=opt("audio a stream may run ahead of what its reader has taken; generation waits beyond it"),
    )
    send_timeout: float = field(
        default=10.0,
        metadata=opt(
            "a reader that takes nothing for this many seconds while audio waits is gone: its stream is cut "
            "(outcome stalled)"
        ),
    )
    shutdown_timeout: float = field(
        default=10.0, metadata=opt("seconds active streams may finish after SIGTERM before they are cut")
    )
    api_key: str | None = field(
        default=None,
        repr=False,
        metadata=opt(
            "Bearer key required on every route except /, /health, /metrics and, with --open-listings, the model "
            "and voice listings; off without it (prefer the variable: flags show in ps)",
            env="API_KEY",
        ),
    )
    openai_voices: Mapping[str, str] | None = field(
        default=None,
        metadata=opt(
            "OpenAI voice names mapped to this server's voices, over the defaults (docs/openai.md): a JSON object "
            "or the path of a JSON file",
            parse=voice_map,
        ),
    )
    cache_dir: str | None = field(
        default=None, metadata=opt("where --demo checkpoints live (default: the user cache dir)")
    )
    log_level: str = field(default="info", metadata=opt("debug, info, warning or error"))

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.port < 65536:
            problems.append(f"port must be 1-65535, got {self.port}")
        if self.threads is not None and self.threads < 1:
            problems.append("threads must be >= 1")
        if self.max_batch < 1:
            problems.append("max_batch must be >= 1")
        if self.pre_buffer < 0 or self.max_wait_ms < 0:
            problems.append("pre_buffer and max_wait_ms must be >= 0")
        if self.engine not in ENGINES:
            problems.append(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.decode not in DECODE_MODES:
            problems.append(f"decode must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}")
        for name in ("cuda_graphs", "decode_overlap"):
            if getattr(self, name) not in SWITCH:
                problems.append(f"{name} must be one of {', '.join(SWITCH)}, got {getattr(self, name)!r}")
        if self.noise_draws not in NOISE_DRAWS:
            problems.append(f"noise_draws must be one of {', '.join(NOISE_DRAWS)}, got {self.noise_draws!r}")
        if self.static_len < 0:
            problems.append("static_len must be >= 0")
        if self.early_chunks not in TOGGLE:
            problems.append(f"early_chunks must be one of {', '.join(TOGGLE)}, got {self.early_chunks!r}")
        if self.torch_compile not in TOGGLE:
            problems.append(f"torch_compile must be one of {', '.join(TOGGLE)}, got {self.torch_compile!r}")
        problems.extend(self.sampling().problems())
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
        # A first chunk above --chunk-size is clamped, not refused, so lowering --chunk-size alone just works
        # (the server and `say` both build their streaming settings here).
        return StreamingSettings(
            chunk_size=self.chunk_size,
            first_chunk_size=min(self.first_chunk_size, self.chunk_size),
            left_context=self.left_context,
            decode=self.decode,
        )

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(
            temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, repetition_penalty=self.repetition_penalty
        )

    def engine_settings(self, model_path: str) -> EngineSettings:
        return EngineSettings(
            model=ModelSettings(path=model_path, device=self.device, dtype=self.dtype, attention=self.attention),
            streaming=self.streaming(),
            sampling=self.sampling(),
            budget=FrameBudget(max_frames=self.max_frames),
            max_batch=self.max_batch,
            engine=self.engine,
            cuda_graphs=self.cuda_graphs,
            static_len=self.static_len,
            torch_compile=self.torch_compile,
            decode_overlap=self.decode_overlap,
            noise_draws=self.noise_draws,
            early_chunks=self.early_chunks,
        )

    def demo_cache_dir(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("qwen-stream")) / "demo"

    def jobs_root(self) -> Path:
        if self.jobs_dir:
            return Path(self.jobs_dir).expanduser()
        from platformdirs import user_data_dir

        return Path(user_data_dir("qwen-stream")) / "jobs"

    def voices_root(self) -> Path:
        if self.voices_dir:
            return Path(self.voices_dir).expanduser()
        from platformdirs import user_cache_dir

        return Path(user_cache_dir("qwen-stream")) / "voices"


def options(settings_class: type[ServerSettings] = ServerSettings) -> tuple[Option, ...]:
    """The table's rows, read from the fields' metadata (a field without `opt(...)` metadata is a mistake)."""
    hints = typing.get_type_hints(settings_class)
    return tuple(_option(f, hints[f.name]) for f in dataclasses.fields(settings_class))


def _option(f: dataclasses.Field, hint: Any) -> Option:
    if "help" not in f.metadata:
        raise TypeError(f"settings field {f.name} has no opt(...) metadata: every field is a documented option")
    parse = f.metadata["parse"] or _parser_for(hint)
    return Option(f.name, parse, f.default, f.metadata["help"], env=f.metadata["env"])


# The rows as a tuple, for code that lists the variables (tests clear them from a child's environment).
OPTIONS: tuple[Option, ...] = options()


def add_options(parser: argparse.ArgumentParser, rows: Iterable[Option], *, show_env: bool = True) -> None:
    """Add rows as flags whose default is None, so a caller can tell "not given" from "given the default"."""
    for row in rows:
        help_text = f"{row.help} [env {row.env_name}]" if show_env else row.help
        kwargs: dict[str, Any] = {"dest": row.name, "default": None, "help": help_text}
        if row.type is _bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = row.type
            kwargs["metavar"] = row.name.split("_")[-1].upper()
        parser.add_argument(row.flag, **kwargs)


def build_parser(settings_class: type[ServerSettings] = ServerSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="server.py", description="qwen-stream: streaming TTS server on Qwen3-TTS")
    add_options(parser, options(settings_class))
    return parser


def load_settings(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    settings_class: type[ServerSettings] = ServerSettings,
) -> ServerSettings:
    """CLI flags over environment variables over defaults. Raises ValueError naming the bad setting."""
    environ = os.environ if environ is None else environ
    rows = options(settings_class)
    args = build_parser(settings_class).parse_args(argv)
    values = {row.name: _value(row, getattr(args, row.name), environ) for row in rows}
    _warn_unknown(environ, {row.env_name for row in rows})
    return settings_class(**values)


def _value(row: Option, cli: Any, environ: Mapping[str, str]) -> Any:
    if cli is not None:
        return cli
    if row.env_name not in environ:
        return row.default
    raw = environ[row.env_name]
    try:
        return row.type(raw)
    except ValueError as e:
        raise ValueError(f"environment variable {row.env_name}={raw!r}: {e}") from e


def _warn_unknown(environ: Mapping[str, str], known: set[str]) -> None:
    # A misspelt variable would otherwise be silently ignored and its default used.
    for key in sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in known):
        log.warning("ignoring unknown environment variable %s", key)


def markdown_table(settings_class: type[ServerSettings] = ServerSettings) -> str:
    """The README's configuration table (tests keep README and this table in step)."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for row in options(settings_class):
        rows.append(f"| `{row.flag}` | `{row.env_name}` | {_shown(row.default)} | {row.help} |")
    return "\n".join(rows)


def _shown(default: Any) -> str:
    if default is None or default == ():
        return "-"
    if default is False:
        return "off"
    return f"`{default}`"
