"""Loading a Qwen3-TTS checkpoint (local directory or hub id) and what the rest of the engine needs of it."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .carried_decode import CONV_CONTEXT_FRAMES, CarriedDecoder
from .catalog import FAMILIES, SAMPLE_RATE, SAMPLES_PER_FRAME, Family, speaker_display_name
from .settings import ModelSettings

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message says what to do (one line, no traceback needed)."""


@dataclass(frozen=True)
class Placement:
    device: str
    dtype: torch.dtype
    attention: str


def resolve_placement(settings: ModelSettings) -> Placement:
    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available; use --device cpu")

    dtypes = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if settings.dtype == "auto":
        if device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            dtype = torch.float32
    elif settings.dtype in dtypes:
        dtype = dtypes[settings.dtype]
    else:
        raise ModelLoadError(f"unknown dtype {settings.dtype!r}; use one of auto, bf16, fp16, fp32")

    attention = settings.attention
    if attention == "auto":
        flash = device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None
        attention = "flash_attention_2" if flash and dtype != torch.float32 else "sdpa"
    elif attention not in ("sdpa", "eager", "flash_attention_2"):
        raise ModelLoadError(f"unknown attention {attention!r}; use one of auto, sdpa, eager, flash_attention_2")
    return Placement(device=device, dtype=dtype, attention=attention)


def _check_local_checkpoint(path: Path) -> None:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"{path} has no config.json: it is not a Qwen3-TTS checkpoint directory")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{config_file} is not readable JSON ({e})") from e
    if config.get("model_type") != "qwen3_tts":
        raise ModelLoadError(
            f"{path} holds a {config.get('model_type')!r} model, not a Qwen3-TTS one (model_type 'qwen3_tts'); "
            "point --model-path at a Qwen3-TTS-12Hz checkpoint"
        )
    if config.get("tokenizer_type", "qwen3_tts_tokenizer_12hz") != "qwen3_tts_tokenizer_12hz" and "12hz" not in str(
        config.get("tokenizer_type", "")
    ):
        raise ModelLoadError(f"{path} uses tokenizer {config.get('tokenizer_type')!r}; only the 12 Hz models stream")
    for required in ("generation_config.json", "speech_tokenizer/config.json"):
        if not (path / required).is_file():
            raise ModelLoadError(f"{path} is missing {required}; the checkpoint is incomplete, download it again")


def check_model_source(path: str) -> str:
    """Fails fast, before anything heavy loads, on a path that cannot be a checkpoint. Returns the source."""
    local = Path(path).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(f"{local} is a file; --model-path takes a checkpoint directory or a hub id")
        _check_local_checkpoint(local)
        return str(local)
    if not _HUB_ID.match(path):
        raise ModelLoadError(
            f"{path!r} is neither an existing directory nor a hub id like 'Qwen/Qwen3-TTS-12Hz-0.6B-Base'; "
            "check the path, or run with --demo to try the server without weights"
        )
    return path


def load_model(settings: ModelSettings) -> LoadedModel:
    """Load a checkpoint through qwen-tts' own `from_pretrained` (the same path for real and tiny weights)."""
    source = check_model_source(settings.path)
    placement = resolve_placement(settings)
    # What qwen-tts would print about SoX and flash-attn is silenced at import (qwen_stream/__init__.py);
    # these are the facts, once, in our words.
    _note_optional_dependencies(placement)
    from qwen_tts import Qwen3TTSModel  # heavy import: only once a model is really to be loaded

    local = Path(source)
    log.info("loading %s on %s (%s, %s)", source, placement.device, placement.dtype, placement.attention)
    try:
        tts = Qwen3TTSModel.from_pretrained(
            source, device_map=placement.device, dtype=placement.dtype, attn_implementation=placement.attention
        )
    except ModelLoadError:
        raise
    except OSError as e:
        if not local.exists():
            raise ModelLoadError(
                f"could not fetch {source!r} from the Hugging Face hub ({_first_line(e)}); on a machine with "
                f"network run `huggingface-cli download {source} --local-dir DIR` and pass --model-path DIR"
            ) from e
        raise ModelLoadError(f"could not read checkpoint {source}: {_first_line(e)}") from e
    except (ValueError, TypeError, KeyError, RuntimeError, ImportError) as e:
        raise ModelLoadError(f"could not load checkpoint {source}: {_first_line(e)}") from e
    return LoadedModel(tts=tts, source=source, placement=placement, fast_code_predictor=settings.fast_code_predictor)


_noted_optional_dependencies = False


def _note_optional_dependencies(placement: Placement) -> None:
    global _noted_optional_dependencies
    if _noted_optional_dependencies:
        return
    _noted_optional_dependencies = True
    if importlib.util.find_spec("flash_attn") is None:
        log.info(
            "flash-attn not installed: using %s attention%s",
            placement.attention,
            ' (pip install -e ".[gpu]" adds it)' if placement.device.startswith("cuda") else "",
        )
    if shutil.which("sox") is None:
        log.info("SoX not installed: fine, qwen-stream never uses it (qwen-tts only looks for it at import)")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


