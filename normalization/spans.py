"""The spans of a sentence that the grammar sees.

After our rewrites, the only things left for WeTextProcessing are number spans: decimals, percentages,
clock times, ordinals, fractions, ranges, measures and dates. We hand the grammar those spans alone,
never the whole sentence, for three reasons:

* It damages text around numbers: the English whitelist turns "Sun" into "Sunday" and "TV" into
  "Television", "3x faster" becomes "three times degrees Fahrenheit aster"; the Chinese grammar drops
  啊/呃/儿, reads "15% more" as "百分之十五米ore" and turns "，。" into ",.".
* Its cost grows with the input: a 100-character English sentence costs ~150 ms, its number spans a
  few milliseconds.
* A sentence without a span skips the grammar entirely (the fast path).

A span is a number with its sign, the unit or suffix written against it ("5km", "2nd", "3:30pm", "25°C"),
a unit word after one space ("5 km", "3 pm") and, in Chinese, the character after it (measure words
decide 两 vs 二: "2个" -> "两个"; "年" makes "2025年" a year).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .fixes_en import GRAMMAR_UNITS
from .numbers import en_cardinal, en_digits, zh_cardinal, zh_digits

# Longer spans are not real numbers (the pathological "1-2-3-...") and the grammar's cost grows with
# their length: they are read digit run by digit run instead.
MAX_SPAN_CHARS = 20
# Grammar calls per request (~3-15 ms each in English). Text with more number spans than this (a table
# of figures, or a hostile request) has the rest read by the simple fallback, so one request cannot hold
# the worker for minutes. A count, not a clock, so the output never depends on machine load.
MAX_GRAMMAR_SPANS = 128


class GrammarBudget:
    """Counts the grammar calls of one request; when spent, ``take()`` is False."""

    def __init__(self, calls: int = MAX_GRAMMAR_SPANS) -> None:
        self.left = calls

    def take(self) -> bool:
        self.left -= 1
        return self.left >= 0


_CORE = r"\d(?:[\d.,:/\-–]*\d)?"
_SIGN = r"(?:(?<![A-Za-z0-9_.])[-−+#])?"  # ASCII: "温度-5℃" has a sign
_SYMBOL_SUFFIX = r"(?:%|‰|°[CF]?|℃|℉)?"


def _alternatives(words: set[str] | frozenset[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


_TIME = {"am", "pm", "a.m.", "p.m.", "AM", "PM"}
_EN_ATTACHED = _alternatives(GRAMMAR_UNITS | _TIME | {"st", "nd", "rd", "th", "s"})
_EN_FOLLOWING = _alternatives((GRAMMAR_UNITS - {"m", "g", "L", "sq"}) | _TIME | {"sq ft", "sq mi"})
_EN_SPAN = re.compile(
    rf"{_SIGN}\.?{_CORE}{_SYMBOL_SUFFIX}"
    rf"(?:(?:{_EN_ATTACHED})(?![A-Za-z])|\s(?:{_EN_FOLLOWING})(?![A-Za-z]))?"
)

# Latin unit symbols the Chinese grammar reads (its units_en.tsv, minus the ones fixes_zh rewrites).
_ZH_UNITS = frozenset(
    """km km2 km² cm cm2 cm² mm mm2 nm μm m m2 m² m3 m³ kg mg g μg lb lbs oz ml L ft mi yd mph kmh
    h min s ms μs ns hz khz kwh kw gb tb mbps kbps kcal db pa kpa mpa rpm""".split()
)
_HAN = r"(?:(?![啊呃儿])[\u4e00-\u9fff])"  # 啊/呃/儿 are deleted by the grammar: never hand them over
_ZH_ITEM = rf"{_SIGN}{_CORE}{_SYMBOL_SUFFIX}(?:\s?(?:{_alternatives(_ZH_UNITS)})(?![A-Za-z]))?"
# Numbers joined by one character (2025年3月14日, 12元5角, 3点30分) are one span; one character after a
# span is kept (年 makes a year, 个 a measure word), two after a lone 2 (2小时 -> 两小时, not 二小).
# Every character costs grammar time, so no more context than that.
_ZH_SPAN = re.compile(rf"{_ZH_ITEM}(?:{_HAN}{_ZH_ITEM})*{_HAN}?")
_LONE_TWO = re.compile(rf"(?<![\d.])2{_HAN}")
_HAN_CHAR = re.compile(_HAN)


def _fallback_en(span: str) -> str:
    """Digit runs as numbers (long runs digit by digit); "." and "%" said, other symbols dropped."""

    def number(m: re.Match[str]) -> str:
        digits = m.group()
        return f" {en_cardinal(int(digits)) if len(digits) <= 6 else en_digits(digits)} "

    words = re.sub(r"(?<=\d)\.(?=\d)", " point ", span).replace("%", " percent ")
    return " ".join(re.sub(r"[^A-Za-z'-]+|-", " ", re.sub(r"\d+", number, words)).split())


def _fallback_zh(span: str) -> str:
    def number(m: re.Match[str]) -> str:
        digits = m.group()
        return zh_cardinal(int(digits)) if len(digits) <= 6 else zh_digits(digits)

    words = re.sub(r"(?<=\d)\.(?=\d)", "点", span)
    return " ".join(re.sub(r"[^\w]+|_", " ", re.sub(r"\d+", number, words)).split())


def _spaced(left: str, spoken: str, right: str) -> str:
    # Keep words apart where a letter meets a letter ("H100" -> "H one hundred").
    if left[-1:].isascii() and left[-1:].isalnum() and spoken[:1].isascii() and spoken[:1].isalnum():
        spoken = " " + spoken
    if right[:1].isascii() and right[:1].isalnum() and spoken[-1:].isascii() and spoken[-1:].isalnum():
        spoken += " "
    return spoken


def _keep_trailing_han(span: str, spoken: str) -> str:
    """Give back the span's trailing Chinese context as written: the grammar simplifies 個 to 个."""
    tail = 0
    for ch in reversed(span):
        if not "\u4e00" <= ch <= "\u9fff":
            break
        tail += 1
    if tail and len(spoken) >= tail and all("\u4e00" <= ch <= "\u9fff" for ch in spoken[-tail:]):
        return spoken[:-tail] + span[-tail:]
    return spoken


def normalize_spans(text: str, language: str, grammar: Callable[[str], str], budget: GrammarBudget) -> str:
    """Replace each number span of ``text`` by ``grammar(span)`` (English or Chinese)."""
    if not any(ch.isdigit() for ch in text):
        return text  # the fast path: nothing for the grammar
    english = language == "English"
    pattern, fallback = (_EN_SPAN, _fallback_en) if english else (_ZH_SPAN, _fallback_zh)
    parts = []
    last = 0
    for m in pattern.finditer(text):
        start, end = m.span()
        if not english and _LONE_TWO.fullmatch(text, start, end) and _HAN_CHAR.match(text, end):
            end += 1
        span = text[start:end]
        spoken = grammar(span) if len(span) <= MAX_SPAN_CHARS and budget.take() else fallback(span)
        if not english:
            spoken = _keep_trailing_han(span, spoken)
        parts.append(text[last:start])
        parts.append(_spaced(text[start - 1 : start], spoken, text[end : end + 1]))
        last = end
    parts.append(text[last:])
    return "".join(parts)
