"""Hostile text must cost the front end time linear in its length.

The front end runs on one thread and holds the GIL, so one request whose text makes a regex or a loop
quadratic ("!" * 20000 + "x" once took 28 s in the sentence splitter) freezes the whole server. Each
test runs one input generator at two sizes, ten times apart, through one public entry point and checks
the growth of the work: linear grows about 10x, quadratic 100x. No test asserts an absolute time.

The work is measured as CPU time of the thread doing it (the normalization thread), not wall time:
the tests share a few cores with other processes, and being descheduled is not work. Small and big
runs alternate and the best of each counts, so a change of load hits both sizes alike.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from normalization import normalize, tn_worker, warmup  # noqa: E402 - after the path set-up above
from normalization.language import detect_language  # noqa: E402
from normalization.pipeline import normalize_piece  # noqa: E402
from normalization.splitting import MAX_RULE_WORD_CHARS, cap_length, split_sentences  # noqa: E402

# Ten times apart: linear work grows ~10x, quadratic ~100x. The bound leaves room for noise and for
# costs that grow a little faster than linear (sorting the sentence ends, allocation).
GROWTH_BOUND = 25
# The split/cap/language stage is cheap enough for 10k -> 100k characters; the full normalization
# (rewrites and grammar spans per piece) costs far more per character, so it runs at 2k -> 20k.
FAST_SIZES = (10_000, 100_000)
TN_SIZES = (2_000, 20_000)


def _run_of(unit: str, tail: str = "") -> Callable[[int], str]:
    """Generator: ``unit`` repeated to n characters, then ``tail`` (a letter stops a lookahead)."""
    return lambda n: (unit * (n // len(unit) + 1))[:n] + tail


# Every mark the splitter or the cap knows, in runs; a run followed by a letter is the worst case for a
# pattern that looks ahead past the run. The closers are one character class everywhere: one run of
# all of them stands for each.
_MARKS = "!?.。！？；．｡‼⁇⁈⁉;,，、:：…—"
_CLOSERS = "\"'”’」』）)】》〉]}"
GENERATORS: dict[str, Callable[[int], str]] = {f"run {mark!r}": _run_of(mark, "x") for mark in _MARKS}
GENERATORS.update(
    {
        "run '!?' then a letter": _run_of("!?", "x"),
        "run '!' then CJK": _run_of("!", "中"),
        "closers": _run_of(_CLOSERS, "x"),
        "'!' then closers": lambda n: "!" + _run_of(_CLOSERS, "x")(n),
        "'。' then closers": lambda n: "。" + _run_of("」』）)", "x")(n),
        "'!' and closers alternating": _run_of("!)", "x"),
        "open brackets": _run_of("(（[「"),
        "newlines": _run_of("\n", "x"),
        "spaces": _run_of(" ", "x"),
        "spaces, tabs and newlines": _run_of(" \t\n"),
        "digits": _run_of("9"),
        "digits and hyphens": _run_of("1-"),
        "digits and dots": _run_of("1."),
        "digits and commas": _run_of("1,000,"),
        "list numbers": _run_of("1. "),
        "'a.' repeated": _run_of("a."),
        "'a. ' repeated": _run_of("a. "),
        "initials": _run_of("A."),
        "dotted caps then a space": lambda n: _run_of("U.")(n) + "S. Next",
        "'中.' repeated": _run_of("中."),
        "'中!' repeated": _run_of("中!"),
        "a long word then periods": lambda n: "x" * n + ". " + "x" * 10 + "...",
        "mixed scripts": _run_of("中a1.!？ 日本語です。한국어! Привет. "),
        "letters and digit sentences alternating": _run_of("a! 1! "),
        "CJK and Latin sentences alternating": _run_of("中文。 Hi. 2. "),
        "url": lambda n: "http://" + _run_of("a.")(n) + "com",
        "domain labels": lambda n: _run_of("ab.")(n) + "com/",
        "url query": lambda n: "example.com/" + _run_of("a?b=1&")(n),
        "email-like": lambda n: "a@" + _run_of("b.")(n),
        "at signs": _run_of("a@"),
        "emphasis without a closer": _run_of("**a "),
        "underscores": _run_of("__a "),
        "backticks": _run_of("`a "),
        "capitals": _run_of("ABC "),
        "money": _run_of("$1,2 "),
        "percent ranges": _run_of("1%-"),
        "versions": lambda n: "v1" + _run_of(".2")(n),
        "long money": lambda n: "$" + "9" * n + ".50",
        "long ordinal": lambda n: "第" + "9" * n + "名",
        "long yuan": lambda n: "¥" + "9" * n,
        "long percentage": lambda n: "9" * n + "% off",
        "long fraction": lambda n: "9" * n + "/9",
        "long decimal": lambda n: "9" * n + ".5",
    }
)

# Cheap enough for every generator at the big sizes.
FAST_ENTRIES: dict[str, Callable[[str], object]] = {
    "split_sentences": split_sentences,
    "cap_length": lambda text: cap_length(text, 60),
    "detect_language": detect_language,
    "normalize Auto, no TN": lambda text: normalize(text, "Auto", enable_tn=False),
}
# Without TN, English and Chinese differ from Auto only in skipping the language pick and in their cap.
NO_TN_ENTRIES: dict[str, Callable[[str], object]] = {
    "normalize English, no TN": lambda text: normalize(text, "English", enable_tn=False),
    "normalize Chinese, no TN": lambda text: normalize(text, "Chinese", enable_tn=False),
}
TN_ENTRIES: dict[str, Callable[[str], object]] = {
    "normalize Auto": lambda text: normalize(text, "Auto"),
    "normalize English": lambda text: normalize(text, "English"),
    "normalize Chinese": lambda text: normalize(text, "Chinese"),
    "normalize_piece English": lambda text: normalize_piece(text, "English"),
    "normalize_piece Chinese": lambda text: normalize_piece(text, "Chinese"),
}
# Full normalization runs every rewrite, so it gets the inputs that reach them (numbers, addresses,
# markup, capitals, mixed scripts) plus a few splitter cases; the rest differ from these only before
# the rewrites, which the split tests cover at ten times the size.
TN_GENERATORS = [
    "run '!'",
    "run '。'",
    "spaces",
    "'中.' repeated",
    "mixed scripts",
    "letters and digit sentences alternating",
    "digits",
    "digits and hyphens",
    "digits and commas",
    "url",
    "email-like",
    "emphasis without a closer",
    "capitals",
    "money",
    "percent ranges",
    "versions",
    "long money",
    "long ordinal",
    "long yuan",
    "long percentage",
    "long fraction",
    "long decimal",
]


# Below this the small run measures mostly the clock and the call itself.
_FLOOR_S = 1e-4


def _cpu_time(fn: Callable[[str], object], text: str) -> float:
    started = time.thread_time()
    fn(text)
    return time.thread_time() - started


def _growth_here(fn: Callable[[str], object], small: str, big: str, runs: int) -> float:
    fn(small)  # first use: grammar spans cached, lazy state built
    best_small = best_big = float("inf")
    gc.collect()
    gc.disable()  # a collection landing in one run only would be noise, not growth
    try:
        for _ in range(runs):
            best_small = min(best_small, _cpu_time(fn, small))
            best_big = min(best_big, _cpu_time(fn, big))
    finally:
        gc.enable()
    return best_big / max(best_small, _FLOOR_S)


def _growth(fn: Callable[[str], object], make: Callable[[int], str], sizes: tuple[int, int]) -> float:
    """Time ratio big/small, measured on the normalization thread, where all of the work happens
    (normalize() called there runs inline, and normalize_piece needs the grammar that lives there)."""
    small, big = make(sizes[0]), make(sizes[1])
    return tn_worker.submit(_growth_here, fn, small, big, 2).result()


@pytest.fixture(scope="module", autouse=True)
def _grammars_loaded() -> None:
    warmup()


def _check(entry: str, generator: str, fn: Callable[[str], object], sizes: tuple[int, int]) -> None:
    growth = _growth(fn, GENERATORS[generator], sizes)
    assert growth < GROWTH_BOUND, f"{entry} on {generator}: {growth:.0f}x the work for 10x the text"


@pytest.mark.parametrize("entry", FAST_ENTRIES)
@pytest.mark.parametrize("generator", GENERATORS)
def test_split_and_language_pick_grow_linearly(generator: str, entry: str) -> None:
    _check(entry, generator, FAST_ENTRIES[entry], FAST_SIZES)


@pytest.mark.parametrize("entry", NO_TN_ENTRIES)
@pytest.mark.parametrize("generator", TN_GENERATORS)
def test_fixed_language_without_tn_grows_linearly(generator: str, entry: str) -> None:
    _check(entry, generator, NO_TN_ENTRIES[entry], FAST_SIZES)


@pytest.mark.parametrize("entry", TN_ENTRIES)
@pytest.mark.parametrize("generator", TN_GENERATORS)
def test_normalization_grows_linearly(generator: str, entry: str) -> None:
    _check(entry, generator, TN_ENTRIES[entry], TN_SIZES)


@pytest.mark.parametrize("generator", GENERATORS)
def test_hostile_text_keeps_every_character(generator: str) -> None:
    """The cheaper paths must not drop text to save time: splitting keeps every non-space character."""
    text = GENERATORS[generator](5_000)
    kept = "".join("".join(piece for piece in cap_length(s, 120)) for s in split_sentences(text))
    assert "".join(kept.split()) == "".join(text.split())


def test_a_zero_cap_is_refused() -> None:
    with pytest.raises(ValueError):
        cap_length("a" * 300, 0)  # it never advanced: an endless loop


def test_numbers_too_long_for_int_are_read_digit_by_digit() -> None:
    """Python's int() refuses more than 4300 digits; such a run used to raise out of normalize_piece."""
    english = tn_worker.submit(normalize_piece, "1" + "0" * 5000, "English").result()
    assert english.split() == ["one"] + ["zero"] * 5000
    chinese = tn_worker.submit(normalize_piece, "第" + "1" * 5000 + "名", "Chinese").result()
    assert chinese == "第" + "一" * 5000 + "名"


def test_a_word_longer_than_the_rules_is_an_ordinary_word() -> None:
    """The look back from a period stops after MAX_RULE_WORD_CHARS; an ellipsis still needs no word."""
    long_word = "x" * (MAX_RULE_WORD_CHARS + 10)
    assert split_sentences(f"{long_word}. next") == [f"{long_word}.", "next"]
    assert split_sentences(f"{long_word}... and on") == [f"{long_word}... and on"]
    assert split_sentences("中." * 3) == ["中.", "中.", "中."]
