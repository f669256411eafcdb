"""Dates, clock times and Russian years for the European languages (part of european.py's pass).

"14.03.2025" / "14/03/2025" / "2025-03-14" / "3. März" / "1er mai" / "14 de marzo" -> the day, month and
year in words, as each language says a date; "14:30", "14.30 Uhr", "14h30" -> the time in words;
"в 2025 году" -> "в две тысячи двадцать пятом году". Day-first dates only: these languages write them so.
"""

from __future__ import annotations

import functools
import re

from . import locales, numwords

SPACE = "[ \u00a0\u202f]"  # French and Russian put a (narrow) no-break space in numbers and before units
_NUMERIC_DATE = re.compile(r"(?<![\w.,/-])(\d{1,2})([./])(\d{1,2})\2(\d{4})(?![\w]|[./]\d)")
_ISO_DATE = re.compile(r"(?<![\w.,/-])(\d{4})-(\d{2})-(\d{2})(?![\w]|[-.]\d)")


@functools.cache
def _named_date(language: str) -> re.Pattern[str]:
    """ "3. März", "1er mai", "14 de marzo", "5 мая": compiled on the language's first use."""
    months = "|".join(locales.MONTHS[language])
    dot = r"\.?" if language == "German" else ""
    return re.compile(rf"(?<![\w.,])(\d{{1,2}}){dot}(?:er|º|°)?({SPACE}(?:de{SPACE})?)({months})\b")


def word_before(text: str, start: int) -> str:
    m = re.search(r"(\w+)\W*$", text[max(0, start - 40) : start])
    return m.group(1) if m else ""


def day_words(day: int, language: str, before: str) -> str:
    if language == "German":
        # "der vierzehnte März", "am vierzehnten März"
        words = numwords.ordinal(day, language)
        return words + "n" if before.lower() in locales.GERMAN_DATIVE_WORDS else words
    if language == "Russian":
        # "14 марта" said as a date of something: "четырнадцатого марта" (genitive, the usual reading).
        return numwords.ordinal(day, language, gender="n", case="genitive")
    if day == 1 and language in ("French", "Italian", "Portuguese", "Spanish"):
        return numwords.ordinal(1, language) if language != "Spanish" else "uno"
    return numwords.cardinal(day, language)


def _year(year: int, language: str) -> str:
    if language == "German" and 1100 <= year <= 1999:
        return numwords.year_de(year)  # neunzehnhundertneunundneunzig
    if language == "Russian":
        return numwords.ordinal(year, language, case="genitive")  # "две тысячи двадцать пятого (года)"
    return numwords.cardinal(year, language)


def _date(text: str, start: int, day: int, month: int, year: int | None, language: str) -> str | None:
    if not (1 <= day <= 31 and 1 <= month <= 12):
        return None
    said_day = day_words(day, language, word_before(text, start))
    fmt = locales.DATE_FORMAT[language]
    if year is None:
        fmt = fmt.split(" {y}")[0].removesuffix(" de")
        if language == "Russian":
            fmt = "{d} {m}"
    return fmt.format(d=said_day, m=locales.MONTHS[language][month - 1], y=_year(year or 0, language))


def read_dates(text: str, language: str) -> str:
    """Numeric, ISO and month-name dates of ``text`` in words."""

    def numeric(m: re.Match[str]) -> str:
        said = _date(m.string, m.start(), int(m.group(1)), int(m.group(3)), int(m.group(4)), language)
        return said if said is not None else m.group()

    def iso(m: re.Match[str]) -> str:
        said = _date(m.string, m.start(), int(m.group(3)), int(m.group(2)), int(m.group(1)), language)
        return said if said is not None else m.group()

    def named(m: re.Match[str]) -> str:
        day = int(m.group(1))
        if not 1 <= day <= 31:
            return m.group()
        return f"{day_words(day, language, word_before(m.string, m.start()))}{m.group(2)}{m.group(3)}"

    text = _NUMERIC_DATE.sub(numeric, text)
    text = _ISO_DATE.sub(iso, text)
    return _named_date(language).sub(named, text)


_HOUR_WORD = {"German": "Uhr", "French": "heures", "Spanish": "horas", "Portuguese": "horas"}
# "14:30", "14.30 Uhr", "14h30", "14 h 30", "14h"
_TIME = re.compile(
    r"(?<![\w.,:])([01]?\d|2[0-3])(?:(:)([0-5]\d)|\.([0-5]\d)(?=\s?Uhr)|\s?h(?:\s?([0-5]\d))?)(?:\s?Uhr)?(?![\w]|[:.]\d)"
)


def _time(m: re.Match[str], language: str) -> str:
    hour = int(m.group(1))
    minute_text = m.group(3) or m.group(4) or m.group(5)
    h_form = m.group(2) is None and m.group(4) is None
    if h_form and language not in ("French", "Portuguese"):
        return m.group()  # "5 h" is a duration outside French and Portuguese: the unit rule reads it
    minute = int(minute_text) if minute_text else 0
    if language == "Russian":
        said = numwords.cardinal(hour, language)
        if minute == 0:
            return f"{said} ноль-ноль"
        return f"{said} {'ноль ' if minute < 10 else ''}{numwords.cardinal(minute, language)}"
    gender = "f" if language in ("French", "Spanish", "Italian", "Portuguese") else "m"
    hours = numwords.cardinal(hour, language, gender)
    if language == "German":
        hours = "ein" if hour == 1 else hours
        return f"{hours} Uhr" + (f" {numwords.cardinal(minute, language)}" if minute else "")
    if language == "French":
        noun = "heure" if hour < 2 else "heures"
        return f"{hours} {noun}" + (f" {numwords.cardinal(minute, language, 'f')}" if minute else "")
    if minute == 0:
        word = _HOUR_WORD.get(language, "")
        return f"{hours} {word}".strip() if hour != 1 else hours
    return (
        f"{hours} e {numwords.cardinal(minute, language)}"
        if language != "Spanish"
        else (f"{hours} y {numwords.cardinal(minute, language)}")
    )


def read_russian_years(text: str) -> str:
    """ "в 2025 году" -> "в две тысячи двадцать пятом году" (an ordinal in the noun's case)."""
    cases = {"год": "n", "году": "prepositional", "года": "genitive", "годом": "instrumental"}

    def replace(m: re.Match[str]) -> str:
        return f"{numwords.ordinal(int(m.group(1)), 'Russian', case=cases[m.group(2)])} {m.group(2)}"

    def abbreviated(m: re.Match[str]) -> str:
        noun = "году" if word_before(m.string, m.start()).lower() == "в" else "года"
        return f"{m.group(1)} {noun}" + ("." if m.end() == len(m.string) else "")  # "г." ended the sentence

    text = re.sub(r"(?<![\w.,])(\d{3,4})\s?г\.", abbreviated, text)
    return re.sub(r"(?<![\w.,])(\d{1,4})[ \u00a0](год|году|года|годом)\b", replace, text)


def read_times(text: str, language: str) -> str:
    """Clock times of ``text`` in words."""
    return _TIME.sub(lambda m: _time(m, language), text) if any(ch.isdigit() for ch in text) else text
