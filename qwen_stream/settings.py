"""Engine settings: what is fixed for the whole server, apart from what a request may choose.

`None` in a sampling field means "use the checkpoint's generation_config.json", so a real checkpoint's
tuned defaults win unless the operator overrides them on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .catalog import BYTES_PER_FRAME, FRAME_SECONDS, SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: F401 (re-exported)


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    subtalker_temperature: float | None = None
    subtalker_top_k: int | None = None
    subtalker_top_p: float | None = None
    do_sample: bool | None = None

    def overrides(self) -> dict:
        """The fields the operator set, as keyword arguments for the model's generate."""
        return {name: value for name, value in self.__dict__.items() if value is not None}

    def merged(self, request: SamplingSettings | None) -> SamplingSettings:
        """A request's own settings laid over these (the server's): what the request set wins."""
        if request is None:
            return self
        return SamplingSettings(**{**self.__dict__, **request.overrides()})

    def problems(self) -> list[str]:
        """What is out of range, in words a client can act on (empty: fine)."""
        found = []
        for name in ("temperature", "subtalker_temperature"):
            value = getattr(self, name)
            if value is not None and not (0 < value <= 10):
                found.append(f"{name} must be > 0 and <= 10")
        for name in ("top_k", "subtalker_top_k"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and 0 <= value <= 100_000):
                found.append(f"{name} must be a whole number >= 0 (0: no top-k)")
        for name in ("top_p", "subtalker_top_p"):
            value = getattr(self, name)
            if value is not None and not (0 < value <= 1):
                found.append(f"{name} must be > 0 and <= 1")
        if self.repetition_penalty is not None and not (0 < self.repetition_penalty <= 10):
            found.append("repetition_penalty must be > 0 and <= 10")
        return found


DECODE_MODES = ("carried", "window")


@dataclass(frozen=True)
class StreamingSettings:
    """How generated frames become PCM chunks (see decoder.py for the schedule)."""

    chunk_size: int = 4
    first_chunk_size: int = 1
    left_context: int = 72  # the window decode's context (decode="window")
    # carried: each chunk decodes its own frames, the decoder's state carried (carried_decode.py; exact, the
    # fastest); window: each chunk decodes `left_context` frames of context again (decoder.py)
    decode: str = "carried"

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not 1 <= self.first_chunk_size <= self.chunk_size:
            raise ValueError(
                f"first_chunk_size must be between 1 and chunk_size ({self.chunk_size}), got {self.first_chunk_size}"
            )
        if self.left_context < 0:
            raise ValueError(f"left_context must be >= 0, got {self.left_context}")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}")


@dataclass(frozen=True)
class FrameBudget:
    """Caps generation length by text length, so a generation that never samples EOS still ends.

    Budget = base + per_char * (non-CJK characters) + per_cjk_char * (CJK characters), at most
    `max_frames`. At 12.5 frames/s the defaults allow 2 s plus 0.16 s per Latin character (about
    6 characters per second, slower than any normal speech) and 0.4 s per CJK character (2.5 per second).
    """

    base: int = 25
    per_char: float = 2.0
    per_cjk_char: float = 5.0
    max_frames: int = 2048

    def for_text(self, text: str) -> int:
        cjk = sum(1 for ch in text if _is_cjk(ch))
        other = sum(1 for ch in text if not ch.isspace()) - cjk
        return max(1, min(self.max_frames, int(self.base + self.per_char * other + self.per_cjk_char * cjk)))


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x9FFF  # CJK ideographs
        or 0xAC00 <= code <= 0xD7AF  # Hangul syllables
        or 0xF900 <= code <= 0xFAFF
    )


@dataclass(frozen=True)
class ModelSettings:
    """Where the weights come from and how they are placed. "auto" picks per machine (model.py)."""

    path: str
    device: str = "auto"
    dtype: str = "auto"
    attention: str = "auto"
    fast_code_predictor: bool = True


