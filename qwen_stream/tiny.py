"""Random-weight Qwen3-TTS checkpoints built with the real qwen-tts classes (no download, ever).

A checkpoint built here is loaded by `qwen_tts.Qwen3TTSModel.from_pretrained(path)`, the same path real
weights take: `Qwen3TTSConfig` / `Qwen3TTSForConditionalGeneration` for the talker (+ code predictor,
+ speaker encoder for `base`), `Qwen3TTSTokenizerV2Model` (Mimi encoder + causal 12 Hz decoder) under
`speech_tokenizer/`, a byte-level Qwen2 BPE text tokenizer built locally, and `generation_config.json`.
Its audio is noise; everything else (prompt building, generation, hooks, decoding, timing) is real.

    python -m qwen_stream.tiny OUT_DIR --kind base|custom_voice|voice_design [--size tiny|0.6b|1.7b] [--seed N]

Sizes: `tiny` keeps every structural constant that matters for streaming (16 code groups, codebook
2048, codec vocabulary 3072 and its special ids, 1920-sample hop, the decoder's 8 causal sliding-window
layers with window 72, its upsampling chain and kernel sizes) and shrinks only widths and depths, so a
frame step is cheap on a CPU. `0.6b` / `1.7b` use the published dimensions, for GPU benchmarks (they are
gigabytes; they are written in bfloat16 like the released ones).

The same `seed` gives bit-identical weights and files.

Behaviour worth knowing when testing with these checkpoints:
- The talker never samples EOS (its EOS logit is 0 while the codes' logits spread around 0, so EOS never
  reaches the top-k): a generation capped at `max_new_tokens` yields exactly `max_new_tokens - 1` frames
  (the first decode step only samples codebook 0 of frame 1). `generation_config.json` caps tiny at 64.
- The decoder is calibrated so random codes decode to RMS ~0.1 (qwen-tts' own init gives ~1e-10).
- `tts_model_size` is "tiny" (not a substring of "0b6"), so CustomVoice keeps `instruct` like 1.7B.
- Text ids are tiny (byte-level vocabulary + a few merges + specials); the tts pad/bos/eos ids come from
  this tokenizer and are written into `config.json`. Real sizes keep the 151936-row text embedding.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .catalog import (
    FAMILIES,
    HUB_SIZES,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    SPEAKERS,  # noqa: F401 (tiny.SPEAKERS: the speakers its CustomVoice checkpoint has)
    SPOKEN_LANGUAGES,
)

BUILDER_VERSION = 1
MARKER_FILE = "qwen_stream_tiny.json"

KINDS = FAMILIES  # a checkpoint of each model family
SIZES = ("tiny", *HUB_SIZES)  # tiny, or the published dimensions

# CustomVoice speakers (catalog.SPEAKERS) and their codec ids, as in the released configs (keys are lower
# case there; the library lower-cases the requested name before looking it up).
SPK_ID = {
    "vivian": 3065,
    "serena": 3066,
    "uncle_fu": 3010,
    "dylan": 2878,
    "eric": 2875,
    "ryan": 3061,
    "aiden": 2861,
    "ono_anna": 2873,
    "sohee": 2864,
}
# Dylan and Eric speak a dialect: with language Chinese/Auto the library swaps in the dialect's id.
SPK_IS_DIALECT: dict[str, bool | str] = {name: False for name in SPK_ID}
SPK_IS_DIALECT.update({"dylan": "beijing_dialect", "eric": "sichuan_dialect"})

LANGUAGES = SPOKEN_LANGUAGES  # the codec's languages; "Auto" has no id (the library adds it)
CODEC_LANGUAGE_ID = {
    "chinese": 2055,
    "english": 2050,
    "japanese": 2058,
    "korean": 2064,
    "german": 2053,
    "french": 2061,
    "russian": 2069,
    "portuguese": 2071,
    "spanish": 2054,
    "italian": 2070,
    # keys containing "dialect" are not offered as languages (see get_supported_languages)
    "beijing_dialect": 2074,
    "sichuan_dialect": 2062,
}

# Codec (talker) vocabulary: 0..2047 are codebook-0 codes, 2048..3071 control ids. The library
# suppresses [vocab_size - 1024, vocab_size) except EOS when sampling, so vocab_size must stay
# codebook_size + 1024 or the talker could sample codes the decoder cannot look up.
CODEBOOK_SIZE = 2048
CODEC_VOCAB_SIZE = 3072
CODEC_IDS = dict(
    codec_pad_id=2148,
    codec_bos_id=2149,
    codec_eos_token_id=2150,
    codec_think_id=2154,
    codec_nothink_id=2155,
    codec_think_bos_id=2156,
    codec_think_eos_id=2157,
)
NUM_CODE_GROUPS = 16

# Text tokenizer: special tokens in the order of the Qwen2 vocabulary (ids follow the byte alphabet
# and the merges, so they are small and all below the talker's text vocabulary).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<tts_pad>",
    "<tts_text_bos>",
    "<tts_text_eod>",
)
# Words the prompt templates rely on being one token ("assistant" sits at a fixed offset).
MERGED_WORDS = ("assistant", "user", "system")
# Qwen2's pre-tokenizer split (the loader may swap it for its "fixed" variant; both keep these words).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Decoder output level after calibration (RMS of the pre-clamp waveform for random codes).
TARGET_RMS = 0.1


# --------------------------------------------------------------------------------------------------
# Dimensions
# --------------------------------------------------------------------------------------------------


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 in the released proportions 24:20:20 (sums to head_dim/2 exactly)."""
    half = head_dim // 2
    section = [half * 24 // 64, half * 20 // 64, half * 20 // 64]
    section[0] += half - sum(section)
    return section


def _dims(size: str) -> dict[str, Any]:
    if size == "tiny":
        return dict(
            talker=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=16,
                text_hidden_size=64,
            ),
            predictor=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=1,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=16,
            ),
            speaker=dict(enc_channels=[32, 32, 32, 32, 96], enc_attention_channels=16, enc_se_channels=16),
            encoder=dict(
                hidden_size=32,
                num_filters=4,
                num_hidden_layers=1,
                num_attention_heads=4,
                intermediate_size=64,
                codebook_dim=16,
                vector_quantization_hidden_dimension=16,
                num_quantizers=16,
                upsample_groups=32,
            ),
            decoder=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=8,
                num_attention_heads=4,
                num_key_value_heads=4,
                head_dim=8,
                latent_dim=32,
                codebook_dim=32,
                decoder_dim=64,
            ),
            text_vocab_size=None,  # the tokenizer's size, rounded up
            tts_model_size="tiny",
            dtype="float32",
            max_new_tokens=64,
        )
    if size in ("0.6b", "1.7b"):
        wide = size == "1.7b"
        hidden = 2048 if wide else 1024
        return dict(
            talker=dict(
                hidden_size=hidden,
                intermediate_size=6144 if wide else 3072,
                num_hidden_layers=28,
                num_attention_heads=16,
                num_key_value_heads=8,
                head_dim=128,
                text_hidden_size=2048,
            ),
            predictor=dict(
                hidden_size=1024,
                intermediate_size=3072,
                num_hidden_layers=5,
                num_attention_heads=16,
                num_key_value_heads=8,
                head_dim=128,
            ),
            speaker=dict(enc_channels=[512, 512, 512, 512, 1536], enc_attention_channels=128, enc_se_channels=128),
            encoder=dict(
                hidden_size=512,
                num_filters=64,
                num_hidden_layers=8,
                num_attention_heads=8,
                intermediate_size=2048,
                codebook_dim=256,
                vector_quantization_hidden_dimension=256,
                num_quantizers=32,
                upsample_groups=512,
            ),
            decoder=dict(
                hidden_size=512,
                intermediate_size=1024,
                num_hidden_layers=8,
                num_attention_heads=16,
                num_key_value_heads=16,
                head_dim=64,
                latent_dim=1024,
                codebook_dim=512,
                decoder_dim=1536,
            ),
            text_vocab_size=151936,
            tts_model_size="1b7" if wide else "0b6",
            dtype="bfloat16",
            max_new_tokens=1024,
        )
    raise ValueError(f"unknown size {size!r}; expected one of {SIZES}")


