"""Number words for the languages after Chinese and English, from num2words.

num2words (maintained, pure Python, offline) has cardinals and ordinals for all of them, with Russian
case and gender. This module only adds what the readings need on top: gender and the form before a
noun (German "ein", Spanish "un"/"una", Portuguese "duas"), digit-by-digit reading, and a length guard
(a 20,000-digit run is read digit by digit, never handed to int()). Results are cached: LLM text
repeats its numbers.
"""

from __future__ import annotations

import functools
import re

from .numbers import magnitude

# num2words language codes. European Portuguese and Brazilian share the words we emit; "pt" has no
# comma after "mil" ("mil duzentos"), which is right for both.
CODES = {
    "German": "de",
    "French": "fr",
    "Spanish": "es",
    "Italian": "it",
    "Portuguese": "pt",
    "Russian": "ru",
    "Japanese": "ja",
    "Korean": "ko",
}
# Past this many digits a number is read digit by digit: nobody says "nine quintillion ..." aloud.
MAX_CARDINAL_DIGITS = 15


def _num2words(value: int, language: str, **kw: str) -> str:
    # Imported on first use: nothing happens at package import. num2words ships no type information.
    from num2words import num2words  # type: ignore[import-untyped]

    return str(num2words(value, lang=CODES[language], **kw))


@functools.lru_cache(maxsize=8192)
def cardinal(value: int, language: str, gender: str = "bare", case: str = "n") -> str:
    """Cardinal words; ``gender`` m/f/n agrees where the language inflects numbers, ``case`` is Russian."""
    if value < 0:
        return f"{MINUS[language]} {cardinal(-value, language, gender, case)}"
    if language == "Russian":
        return _ru_tidy(_num2words(value, language, case=case, gender="m" if gender == "bare" else gender))
    return agree(_num2words(value, language), language, gender)


def agree(words: str, language: str, gender: str) -> str:
    """Gender of the last word of a cardinal (and Spanish/Portuguese hundreds) for the noun after it.

    ``gender`` "bare" keeps the form said alone ("eins", "uno", "um").
    """
    if gender == "bare":
        return words
    if language == "German" and words.endswith("eins"):
        return words[:-4] + ("eine" if gender == "f" else "ein")
    if language == "French" and gender == "f" and words.endswith("un"):
        return words + "e"
    if language == "Spanish":
        if gender == "f":
            return re.sub(r"ientos\b", "ientas", re.sub(r"uno$", "una", words))
        return re.sub(r"veintiuno$", "veintiún", re.sub(r"(?<!veinti)uno$", "un", words))
    if language == "Italian" and words == "uno":
        return "una" if gender == "f" else "un"
    if language == "Portuguese" and gender == "f":
        return re.sub(r"entos\b", "entas", re.sub(r"\bdois$", "duas", re.sub(r"\bum$", "uma", words)))
    return words


def _ru_tidy(words: str) -> str:
    # num2words says "одна тысяча двести"; speech says "тысяча двести" (the "одна" only before a noun).
    return re.sub(r"^одн(?:а|ой|у|ою) (тысяч)", r"\1", words)


@functools.lru_cache(maxsize=8192)
def ordinal(value: int, language: str, gender: str = "m", case: str = "n") -> str:
    """Ordinal words ("dritte", "troisième", "tercero"); gender f/n/m, case for Russian."""
    if language == "Russian":
        return str(_num2words(value, language, to="ordinal", case=case, gender=gender))
    words = _num2words(value, language, to="ordinal")
    if gender == "f":
        if language == "French" and words.endswith("premier"):
            return words[:-7] + "première"
        if language in ("Spanish", "Italian", "Portuguese"):
            return re.sub(r"o\b", "a", words)
    return words


MINUS = {
    "German": "minus",
    "French": "moins",
    "Spanish": "menos",
    "Italian": "meno",
    "Portuguese": "menos",
    "Russian": "минус",
}


def digits(run: str, language: str) -> str:
    """'0172' -> 'null eins sieben zwei'."""
    return " ".join(cardinal(int(d), language, "bare") for d in run if d.isdigit())


def number(run: str, language: str, gender: str = "bare", case: str = "n") -> str:
    """A digit run of any length as a cardinal (digit by digit past MAX_CARDINAL_DIGITS)."""
    value = magnitude(run)
    if isinstance(value, int) and len(str(value)) <= MAX_CARDINAL_DIGITS:
        return cardinal(value, language, gender, case)
    return digits(run, language)


def magnitude_int(run: str) -> int:
    """int(run) for a digit run, capped (a run too long to say gets a large stand-in for agreement)."""
    value = magnitude(run or "0")
    return value if isinstance(value, int) else 10**MAX_CARDINAL_DIGITS


def year_de(year: int) -> str:
    """German years 1100-1999 in hundreds: 1999 -> 'neunzehnhundertneunundneunzig'."""
    return _num2words(year, "German", to="year")


def ru_decimal(whole: str, frac: str) -> str:
    """Russian decimals in fractions, as they are said: '1', '5' -> 'одна целая пять десятых'."""
    from num2words import num2words

    return str(num2words(float(f"{int(whole or '0')}.{frac}"), lang="ru"))