@dataclass(frozen=True)
class EngineSettings:
    model: ModelSettings
    streaming: StreamingSettings = field(default_factory=StreamingSettings)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    budget: FrameBudget = field(default_factory=FrameBudget)
    max_batch: int = 4  # rows of one model generated together
    # "continuous": rows join and leave a running batch between steps (continuous.py); "static": today's
    # generate call per batch of jobs that waited together (kept for comparison).
    engine: str = "continuous"
    # The continuous loop's step: "on" captures it as a CUDA graph per batch-size bucket (static KV cache),
    # "auto" does where the device and attention allow and falls back to eager where capture fails, "off" never.
    cuda_graphs: str = "auto"
    # Positions per row of a static KV cache; 0: a dynamic cache, unless CUDA graphs or torch.compile need a
    # static one (then the frame cap plus PROMPT_ROOM).
    static_len: int = 0
    # "on": the continuous loop's static step goes through torch.compile (inductor), one graph per bucket,
    # compiled at warm-up; a step that fails to compile runs eagerly. Off by default: compiling takes tens of
    # seconds per bucket, and what it gains depends on the device (docs/benchmarks.md).
    torch_compile: str = "off"
    # The continuous loop's decode stage on a thread (and CUDA stream) of its own, beside the next talker step:
    # "auto" does on CUDA; on CPU the two threads contend for the cores and the interpreter, and it gains nothing.
    decode_overlap: str = "auto"
    # How a row of the continuous loop draws its sampling noise: "token" a call per token, as qwen-tts does
    # (16 per row per step; on CUDA a seeded row then makes the library's own frames), "block" NOISE_BLOCK steps
    # per call (sampling.NoiseBlocks: each call is a kernel launch on a GPU, paid by every step at a large
    # batch), "auto" blocks on CUDA. On CPU both give the same values, and a block costs a step's latency.
    noise_draws: str = "auto"
    # "on": the continuous loop sends a row's frames as a chunk ahead of the chunk schedule when its reader would
    # otherwise run out of audio before the scheduled chunk (playback.py); "off": the schedule only.
    early_chunks: str = "on"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.cuda_graphs not in SWITCH:
            raise ValueError(f"cuda_graphs must be one of {', '.join(SWITCH)}, got {self.cuda_graphs!r}")
        if self.static_len < 0:
            raise ValueError("static_len must be >= 0")
        if self.torch_compile not in TOGGLE:
            raise ValueError(f"torch_compile must be one of {', '.join(TOGGLE)}, got {self.torch_compile!r}")
        if self.decode_overlap not in SWITCH:
            raise ValueError(f"decode_overlap must be one of {', '.join(SWITCH)}, got {self.decode_overlap!r}")
        if self.noise_draws not in NOISE_DRAWS:
            raise ValueError(f"noise_draws must be one of {', '.join(NOISE_DRAWS)}, got {self.noise_draws!r}")
        if self.early_chunks not in TOGGLE:
            raise ValueError(f"early_chunks must be one of {', '.join(TOGGLE)}, got {self.early_chunks!r}")

    def noise_block(self, device_type: str) -> int:
        """Steps of noise a row draws per call on a device of this type (0: a call per token)."""
        blocks = self.noise_draws == "block" or (self.noise_draws == "auto" and device_type == "cuda")
        return NOISE_BLOCK if blocks else 0

    def cache_length(self, graphs: bool) -> int | None:
        """The static cache's positions per row, or None for a dynamic cache."""
        if self.static_len:
            return self.static_len
        fixed_shapes = graphs or self.torch_compile == "on"
        return self.budget.max_frames + PROMPT_ROOM if fixed_shapes else None


ENGINES = ("continuous", "static")
SWITCH = ("auto", "on", "off")
NOISE_DRAWS = ("auto", "token", "block")
NOISE_BLOCK = 16  # steps of noise a row draws per call with noise_draws "block"
TOGGLE = ("on", "off")
PROMPT_ROOM = 512  # prompt positions a static cache holds beyond the frame cap before it shortens a row