# --------------------------------------------------------------------------------------------------
# Configs (plain dicts -> the library's config classes)
# --------------------------------------------------------------------------------------------------


def talker_model_config_dict(
    kind: str, size: str = "tiny", text_vocab_size: int | None = None, special_ids: dict[str, int] | None = None
) -> dict[str, Any]:
    """The root `config.json` content (before save_pretrained adds its bookkeeping)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    d = _dims(size)
    special_ids = special_ids or _tokenizer_special_ids()
    vocab = d["text_vocab_size"] or text_vocab_size or _round_up(_tokenizer_vocab_size(), 64)
    t, p = d["talker"], d["predictor"]
    code_predictor = dict(
        vocab_size=CODEBOOK_SIZE,
        hidden_size=p["hidden_size"],
        intermediate_size=p["intermediate_size"],
        num_hidden_layers=p["num_hidden_layers"],
        num_attention_heads=p["num_attention_heads"],
        num_key_value_heads=p["num_key_value_heads"],
        head_dim=p["head_dim"],
        hidden_act="silu",
        max_position_embeddings=65536,
        rms_norm_eps=1e-6,
        rope_theta=1000000,
        rope_scaling=None,
        use_sliding_window=False,
        num_code_groups=NUM_CODE_GROUPS,
    )
    custom = kind == "custom_voice"
    talker = dict(
        code_predictor_config=code_predictor,
        vocab_size=CODEC_VOCAB_SIZE,
        hidden_size=t["hidden_size"],
        intermediate_size=t["intermediate_size"],
        num_hidden_layers=t["num_hidden_layers"],
        num_attention_heads=t["num_attention_heads"],
        num_key_value_heads=t["num_key_value_heads"],
        head_dim=t["head_dim"],
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_theta=1000000,
        rope_scaling=dict(rope_type="default", mrope_section=_mrope_section(t["head_dim"]), interleaved=True),
        use_sliding_window=False,
        num_code_groups=NUM_CODE_GROUPS,
        text_vocab_size=vocab,
        text_hidden_size=t["text_hidden_size"],
        position_id_per_seconds=13,
        spk_id=dict(SPK_ID) if custom else {},
        spk_is_dialect=dict(SPK_IS_DIALECT) if custom else {},
        codec_language_id=dict(CODEC_LANGUAGE_ID),
        **CODEC_IDS,
    )
    speaker = dict(
        mel_dim=128,
        enc_dim=t["hidden_size"],  # the x-vector is fed to the talker as one codec-embedding row
        enc_channels=d["speaker"]["enc_channels"],
        enc_kernel_sizes=[5, 3, 3, 3, 1],
        enc_dilations=[1, 2, 3, 4, 1],
        enc_attention_channels=d["speaker"]["enc_attention_channels"],
        enc_res2net_scale=8,
        enc_se_channels=d["speaker"]["enc_se_channels"],
        sample_rate=SAMPLE_RATE,
    )
    return dict(
        talker_config=talker,
        speaker_encoder_config=speaker,
        tokenizer_type="qwen3_tts_tokenizer_12hz",
        tts_model_size=d["tts_model_size"],
        tts_model_type=kind,
        im_start_token_id=special_ids["<|im_start|>"],
        im_end_token_id=special_ids["<|im_end|>"],
        tts_pad_token_id=special_ids["<tts_pad>"],
        tts_bos_token_id=special_ids["<tts_text_bos>"],
        tts_eos_token_id=special_ids["<tts_text_eod>"],
        assistant_token_id=special_ids["assistant"],
    )


def speech_tokenizer_config_dict(size: str = "tiny") -> dict[str, Any]:
    """`speech_tokenizer/config.json` content: Mimi encoder (12.5 Hz) + the causal 12 Hz decoder."""
    d = _dims(size)
    e, dec = d["encoder"], d["decoder"]
    encoder = dict(
        sampling_rate=SAMPLE_RATE,
        frame_rate=12.5,  # 24000 / prod([8, 6, 5, 4]) = 25 Hz, halved by the downsample conv
        audio_channels=1,
        hidden_size=e["hidden_size"],
        num_filters=e["num_filters"],
        num_residual_layers=1,
        upsampling_ratios=[8, 6, 5, 4],
        kernel_size=7,
        last_kernel_size=3,
        residual_kernel_size=3,
        dilation_growth_rate=2,
        use_causal_conv=True,
        pad_mode="constant",
        compress=2,
        codebook_size=CODEBOOK_SIZE,
        codebook_dim=e["codebook_dim"],
        vector_quantization_hidden_dimension=e["vector_quantization_hidden_dimension"],
        num_quantizers=e["num_quantizers"],
        num_semantic_quantizers=1,
        upsample_groups=e["upsample_groups"],
        num_hidden_layers=e["num_hidden_layers"],
        intermediate_size=e["intermediate_size"],
        num_attention_heads=e["num_attention_heads"],
        num_key_value_heads=e["num_attention_heads"],
        head_dim=e["hidden_size"] // e["num_attention_heads"],
        hidden_act="gelu",
        max_position_embeddings=8000,
        norm_eps=1e-5,
        rope_theta=10000.0,
        sliding_window=250,
        layer_scale_initial_scale=0.01,
    )
    decoder = dict(
        codebook_size=CODEBOOK_SIZE,
        codebook_dim=dec["codebook_dim"],
        hidden_size=dec["hidden_size"],
        latent_dim=dec["latent_dim"],
        max_position_embeddings=8000,
        rope_theta=10000,
        num_attention_heads=dec["num_attention_heads"],
        num_key_value_heads=dec["num_key_value_heads"],
        head_dim=dec["head_dim"],
        attention_bias=False,
        sliding_window=72,
        intermediate_size=dec["intermediate_size"],
        hidden_act="silu",
        layer_scale_initial_scale=0.01,
        rms_norm_eps=1e-5,
        num_hidden_layers=dec["num_hidden_layers"],
        num_quantizers=NUM_CODE_GROUPS,
        num_semantic_quantizers=1,
        upsample_rates=[8, 5, 4, 3],  # x [2, 2] below = 1920 samples per frame
        upsampling_ratios=[2, 2],
        decoder_dim=dec["decoder_dim"],
        attention_dropout=0.0,
    )
    return dict(
        encoder_config=encoder,
        decoder_config=decoder,
        encoder_valid_num_quantizers=NUM_CODE_GROUPS,
        input_sample_rate=SAMPLE_RATE,
        output_sample_rate=SAMPLE_RATE,
        decode_upsample_rate=SAMPLES_PER_FRAME,
        encode_downsample_rate=SAMPLES_PER_FRAME,
    )


def generation_config_dict(size: str = "tiny", max_new_tokens: int | None = None) -> dict[str, Any]:
    """`generation_config.json`: the wrapper's sampling defaults (qwen-tts reads it as a plain dict)."""
    return dict(
        do_sample=True,
        top_k=50,
        top_p=1.0,
        temperature=0.9,
        repetition_penalty=1.05,
        subtalker_dosample=True,
        subtalker_top_k=50,
        subtalker_top_p=1.0,
        subtalker_temperature=0.9,
        max_new_tokens=int(max_new_tokens or _dims(size)["max_new_tokens"]),
    )


