"""The front end for one request: split -> pick language -> (spell-out, rewrites, grammar) per piece."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from . import abbreviations, european, fixes_en, fixes_zh, japanese, korean, locales, spans, tn_worker, web
from .language import LATIN_LANGUAGES, guess_language
from .markup import strip_markup
from .splitting import cap_length, max_chars_for, split_sentences


@dataclass(frozen=True)
class Segment:
    """One piece of speech: its text and the language passed to the model (one of LANGUAGES)."""

    text: str
    language: str


def _nearest_decided(picked: list[str]) -> list[int | None]:
    """For each index, the nearest index whose language is decided (the earlier one on a tie).

    One pass each way: searching all decided sentences for each undecided one is quadratic in a
    text that alternates them ("a! 1! a! 1! ...").
    """
    before: list[int | None] = []
    last = None
    for i, lang in enumerate(picked):
        if lang != "Auto":
            last = i
        before.append(last)
    nearest: list[int | None] = [None] * len(picked)
    after = None
    for i in range(len(picked) - 1, -1, -1):
        if picked[i] != "Auto":
            after = i
        b = before[i]
        nearest[i] = b if after is None or (b is not None and i - b <= after - i) else after
    return nearest


def _languages(sentences: list[str], language: str) -> list[str]:
    if language != "Auto":
        return [language] * len(sentences)
    guesses = [guess_language(s) for s in sentences]
    # A short Latin sentence nothing could place ("Pesa 200 kg.") speaks the language of its nearest
    # sure neighbour when that is a Latin-script language too; otherwise it stays English.
    sure = [lang if certain else "Auto" for lang, certain in guesses]
    nearest_sure = _nearest_decided(sure)
    picked = []
    for (lang, certain), j in zip(guesses, nearest_sure, strict=True):
        if not certain and j is not None and sure[j] in LATIN_LANGUAGES:
            lang = sure[j]
        picked.append(lang)
    # A sentence without letters ("2025.", "14:30!") speaks the language of its nearest neighbour.
    nearest = _nearest_decided(picked)
    return [picked[j] if j is not None else lang for lang, j in zip(picked, nearest, strict=True)]


def _english_grammar(span: str) -> str:
    return fixes_en.after_grammar(tn_worker.run_grammar(span, "English"))


def _chinese_grammar(span: str) -> str:
    return tn_worker.run_grammar(span, "Chinese")


def _normalize_english(text: str, spoken_words: Iterable[str], budget: spans.GrammarBudget) -> str:
    text = fixes_en.rewrite(text)
    text = abbreviations.expand_dotted(text)
    text = abbreviations.read_roman_numerals(text)
    text = abbreviations.spell_out(text, spoken_words, english=True)
    text = fixes_en.read_integers(text)
    return spans.normalize_spans(text, "English", _english_grammar, budget)


def _normalize_chinese(text: str, spoken_words: Iterable[str], budget: spans.GrammarBudget) -> str:
    text = fixes_zh.rewrite(text)
    text = abbreviations.spell_out(text, spoken_words, english=False)
    return spans.normalize_spans(text, "Chinese", _chinese_grammar, budget)


# A hyphen between a Latin or Cyrillic word and a number joins a name ("GPT-4", "COVID-19"); it is no minus.
_NAME_HYPHEN = re.compile(r"(?<=[A-Za-zА-Яа-яЁё])-(?=\d)")


def _normalize_other(text: str, language: str, spoken_words: Iterable[str]) -> str:
    if language in locales.EUROPEAN:
        # Addresses first, in the language's words, so that neither spell-out nor the number rules see them.
        text = web.read_web_addresses(text, language)
    # Acronyms are spelled before the number rules, as in Chinese: "die EU" -> "die E U", "GPT-4" -> "G P T 4".
    text = abbreviations.spell_out(text, spoken_words, english=False)
    text = _NAME_HYPHEN.sub(" ", text)
    if language == "Japanese":
        return japanese.rewrite(text)
    if language == "Korean":
        return korean.rewrite(text)
    return european.rewrite(text, language)


_OTHER_LANGUAGES = frozenset(locales.EUROPEAN) | {"Japanese", "Korean"}


def normalize_piece(
    text: str, language: str, spoken_words: Iterable[str] = (), budget: spans.GrammarBudget | None = None
) -> str:
    """Text normalization of one sentence piece; "Auto" (a piece nothing decided) passes unchanged."""
    if budget is None:
        budget = spans.GrammarBudget()
    if language == "Auto":
        return text
    text = strip_markup(text)
    if language == "English":
        text = _normalize_english(text, spoken_words, budget)
    elif language == "Chinese":
        text = _normalize_chinese(text, spoken_words, budget)
    elif language in _OTHER_LANGUAGES:
        text = _normalize_other(text, language, spoken_words)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def _pieces(text: str, language: str, max_chars: int | None) -> Iterator[tuple[str, str]]:
    sentences = split_sentences(text)
    for sentence, lang in zip(sentences, _languages(sentences, language), strict=True):
        for piece in cap_length(sentence, max_chars or max_chars_for(lang)):
            yield piece, lang


def run(
    text: str, language: str, enable_tn: bool, max_chars: int | None, spoken_words: Iterable[str] = ()
) -> list[Segment]:
    """The whole pipeline; ``language`` is already canonical. Runs on the normalization thread."""
    segments = []
    words = tuple(spoken_words)
    budget = spans.GrammarBudget()
    for piece, lang in _pieces(text, language, max_chars):
        spoken = normalize_piece(piece, lang, words, budget) if enable_tn else piece
        if spoken:
            segments.append(Segment(spoken, lang))
    return segments
