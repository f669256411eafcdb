"""The tiny random-weight checkpoints load and run through qwen-tts' own public path.

Everything here goes through `Qwen3TTSModel.from_pretrained(dir)` and the library's `generate_*`
wrappers, exactly as real weights would. CPU only, no network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("qwen_tts")

from qwen_stream import tiny  # noqa: E402

SR = 24_000
HOP = 1920
MAX_NEW = 12
# The talker's first decode step only samples codebook 0 of frame 1; each later step completes the
# previous frame. The tiny checkpoints never sample EOS, so a capped run yields max_new_tokens - 1 frames.
FRAMES = MAX_NEW - 1


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny tensors gain nothing from more threads, and OpenMP threads waiting on a busy core slow
    # everything down by an order of magnitude on a shared 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def paths(ckpt_root) -> dict[str, Path]:
    return {kind: tiny.build_checkpoint(ckpt_root / kind, kind=kind, seed=0) for kind in tiny.KINDS}


@pytest.fixture(scope="module")
def models(paths):
    from qwen_tts import Qwen3TTSModel

    return {kind: Qwen3TTSModel.from_pretrained(str(path)) for kind, path in paths.items()}


def sweep(seconds: float = 3.0, sr: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * (150.0 + 300.0 * t) * t)).astype(np.float32)


def assert_audible(wav: np.ndarray, frames: int = FRAMES, slack: int = 0) -> None:
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - frames * HOP) <= slack, (len(wav), frames * HOP)
    assert np.isfinite(wav).all()
    assert np.abs(wav).max() <= 1.0
    assert np.any(wav != 0)
    rms = float(np.sqrt(np.mean(wav.astype(np.float64) ** 2)))
    assert 1e-3 < rms < 1.0, rms


# -- layout -------------------------------------------------------------------------------------------

def test_layout_and_configs(paths):
    for kind, path in paths.items():
        for name in ("config.json", "model.safetensors", "generation_config.json", "vocab.json", "merges.txt",
                     "tokenizer.json", "tokenizer_config.json", "speech_tokenizer/config.json",
                     "speech_tokenizer/model.safetensors", "speech_tokenizer/preprocessor_config.json"):
            assert (path / name).is_file(), (kind, name)
        assert tiny.is_complete(path, kind, "tiny")
        cfg = json.loads((path / "config.json").read_text())
        assert cfg["model_type"] == "qwen3_tts"
        assert cfg["tts_model_type"] == kind
        assert cfg["tokenizer_type"] == "qwen3_tts_tokenizer_12hz"
        assert "model_type" not in cfg["speaker_encoder_config"]
        talker = cfg["talker_config"]
        assert talker["num_code_groups"] == 16 == talker["code_predictor_config"]["num_code_groups"]
        assert talker["vocab_size"] == 3072 and talker["code_predictor_config"]["vocab_size"] == 2048
        rope = talker["rope_scaling"]
        assert sum(rope["mrope_section"]) == talker["head_dim"] // 2 and rope["interleaved"] is True
        assert cfg["speaker_encoder_config"]["enc_dim"] == talker["hidden_size"]
        for key in ("tts_pad_token_id", "tts_bos_token_id", "tts_eos_token_id", "im_start_token_id"):
            assert cfg[key] < talker["text_vocab_size"]
        gen = json.loads((path / "generation_config.json").read_text())
        assert gen["max_new_tokens"] == 64 and gen["do_sample"] is True
        st = json.loads((path / "speech_tokenizer/config.json").read_text())
        assert st["model_type"] == "qwen3_tts_tokenizer_12hz"
        assert st["decode_upsample_rate"] == HOP == st["encode_downsample_rate"]
        dec = st["decoder_config"]
        assert dec["sliding_window"] == 72 and dec["num_hidden_layers"] == 8 and dec["num_quantizers"] == 16
        assert int(np.prod(dec["upsample_rates"] + dec["upsampling_ratios"])) == HOP
        assert int(np.prod(st["encoder_config"]["upsampling_ratios"])) * 2 == HOP
        fe = json.loads((path / "speech_tokenizer/preprocessor_config.json").read_text())
        assert fe["feature_extractor_type"] == "EncodecFeatureExtractor"
        assert fe["feature_size"] == 1 and fe["sampling_rate"] == SR


def test_text_tokenizer_prompt_offsets(models):
    m = models["custom_voice"]
    text = "Hello, wörld! 你好。"
    ids = m._tokenize_texts([m._build_assistant_text(text)])[0][0].tolist()
    tok = m.processor.tokenizer
    newline = tok.encode("\n")
    assert len(newline) == 1 and len(tok.encode("assistant")) == 1
    pieces = tok.convert_ids_to_tokens(ids)
    nl = tok.convert_ids_to_tokens(newline[0])
    assert pieces[:3] == ["<|im_start|>", "assistant", nl]
    assert pieces[-5:] == ["<|im_end|>", nl, "<|im_start|>", "assistant", nl]
    assert tok.decode(ids[3:-5]) == text
    ref = m._tokenize_texts([m._build_ref_text("ref words")])[0][0].tolist()
    assert tok.decode(ref[3:-2]) == "ref words"
    cfg = m.model.config
    assert max(cfg.tts_pad_token_id, cfg.tts_bos_token_id, cfg.tts_eos_token_id) < cfg.talker_config.text_vocab_size


# -- generation through the library's wrappers ----------------------------------------------------------

def test_custom_voice_speakers_and_languages(models):
    m = models["custom_voice"]
    assert m.get_supported_speakers() == sorted(s.lower() for s in tiny.SPEAKERS)
    assert set(m.get_supported_languages()) == {"auto"} | {lang.lower() for lang in tiny.LANGUAGES}


def test_custom_voice_generates_audio(models):
    m = models["custom_voice"]
    frames_seen = []

    def hook(module, args, output):
        codes = output.hidden_states[1]
        if codes is not None:
            frames_seen.append(tuple(codes.shape))

    handle = m.model.talker.register_forward_hook(hook)
    try:
        torch.manual_seed(0)
        wavs, sr = m.generate_custom_voice(text="Hello there, this is a test.", speaker="Vivian",
                                           language="English", max_new_tokens=MAX_NEW)
    finally:
        handle.remove()
    assert sr == SR and len(wavs) == 1
    assert_audible(wavs[0])
    assert frames_seen == [(1, 16)] * FRAMES


@pytest.mark.parametrize("speaker", tiny.SPEAKERS)
def test_every_speaker_runs(models, speaker):
    # Chinese exercises the dialect swap for Dylan and Eric.
    torch.manual_seed(1)
    wavs, sr = models["custom_voice"].generate_custom_voice(text="你好", speaker=speaker, language="Chinese",
                                                            max_new_tokens=4)
    assert sr == SR
    assert_audible(wavs[0], frames=3)


def test_custom_voice_batch_and_instruct(models):
    torch.manual_seed(2)
    wavs, sr = models["custom_voice"].generate_custom_voice(
        text=["One.", "Two, a bit longer."], speaker=["Ryan", "Sohee"], language=["English", "Auto"],
        instruct="Speak slowly.", max_new_tokens=MAX_NEW)
    assert sr == SR and len(wavs) == 2
    for wav in wavs:
        assert_audible(wav)


def test_voice_design_generates_audio(models):
    torch.manual_seed(3)
    wavs, sr = models["voice_design"].generate_voice_design(
        text="A designed voice.", instruct="A calm, low, warm male voice.", language="English",
        max_new_tokens=MAX_NEW)
    assert sr == SR
    assert_audible(wavs[0])


def test_voice_clone_x_vector_only(models):
    m = models["base"]
    items = m.create_voice_clone_prompt(ref_audio=(sweep(), 16_000), x_vector_only_mode=True)
    assert len(items) == 1 and items[0].ref_code is None and items[0].x_vector_only_mode
    assert tuple(items[0].ref_spk_embedding.shape) == (m.model.config.talker_config.hidden_size,)
    torch.manual_seed(4)
    wavs, sr = m.generate_voice_clone(text="Cloned from an x-vector.", language="English",
                                      voice_clone_prompt=items, max_new_tokens=MAX_NEW)
    assert sr == SR
    assert_audible(wavs[0])


def test_voice_clone_icl(models):
    m = models["base"]
    items = m.create_voice_clone_prompt(ref_audio=(sweep(), 16_000), ref_text="A rising tone for reference.")
    item = items[0]
    assert item.icl_mode and not item.x_vector_only_mode
    code = item.ref_code
    assert code.dtype == torch.long and tuple(code.shape) == (38, 16)  # ceil(3 s * 12.5)
    assert 0 <= int(code.min()) and int(code.max()) < tiny.CODEBOOK_SIZE
    assert len(torch.unique(code[:, 0])) > 1  # the encoder's codebooks are not degenerate
    torch.manual_seed(5)
    wavs, sr = m.generate_voice_clone(text="Continuing the reference.", language="English",
                                      voice_clone_prompt=items, max_new_tokens=MAX_NEW)
    assert sr == SR
    # the wrapper cuts the reference part by a float ratio, which can be one sample early
    assert_audible(wavs[0], slack=1)


def test_voice_clone_from_raw_audio_argument(models):
    torch.manual_seed(6)
    wavs, sr = models["base"].generate_voice_clone(text="Direct.", language="Auto", ref_audio=(sweep(2.0), 16_000),
                                                   x_vector_only_mode=True, max_new_tokens=MAX_NEW)
    assert sr == SR
    assert_audible(wavs[0])


def test_decoder_is_audible_and_causal(models):
    st = models["custom_voice"].model.speech_tokenizer
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, tiny.CODEBOOK_SIZE, (20, 16), generator=gen)
    wavs, sr = st.decode([{"audio_codes": codes}])
    assert sr == SR
    assert_audible(wavs[0], frames=20)
    assert float(np.sqrt(np.mean(wavs[0] ** 2))) > 1e-2
    with torch.no_grad():
        full = st.model.decoder(codes.T.unsqueeze(0))[0, 0]
        head = st.model.decoder(codes[:12].T.unsqueeze(0))[0, 0]
    assert full.shape[-1] == 20 * HOP and head.shape[-1] == 12 * HOP
    assert torch.allclose(full[: 12 * HOP], head, atol=1e-5)  # strictly causal: no look-ahead


# -- building -----------------------------------------------------------------------------------------

def _files(path: Path) -> dict[str, bytes]:
    return {f.relative_to(path).as_posix(): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}


def test_same_seed_same_bytes(tmp_path):
    a = _files(tiny.build_checkpoint(tmp_path / "a", kind="custom_voice", seed=7))
    b = _files(tiny.build_checkpoint(tmp_path / "b", kind="custom_voice", seed=7))
    c = _files(tiny.build_checkpoint(tmp_path / "c", kind="custom_voice", seed=8))
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]
    assert a["speech_tokenizer/model.safetensors"] != c["speech_tokenizer/model.safetensors"]


def test_build_refuses_non_empty_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        tiny.build_checkpoint(out, kind="base")
    assert (out / "keep.txt").read_text() == "mine"
    tiny.build_checkpoint(out, kind="base", overwrite=True)
    assert tiny.is_complete(out, "base") and not (out / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary directories left


def leftovers(cache: Path) -> list[str]:
    """Entries of a cache dir, without the lock files (which stay on purpose)."""
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


def test_ensure_checkpoint_reuses_complete_dir(tmp_path):
    first = tiny.ensure_checkpoint(tmp_path, "voice_design")
    assert first == tmp_path / "voice_design-tiny" and tiny.is_complete(first, "voice_design", "tiny")
    stamp = {name: (first / name).stat().st_mtime_ns for name in ("model.safetensors", tiny.MARKER_FILE)}
    again = tiny.ensure_checkpoint(tmp_path, "voice_design")
    assert again == first
    assert stamp == {name: (first / name).stat().st_mtime_ns for name in stamp}
    assert leftovers(tmp_path) == ["voice_design-tiny"]


def test_ensure_checkpoint_replaces_partial_dir(tmp_path):
    broken = tmp_path / "base-tiny"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # a crash mid-build: no marker
    path = tiny.ensure_checkpoint(tmp_path, "base")
    assert path == broken and tiny.is_complete(path, "base", "tiny")
    assert json.loads((path / "config.json").read_text())["model_type"] == "qwen3_tts"

    marker = json.loads((path / tiny.MARKER_FILE).read_text())
    marker["version"] = -1  # an older builder
    (path / tiny.MARKER_FILE).write_text(json.dumps(marker))
    assert not tiny.is_complete(path, "base")
    tiny.ensure_checkpoint(tmp_path, "base")
    assert tiny.is_complete(path, "base")
    assert leftovers(tmp_path) == ["base-tiny"]


def test_ensure_checkpoint_concurrent_callers_build_once(tmp_path, monkeypatch):
    import threading

    calls = []
    real_build = tiny.build_checkpoint

    def counting_build(*args, **kwargs):
        calls.append(kwargs.get("kind"))
        return real_build(*args, **kwargs)

    monkeypatch.setattr(tiny, "build_checkpoint", counting_build)
    results, errors = [], []

    def worker():
        try:
            results.append(tiny.ensure_checkpoint(tmp_path, "custom_voice"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [tmp_path / "custom_voice-tiny"] * 3
    assert calls == ["custom_voice"]
    assert leftovers(tmp_path) == ["custom_voice-tiny"]


def test_cli(tmp_path):
    out = tmp_path / "cli"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(tiny.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "qwen_stream.tiny", str(out), "--kind", "custom_voice", "--seed", "3"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["path"] == str(out) and summary["kind"] == "custom_voice" and summary["seed"] == 3
    assert tiny.is_complete(out, "custom_voice", "tiny")
    again = subprocess.run([sys.executable, "-m", "qwen_stream.tiny", str(out)], capture_output=True, text=True,
                           env=env, timeout=300)
    assert again.returncode == 2  # refuses to overwrite without --force


# -- real sizes (configs only, meta device) ---------------------------------------------------------------

@pytest.mark.parametrize("size,hidden,lo,hi", [("0.6b", 1024, 0.55e9, 0.65e9), ("1.7b", 2048, 1.55e9, 1.75e9)])
def test_real_size_parameter_counts(size, hidden, lo, hi):
    config, st_config = tiny.make_configs("base", size)
    talker = config.talker_config
    assert talker.hidden_size == hidden and talker.num_hidden_layers == 28
    assert talker.code_predictor_config.num_hidden_layers == 5
    assert talker.text_vocab_size == 151936 and talker.vocab_size == 3072
    assert sum(talker.rope_scaling["mrope_section"]) == talker.head_dim // 2
    assert config.speaker_encoder_config.enc_dim == hidden
    assert st_config.decoder_config.sliding_window == 72

    counts = tiny.count_parameters("custom_voice", size)
    # the published names count the model without its (Qwen-sized) text embedding table
    assert lo < counts["total"] - counts["text_embedding"] < hi, counts
    assert 110e6 < counts["speech_decoder"] < 118e6, counts  # ~114M
    assert counts["speaker_encoder"] == 0
    assert tiny.count_parameters("base", size)["speaker_encoder"] > 0