def make_configs(kind: str, size: str = "tiny"):
    """(Qwen3TTSConfig, Qwen3TTSTokenizerV2Config) for a kind and size, without building weights."""
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config

    d = _dims(size)
    config = Qwen3TTSConfig(**talker_model_config_dict(kind, size))
    st_config = Qwen3TTSTokenizerV2Config(**speech_tokenizer_config_dict(size))
    config.dtype = d["dtype"]
    st_config.dtype = d["dtype"]
    return config, st_config


def count_parameters(kind: str, size: str) -> dict[str, int]:
    """Parameter counts of a kind/size, built on the meta device (no memory, no disk)."""
    import torch
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model

    config, st_config = make_configs(kind, size)
    with torch.device("meta"):
        model = Qwen3TTSForConditionalGeneration(config)
        st = Qwen3TTSTokenizerV2Model(st_config)

    def n(module) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    talker = model.talker
    return dict(
        total=n(model),
        talker=n(talker),
        text_embedding=n(talker.model.text_embedding),
        code_predictor=n(talker.code_predictor),
        speaker_encoder=n(model.speaker_encoder),
        speech_decoder=n(st.decoder),
        speech_encoder=n(st.encoder),
    )


# --------------------------------------------------------------------------------------------------
# Text tokenizer
# --------------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs, strict=True))
    return [chr(table[b]) for b in range(256)]


