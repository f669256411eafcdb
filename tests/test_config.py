"""Settings from CLI flags, environment variables and defaults; the README's table stays true."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qwen_stream.config import OPTIONS, ServerSettings, build_parser, load_settings, markdown_table, opt

ROOT = Path(__file__).resolve().parent.parent


def test_defaults():
    s = load_settings([], {})
    assert (s.host, s.port, s.pre_buffer, s.chunk_size, s.left_context) == ("127.0.0.1", 9000, 0, 4, 72)
    assert s.model_path is None and s.demo is False and s.temperature is None


def test_cli_beats_environment_beats_default():
    env = {"MODEL_PATH": "/env/model", "QWEN_STREAM_PORT": "9100", "QWEN_STREAM_CHUNK_SIZE": "6",
           "REF_AUDIO_PATH": "/env/ref.wav", "QWEN_STREAM_CORS_ORIGINS": "http://a, http://b"}
    s = load_settings(["--port", "9200"], env)
    assert s.port == 9200 and s.chunk_size == 6 and s.model_path == "/env/model"
    assert s.ref_audio == "/env/ref.wav" and s.cors_origins == ("http://a", "http://b")


def test_engine_choice_reaches_the_engine_settings():
    assert load_settings([], {}).engine_settings("/m").engine == "continuous"
    assert load_settings([], {"QWEN_STREAM_ENGINE": "static"}).engine_settings("/m").engine == "static"
    assert load_settings(["--max-wait-ms", "1500"], {}).max_wait_ms == 1500
    blocks = load_settings(["--noise-draws", "block"], {}).engine_settings("/m")
    assert blocks.noise_block("cpu") == 16 and load_settings([], {}).engine_settings("/m").noise_block("cpu") == 0
    assert load_settings([], {}).engine_settings("/m").noise_block("cuda") == 16  # auto: blocks on CUDA


def test_boolean_flags_and_env():
    assert load_settings(["--demo"], {}).demo is True
    assert load_settings([], {"QWEN_STREAM_DEMO": "true"}).demo is True
    assert load_settings(["--no-demo"], {"QWEN_STREAM_DEMO": "1"}).demo is False


@pytest.mark.parametrize("argv, env, words", [
    (["--port", "70000"], {}, "port"),
    (["--chunk-size", "0"], {}, "chunk_size"),
    (["--first-chunk-size", "0"], {}, "first_chunk_size"),
    ([], {"QWEN_STREAM_PORT": "ninety"}, "QWEN_STREAM_PORT"),
    (["--demo", "--model-path", "/x"], {}, "only one of --demo, --model-path and --models"),
    (["--models", "base:3b"], {}, "use 0.6b or 1.7b"),
    (["--models", "singer:0.6b"], {}, "unknown family"),
    (["--log-level", "loud"], {}, "log_level"),
    (["--engine", "dynamic"], {}, "engine must be one of continuous, static"),
    (["--max-wait-ms", "-1"], {}, "max_wait_ms"),
    (["--noise-draws", "tokens"], {}, "noise_draws must be one of auto, token, block"),
    (["--early-chunks", "auto"], {}, "early_chunks must be one of on, off"),
])
def test_bad_settings_name_the_problem(argv, env, words):
    with pytest.raises(ValueError, match=words):
        load_settings(argv, env)


def test_unknown_environment_variable_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        load_settings([], {"QWEN_STREAM_CHUNKSIZE": "3"})
    assert "QWEN_STREAM_CHUNKSIZE" in caplog.text


def test_readme_table_matches_the_options():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert markdown_table() in readme, "README's configuration table is stale: paste config.markdown_table()"
    assert len(OPTIONS) == len({o.flag for o in OPTIONS}) == len({o.env_name for o in OPTIONS})


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    run_server, run_tests = (line.split("#", 1)[0].strip() for line in block[:2])
    assert "server.py" in run_server and "pytest" in run_tests
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert run_tests in [line.strip() for line in ci]


@dataclass(frozen=True)
class WithOneMoreOption(ServerSettings):
    """The table plus one new row, declared the only way a row is declared: a field with opt() metadata."""

    speaking_rate: float = field(default=1.0, metadata=opt("speech speed, 1 is the checkpoint's own pace"))


def test_a_new_option_needs_no_edit_beyond_its_field(caplog):
    help_text = " ".join(build_parser(WithOneMoreOption).format_help().split())  # argparse wraps lines
    assert "--speaking-rate RATE speech speed, 1 is the checkpoint's own pace [env QWEN_STREAM_SPEAKING_RATE]" \
        in help_text
    with caplog.at_level(logging.WARNING):
        from_env = load_settings([], {"QWEN_STREAM_SPEAKING_RATE": "1.5"}, WithOneMoreOption)
    assert from_env.speaking_rate == 1.5 and "QWEN_STREAM_SPEAKING_RATE" not in caplog.text
    assert load_settings(["--speaking-rate", "0.8"], {"QWEN_STREAM_SPEAKING_RATE": "1.5"},
                         WithOneMoreOption).speaking_rate == 0.8
    assert load_settings([], {}, WithOneMoreOption).speaking_rate == 1.0
    with pytest.raises(ValueError, match="QWEN_STREAM_SPEAKING_RATE"):
        load_settings([], {"QWEN_STREAM_SPEAKING_RATE": "fast"}, WithOneMoreOption)
    table = markdown_table(WithOneMoreOption)
    assert table.startswith(markdown_table() + "\n")
    assert table.endswith("| `--speaking-rate` | `QWEN_STREAM_SPEAKING_RATE` | `1.0` | speech speed, 1 is the "
                          "checkpoint's own pace |")


def test_every_settings_field_is_an_option():
    # The table is the dataclass: no field escapes the parser, the environment or the README.
    assert [o.name for o in OPTIONS] == list(ServerSettings.__dataclass_fields__)
