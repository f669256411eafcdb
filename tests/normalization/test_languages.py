"""Readings of the eight languages after Chinese and English (table in language_cases.py)."""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from normalization import Segment, normalize  # noqa: E402 - after the path set-up above
from normalization.pipeline import normalize_piece  # noqa: E402

from .language_cases import CASES  # noqa: E402

LANGUAGES = ("German", "French", "Spanish", "Italian", "Portuguese", "Russian", "Japanese", "Korean")


def test_every_language_has_at_least_15_cases() -> None:
    counts = Counter(language for language, _, _ in CASES)
    assert all(counts[language] >= 15 for language in LANGUAGES), counts


@pytest.mark.parametrize(("language", "text", "expected"), CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_reading(language: str, text: str, expected: str) -> None:
    assert normalize(text, language) == [Segment(expected, language)]


@pytest.mark.parametrize(("language", "text", "expected"), CASES[::4], ids=[f"{c[0]}:{c[1]}" for c in CASES[::4]])
def test_no_digit_left(language: str, text: str, expected: str) -> None:
    assert not any(ch.isdigit() for ch in normalize_piece(text, language))


@pytest.mark.parametrize("language", LANGUAGES)
def test_text_without_digits_is_unchanged(language: str) -> None:
    text = {"Japanese": "こんにちは。", "Korean": "안녕하세요.", "Russian": "Привет, как дела?"}.get(
        language, "Hallo, ça va?"
    )
    assert normalize_piece(text, language) == text


@pytest.mark.parametrize("language", LANGUAGES)
def test_huge_numbers_are_read_digit_by_digit(language: str) -> None:
    out = normalize_piece("9" * 40, language)
    assert out and not any(ch.isdigit() for ch in out)


def test_acronyms_are_spelled_in_other_languages() -> None:
    assert normalize("Die EU und die USA.", "German") == [Segment("Die E U und die U S A.", "German")]
    assert normalize("El IVA sube.", "Spanish") == [Segment("El I V A sube.", "Spanish")]


def test_markdown_is_stripped_in_other_languages() -> None:
    assert normalize("**Wichtig:** 5 Euro.", "German") == [Segment("Wichtig: fünf Euro.", "German")]


def test_auto_normalizes_each_sentence_in_its_language() -> None:
    segments = normalize("我在2025年毕业。It costs $12.50! Das ist nicht teuer, nur 5 Euro. Это стоит 5 рублей.")
    assert segments == [
        Segment("我在二零二五年毕业。", "Chinese"),
        Segment("It costs twelve dollars fifty cents!", "English"),
        Segment("Das ist nicht teuer, nur fünf Euro.", "German"),
        Segment("Это стоит пять рублей.", "Russian"),
    ]


def test_client_language_wins_over_detection() -> None:
    assert normalize("Das kostet 5 Euro.", "English")[0].language == "English"
    assert normalize("Das kostet 5 Euro.", "French") == [Segment("Das kostet cinq Euro.", "French")]


@pytest.mark.parametrize("language", LANGUAGES)
def test_pathological_input_finishes_fast(language: str) -> None:
    rng = random.Random(7)
    texts = [
        "9" * 20_000,
        "1-" * 10_000,
        "".join(rng.choice("0123456789-., :/%€") for _ in range(20_000)),
        "1.000," * 3000,
        "1 000 " * 3000,
        "3. " * 5000,
        "+1 " * 5000,
        "12:30 " * 3000,
        "5-го " * 3000,
    ]
    started = time.process_time()
    for text in texts:
        segments = normalize(text, language)
        assert segments and all(s.text for s in segments)
    # About 0.5 s of CPU on a 2-core CI machine; a quadratic pattern would take minutes.
    assert time.process_time() - started < 30


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_piece_with_huge_decimals_is_read_digit_by_digit(language: str) -> None:
    # normalize_piece gets no length cap: int() of a 5000-digit run would raise (Python's 4300-digit limit).
    out = normalize_piece("9" * 5000 + ",5 " + "1" * 5000 + "." + "2" * 5000, language)
    assert out and not any(ch.isdigit() for ch in out)