def _bpe_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode())}
    merges: list[tuple[str, str]] = []
    for word in MERGED_WORDS:
        for end in range(2, len(word) + 1):
            left, right = word[: end - 1], word[end - 1]
            if word[:end] not in vocab:
                merges.append((left, right))
                vocab[word[:end]] = len(vocab)
    return vocab, merges


def _tokenizer_vocab_size() -> int:
    vocab, _ = _bpe_vocab_and_merges()
    return len(vocab) + len(SPECIAL_TOKENS)


def _tokenizer_special_ids() -> dict[str, int]:
    vocab, _ = _bpe_vocab_and_merges()
    ids = {tok: len(vocab) + i for i, tok in enumerate(SPECIAL_TOKENS)}
    ids["assistant"] = vocab["assistant"]
    ids["\n"] = vocab[_bytes_to_unicode()[ord("\n")]]
    return ids


def build_text_tokenizer():
    """A byte-level Qwen2 BPE tokenizer (Qwen2TokenizerFast) with a tiny vocabulary."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import Qwen2TokenizerFast

    vocab, merges = _bpe_vocab_and_merges()
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    # A Sequence with the Split first, as in Qwen2's tokenizer.json: transformers' loader replaces
    # pre_tokenizer[0] when it applies its regex fix (fix_mistral_regex=True, which qwen-tts passes).
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    fast = Qwen2TokenizerFast(
        tokenizer_object=tok,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        model_max_length=131072,
        split_special_tokens=False,
    )
    return fast


# --------------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------------


def _round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def _make_decoder_audible(decoder, seed: int) -> float:
    """Give the 12 Hz decoder weights whose output is noise at a useful level, not ~1e-10.

    The library's default init (normal std 0.02 on every conv, all-zero codebooks) makes the waveform
    vanish. Use torch's own conv/linear init, random codebooks, then scale the last conv so random codes
    decode to RMS ~TARGET_RMS. Returns the measured RMS.
    """
    import torch
    from torch import nn

    for module in decoder.modules():
        if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d, nn.Linear)):
            module.reset_parameters()
    for name, param in decoder.named_parameters():
        if name.endswith("_codebook.embedding_sum"):
            param.data.normal_(0.0, 1.0)
    last = decoder.decoder[-1].conv
    gen = torch.Generator().manual_seed(seed + 1)
    codes = torch.randint(0, decoder.config.codebook_size, (1, decoder.config.num_quantizers, 12), generator=gen)
    captured: dict[str, torch.Tensor] = {}
    handle = decoder.decoder[-1].register_forward_hook(lambda m, i, o: captured.__setitem__("wav", o))
    try:
        with torch.no_grad():
            decoder(codes)
    finally:
        handle.remove()
    wav = captured["wav"].float()
    rms = float(wav.pow(2).mean().sqrt())
    if not (rms > 0 and math.isfinite(rms)):
        raise RuntimeError(f"tiny decoder calibration failed (pre-scale RMS {rms})")
    scale = TARGET_RMS / rms
    with torch.no_grad():
        last.weight.mul_(scale)
        if last.bias is not None:
            last.bias.mul_(scale)
    # the last conv is linear in its parameters: the scaled output is the captured one times `scale`
    return float((wav * scale).clamp(-1, 1).pow(2).mean().sqrt())


def _randomize_encoder_codebooks(encoder, seed: int) -> None:
    """Mimi's codebooks start at zero (every frame would map to code 0): draw them at random, so that
    reference audio encodes to varied codes."""
    import torch

    gen = torch.Generator().manual_seed(seed + 2)
    for name, buf in encoder.named_buffers():
        if name.endswith("codebook.embed_sum"):
            buf.copy_(torch.randn(buf.shape, generator=gen) * 0.5)
    for module in encoder.modules():
        if hasattr(module, "_embed"):
            module._embed = None


@contextlib.contextmanager
def _threads(n: int | None):
    """Run with `n` intra-op threads. Tiny tensors gain nothing from more, and OpenMP threads that wait
    on a busy core (another process, another test) turn a 50 ms decode into seconds."""
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _default_dtype(dtype):
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _save_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _fix_root_config(path: Path, config_dict: dict[str, Any]) -> None:
    """save_pretrained writes `model_type: ""` (and other PretrainedConfig keys) into
    speaker_encoder_config, whose __init__ takes no **kwargs: keep only its own fields."""
    cfg = json.loads(path.read_text(encoding="utf-8"))
    cfg["speaker_encoder_config"] = dict(config_dict["speaker_encoder_config"])
    _save_json(path, cfg)


def _write_checkpoint(out: Path, kind: str, size: str, seed: int, max_new_tokens: int | None) -> dict:
    import torch
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model
    from transformers import EncodecFeatureExtractor

    d = _dims(size)
    dtype = getattr(torch, d["dtype"])

    # text tokenizer
    text_tok = build_text_tokenizer()
    special_ids = {t: text_tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    special_ids["assistant"] = text_tok.convert_tokens_to_ids("assistant")
    text_vocab = d["text_vocab_size"] or _round_up(len(text_tok), 64)
    config_dict = talker_model_config_dict(kind, size, text_vocab_size=text_vocab, special_ids=special_ids)
    assert max(special_ids.values()) < config_dict["talker_config"]["text_vocab_size"]

    with torch.random.fork_rng(devices=[]), _threads(1 if size == "tiny" else None):
        torch.manual_seed(seed)
        # talker (+ code predictor, + speaker encoder for base)
        config = Qwen3TTSConfig(**config_dict)
        with _default_dtype(dtype):  # real sizes: initialise in bfloat16 (half the memory and time)
            model = Qwen3TTSForConditionalGeneration(config).eval()
        with torch.no_grad():
            # EOS logit exactly 0 while the other codes' logits spread around 0: EOS never makes the
            # top-k, so a generation always runs to its max_new_tokens (predictable lengths).
            model.talker.codec_head.weight[CODEC_IDS["codec_eos_token_id"]].zero_()
        model.to(dtype)
        model.config.dtype = d["dtype"]
        model.save_pretrained(out, safe_serialization=True)
        del model

        # speech tokenizer
        torch.manual_seed(seed + 1000)
        st_config = Qwen3TTSTokenizerV2Config(**speech_tokenizer_config_dict(size))
        st_model = Qwen3TTSTokenizerV2Model(st_config).eval()
        rms = _make_decoder_audible(st_model.decoder, seed)
        _randomize_encoder_codebooks(st_model.encoder, seed)
        st_model.to(dtype)
        st_model.config.dtype = d["dtype"]
        st_dir = out / "speech_tokenizer"
        st_model.save_pretrained(st_dir, safe_serialization=True)
        del st_model

    _fix_root_config(out / "config.json", config_dict)
    _save_json(out / "generation_config.json", generation_config_dict(size, max_new_tokens))
    text_tok.save_pretrained(out)
    EncodecFeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, return_attention_mask=True
    ).save_pretrained(st_dir)
    return dict(decoder_rms=rms)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def _marker(kind: str, size: str, seed: int) -> dict[str, Any]:
    return dict(builder="qwen_stream.tiny", version=BUILDER_VERSION, kind=kind, size=size, seed=seed)


def is_complete(
    path: str | os.PathLike, kind: str | None = None, size: str | None = None, seed: int | None = None
) -> bool:
    """True when `path` holds a checkpoint this builder finished (marker written last, same version)."""
    path = Path(path)
    try:
        marker = json.loads((path / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("version") != BUILDER_VERSION:
        return False
    for key, want in (("kind", kind), ("size", size), ("seed", seed)):
        if want is not None and marker.get(key) != want:
            return False
    needed = (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "speech_tokenizer/config.json",
        "speech_tokenizer/model.safetensors",
        "speech_tokenizer/preprocessor_config.json",
    )
    return all((path / name).is_file() for name in needed)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def build_checkpoint(
    out_dir: str | os.PathLike,
    kind: str = "base",
    size: str = "tiny",
    seed: int = 0,
    *,
    overwrite: bool = False,
    max_new_tokens: int | None = None,
) -> Path:
    """Build a random-weight checkpoint of `kind` and `size` at `out_dir` and return its path.

    The files are written into a temporary sibling directory and renamed into place at the end, so
    `out_dir` never holds a half-built checkpoint. `out_dir` may exist if it is empty (or with
    `overwrite=True`). Same seed -> identical weights.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {SIZES}")
    out = Path(out_dir).absolute()
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --force)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the checkpoint is an ordinary directory
    try:
        info = _write_checkpoint(tmp, kind, size, seed, max_new_tokens)
        marker = _marker(kind, size, seed)
        marker.update(decoder_rms=round(info["decoder_rms"], 6))
        _save_json(tmp / MARKER_FILE, marker)  # written last: its presence means complete
        if out.exists() or out.is_symlink():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / "old")
            _remove(trash)
        os.replace(tmp, out)
    except BaseException:
        _remove(tmp)
        raise
    return out


