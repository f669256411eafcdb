"""Language identification: short sentences of each language, mixed zh/en text, the client's choice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from normalization import normalize  # noqa: E402 - after the path set-up above
from normalization.language import detect_language, language_spans  # noqa: E402

SHORT_SENTENCES = [
    ("Das kostet 5 Euro.", "German"),
    ("Wo ist der Bahnhof?", "German"),
    ("Ich habe morgen keine Zeit.", "German"),
    ("Où est la gare ?", "French"),
    ("Je voudrais un café, s'il vous plaît.", "French"),
    ("Le train part à 9h05.", "French"),
    ("¿Cuánto cuesta esto?", "Spanish"),
    ("La reunión es a las 14:30.", "Spanish"),
    ("Necesito ayuda con mi cuenta.", "Spanish"),
    ("Dov'è la stazione?", "Italian"),
    ("Ci vediamo alle 14:30.", "Italian"),
    ("Vorrei un bicchiere d'acqua.", "Italian"),
    ("Onde fica a estação?", "Portuguese"),
    ("A reunião é às 14h30.", "Portuguese"),
    ("Eu preciso de ajuda, por favor.", "Portuguese"),
    ("Где находится вокзал?", "Russian"),
    ("Это стоит 5 рублей.", "Russian"),
    ("会議は2025年3月14日です。", "Japanese"),
    ("りんごを2個ください。", "Japanese"),
    ("사과 3개 주세요.", "Korean"),
    ("14:30에 만나요.", "Korean"),
    ("今天天气很好。", "Chinese"),
    ("我用iPhone打电话。", "Chinese"),
    ("Where is the train station?", "English"),
    ("The meeting starts at 3:30pm.", "English"),
    # Too short for statistics: the scorer decides and unsure stays English.
    ("Fine.", "English"),
    ("Is it?", "English"),
    ("Ok.", "English"),
]


@pytest.mark.parametrize(("text", "language"), SHORT_SENTENCES)
def test_short_sentence(text: str, language: str) -> None:
    assert detect_language(text) == language


def test_mixed_chinese_english_text_per_sentence() -> None:
    text = "我用iPhone打电话。It costs $12.50! 这个API每分钟最多调用60次。Thanks a lot."
    assert [s.language for s in normalize(text, enable_tn=False)] == ["Chinese", "English", "Chinese", "English"]


def test_mixed_text_per_span() -> None:
    spans = language_spans("我用iPhone打电话，价格是5元。It costs five dollars! Das ist nicht teuer.")
    assert (
        "".join(piece for piece, _ in spans)
        == "我用iPhone打电话，价格是5元。It costs five dollars! Das ist nicht teuer."
    )
    assert [lang for _, lang in spans] == ["Chinese", "English", "Chinese", "English", "German"]
    assert spans[1][0] == "iPhone"
    assert language_spans("Ich komme morgen zu spät, but I will bring the documents tomorrow.")[-1][1] == "English"
    assert language_spans("") == [] and language_spans("2025") == [("2025", "Auto")]


def test_hostile_length_costs_a_bounded_detection() -> None:
    assert detect_language("Das ist gut. " * 20_000) == "German"


def test_detector_loads_lazily_and_offline() -> None:
    code = textwrap.dedent(
        """
        import socket, sys

        def refuse(*args, **kwargs):
            raise OSError("network use in the text front end")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        import normalization
        assert "lingua" not in sys.modules and "num2words" not in sys.modules, "work at import time"
        print(normalization.normalize("Das kostet 5 Euro. Это стоит 5 рублей."))
        assert "torch" not in sys.modules, "torch imported"
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "fünf Euro" in done.stdout and "пять рублей" in done.stdout and done.stdout.strip().endswith("ok")


def test_an_unplaceable_short_sentence_takes_its_latin_neighbours_language() -> None:
    segments = normalize("Ich wohne in Berlin. Er lief 5 km in 25 min.")
    assert [s.language for s in segments] == ["German", "German"]
    assert segments[1].text == "Er lief fünf Kilometer in fünfundzwanzig Minuten."
    assert [s.language for s in normalize("Hola, ¿cómo estás? Pesa 200 kg.")] == ["Spanish", "Spanish"]
    # A Chinese neighbour does not make a Latin sentence Chinese; an English one stays English.
    assert [s.language for s in normalize("你好。Ok.")] == ["Chinese", "English"]
    assert [s.language for s in normalize("It is heavy. Fine.")] == ["English", "English"]