class LoadedModel:
    """One loaded checkpoint: the qwen-tts wrapper plus the facts the engine asks of it.

    Construction installs the frame tap (once per model) and, optionally, the lean code-predictor loop.
    """

    def __init__(self, tts, source: str, placement: Placement, fast_code_predictor: bool = True):
        from .code_predictor import install_fast_code_predictor
        from .tap import FrameTap

        self.tts = tts
        self.source = source
        self.placement = placement
        self.inner = tts.model
        config = self.inner.config
        self.family: Family = config.tts_model_type  # checked just below
        if self.family not in FAMILIES:
            raise ModelLoadError(f"unknown Qwen3-TTS model type {self.family!r}")
        self.size: str = str(config.tts_model_size)
        self.eos_id: int = int(config.talker_config.codec_eos_token_id)
        self.num_code_groups: int = int(config.talker_config.num_code_groups)
        # With no pad id in the talker's generation config, transformers' generate logs "Setting
        # `pad_token_id` to `eos_token_id`:N for open-end generation." on every call and then does just
        # that (qwen-tts passes eos_token_id=codec_eos_token_id). Setting the same value here: same padding
        # of finished batch rows, no line per request.
        generation_config = self.inner.talker.generation_config
        if generation_config.pad_token_id is None:
            generation_config.pad_token_id = self.eos_id
        self.tap = FrameTap(self.inner.talker, eos_id=self.eos_id)
        if fast_code_predictor:
            install_fast_code_predictor(self.inner.talker.code_predictor)
        speech_model = self.inner.speech_tokenizer.model
        self._decoder = speech_model.decoder
        # decode(keep=...) replays the decoder's forward in stages; only if it has the stages we know.
        self._staged_decode = all(
            hasattr(self._decoder, name) for name in ("quantizer", "pre_conv", "pre_transformer", "upsample", "decoder")
        )
        # Chunks decoded with the decoder's state carried (--decode carried), where the decoder has the stages
        # and layers carried_decode.py knows; elsewhere chunks decode a window of context again.
        self.carried: CarriedDecoder | None = None
        if self._staged_decode:
            try:
                self.carried = CarriedDecoder(self._decoder)
            except ValueError as error:
                log.info("chunks decode with a window of context: %s", error)
        upsample = int(speech_model.get_decode_upsample_rate())
        if upsample != SAMPLES_PER_FRAME or int(speech_model.get_output_sample_rate()) != SAMPLE_RATE:
            raise ModelLoadError(
                f"speech tokenizer makes {upsample} samples per frame at {speech_model.get_output_sample_rate()} Hz; "
                f"expected {SAMPLES_PER_FRAME} at {SAMPLE_RATE}"
            )

    @property
    def device(self) -> torch.device:
        return self.inner.talker.device

    @property
    def speakers(self) -> list[str]:
        """Speaker names as users write them (display case when known)."""
        return [speaker_display_name(str(k)) for k in self.inner.get_supported_speakers()]

    @property
    def languages(self) -> list[str]:
        return [str(lang) for lang in self.inner.get_supported_languages()]

    @property
    def accepts_instruct(self) -> bool:
        """VoiceDesign always; CustomVoice only above 0.6B (the library drops it for "0b6")."""
        if self.family == "voice_design":
            return True
        return self.family == "custom_voice" and self.size != "0b6"

    def decode(self, codes: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        """Codes (T, 16) -> float waveform. With `keep`, only the last `keep` frames' samples are wanted:
        the transformer still sees the whole window (its context is long), but the sample-rate conv stack
        after it, where nearly all the cost is, runs on `keep + CONV_CONTEXT_FRAMES` frames only."""
        return self.decode_batch(codes.unsqueeze(0), keep)[0]

    @torch.inference_mode()
    def decode_batch(self, codes: torch.Tensor, keep: int | None = None) -> torch.Tensor:
        """Codes (B, T, 16), windows of equal length -> float waveforms (B, samples); `keep` as for decode."""
        dec = self._decoder
        window = codes.to(self.device).long().clamp(min=0).transpose(1, 2)
        if keep is None or not self._staged_decode:
            return dec(window)[:, 0].float()
        hidden = dec.quantizer.decode(window)
        hidden = dec.pre_conv(hidden).transpose(1, 2)
        hidden = dec.pre_transformer(inputs_embeds=hidden).last_hidden_state.permute(0, 2, 1)
        hidden = hidden[..., max(0, hidden.shape[-1] - keep - CONV_CONTEXT_FRAMES) :]
        for blocks in dec.upsample:
            for block in blocks:
                hidden = block(hidden)
        for block in dec.decoder:
            hidden = block(hidden)
        return hidden.clamp(min=-1, max=1)[:, 0].float()

    def describe(self) -> dict:
        return {
            "source": self.source,
            "family": self.family,
            "size": self.size,
            "device": self.placement.device,
            "dtype": str(self.placement.dtype).removeprefix("torch."),
            "attention": self.placement.attention,
        }