@contextlib.contextmanager
def _build_lock(lock_path: Path):
    """An exclusive advisory lock, so concurrent processes build a cache entry once (POSIX only;
    elsewhere the atomic rename alone keeps the cache consistent)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_checkpoint(cache_dir: str | os.PathLike, kind: str, size: str = "tiny", seed: int = 0) -> Path:
    """`cache_dir/<kind>-<size>`, built once and reused while complete.

    A directory there that is not complete (a crash mid-build, an older builder, another seed) is
    replaced. Builds happen in a temporary directory renamed into place, so nobody ever sees a partial
    one, and a lock file makes concurrent processes build it once.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {SIZES}")
    cache = Path(cache_dir).absolute()
    target = cache / f"{kind}-{size}"
    if is_complete(target, kind, size, seed):
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with _build_lock(cache / f".{kind}-{size}.lock"):
        if is_complete(target, kind, size, seed):  # built by another process while we waited
            return target
        tmp_parent = Path(tempfile.mkdtemp(prefix=f".{kind}-{size}.tmp-", dir=cache))
        try:
            built = build_checkpoint(tmp_parent / "ckpt", kind=kind, size=size, seed=seed)
            if target.exists() or target.is_symlink():
                try:
                    os.replace(target, tmp_parent / "stale")
                except FileNotFoundError:
                    pass
            try:
                os.replace(built, target)
            except OSError:
                if not is_complete(target, kind, size, seed):
                    raise
        finally:
            _remove(tmp_parent)
    return target


