"""The catalog of published facts: one copy, the shapes its readers rely on, and GET /v1/languages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

import normalization
from qwen_stream import catalog, registry, settings, tiny
from qwen_stream.api.openai_protocol import OPENAI_VOICES
from qwen_stream.app import create_app
from qwen_stream.config import ServerSettings

ROOT = Path(__file__).resolve().parent.parent
LOCAL = "http://127.0.0.1:9000"
KEY = "catalog-key-1234"


def test_importing_the_catalog_loads_no_torch():
    # A fresh interpreter: this one has torch already (other test modules load checkpoints).
    code = "import sys, qwen_stream.catalog; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_published_facts():
    assert catalog.FAMILIES == ("base", "custom_voice", "voice_design")
    assert sorted(catalog.FAMILIES_BY_DEFAULT) == sorted(catalog.FAMILIES)
    assert catalog.SPEAKERS == ("Vivian", "Serena", "Uncle_Fu", "Dylan", "Eric", "Ryan", "Aiden", "Ono_Anna",
                                "Sohee")
    assert catalog.LANGUAGES[0] == "Auto" and len(catalog.SPOKEN_LANGUAGES) == 10
    assert catalog.LANGUAGES == ("Auto", *catalog.SPOKEN_LANGUAGES)
    assert (catalog.SAMPLE_RATE, catalog.SAMPLES_PER_FRAME, catalog.BYTES_PER_FRAME) == (24_000, 1920, 3840)
    assert catalog.FRAME_SECONDS == pytest.approx(0.08)


def test_hub_ids_round_trip():
    assert catalog.hub_id("custom_voice", "1.7b") == "Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice"
    for family in catalog.FAMILIES:
        for size in catalog.PUBLISHED_SIZES[family]:
            info = registry.info_from_source(catalog.hub_id(family, size))
            assert info.family == family and info.size == {"0.6b": "0b6", "1.7b": "1b7"}[size]
    assert registry.parse_models("voice_design:1.7b") == {"voice_design": catalog.hub_id("voice_design", "1.7b")}
    with pytest.raises(ValueError, match="VoiceDesign is published at 1.7B only"):
        registry.parse_models("voice_design:0.6b")


def test_speaker_display_names():
    assert catalog.speaker_display_name("uncle_fu") == "Uncle_Fu"
    assert catalog.speaker_display_name("my_own") == "my_own"  # a fine-tuned checkpoint's speaker


def test_readers_share_the_one_copy():
    """The modules that used to keep their own lists now hold the catalog's objects."""
    assert normalization.LANGUAGES is catalog.LANGUAGES
    assert tiny.KINDS is catalog.FAMILIES and tiny.SPEAKERS is catalog.SPEAKERS
    assert tiny.LANGUAGES is catalog.SPOKEN_LANGUAGES
    assert settings.BYTES_PER_FRAME is catalog.BYTES_PER_FRAME and settings.SAMPLE_RATE is catalog.SAMPLE_RATE
    # The checkpoint builder's codec ids cover exactly the published speakers and languages.
    assert set(tiny.SPK_ID) == {s.lower() for s in catalog.SPEAKERS}
    assert {k for k in tiny.CODEC_LANGUAGE_ID if "dialect" not in k} == {s.lower() for s in catalog.SPOKEN_LANGUAGES}
    # The OpenAI voice table picks from the CustomVoice speakers.
    assert set(OPENAI_VOICES.values()) <= set(catalog.SPEAKERS)


def test_no_copy_of_the_speaker_list_outside_the_catalog():
    """The names appear in the package only in the catalog and in the OpenAI table (which picks from them)."""
    pattern = re.compile(r"\b(Uncle_Fu|Ono_Anna)\b")
    allowed = {"qwen_stream/catalog.py", "qwen_stream/api/openai_protocol.py"}
    sources = [*ROOT.glob("qwen_stream/**/*.py"), *ROOT.glob("normalization/**/*.py"), ROOT / "webui.html"]
    found = {str(p.relative_to(ROOT)) for p in sources if pattern.search(p.read_text(encoding="utf-8"))}
    assert found <= allowed


# -- GET /v1/languages ------------------------------------------------------------------------------------


class StubServer:
    """The route reads only the catalog; the app needs just this much of a server to be built."""

    def __init__(self, config: ServerSettings):
        self.settings = config
        self.state = "ready"

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def app_client(**options) -> TestClient:
    config = ServerSettings(**options)
    return TestClient(create_app(config, StubServer(config)), base_url=LOCAL)


def test_languages_route_answers_the_catalog():
    r = app_client().get("/v1/languages")
    assert r.status_code == 200
    assert r.json() == {"languages": list(catalog.LANGUAGES)}


def test_languages_route_is_behind_the_key():
    client = app_client(api_key=KEY)
    assert client.get("/v1/languages").status_code == 401
    assert client.get("/v1/languages", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