def dir_size(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qwen_stream.tiny",
        description="Build a random-weight Qwen3-TTS checkpoint with the real qwen-tts classes.",
    )
    parser.add_argument("out_dir", help="directory to create (must be absent or empty unless --force)")
    parser.add_argument("--kind", choices=KINDS, default="base")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="max_new_tokens written to generation_config.json (default: 64 tiny, 1024 real sizes)",
    )
    parser.add_argument("--force", action="store_true", help="replace out_dir if it is not empty")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if not (Path(args.out_dir).exists() and any(Path(args.out_dir).iterdir()) and not args.force):
        import qwen_tts  # noqa: F401  (the slow part: ~5 s of imports; timed apart from the build)
    imported = time.perf_counter()
    try:
        path = build_checkpoint(
            args.out_dir,
            kind=args.kind,
            size=args.size,
            seed=args.seed,
            overwrite=args.force,
            max_new_tokens=args.max_new_tokens,
        )
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    marker = json.loads((path / MARKER_FILE).read_text(encoding="utf-8"))
    print(
        json.dumps(
            dict(
                path=str(path),
                kind=args.kind,
                size=args.size,
                seed=args.seed,
                import_seconds=round(imported - started, 2),
                build_seconds=round(time.perf_counter() - imported, 2),
                bytes=dir_size(path),
                decoder_rms=round(marker["decoder_rms"], 4),
            )
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
