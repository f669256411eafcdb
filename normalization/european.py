"""Numbers, dates, times, money, percentages, units, ordinals and phone numbers for German, French,
Spanish, Italian, Portuguese and Russian.

Why num2words plus our rules rather than NVIDIA's nemo-text-processing grammars: nemo pins
pynini==2.1.6.post1 while WeTextProcessing runs on pynini 2.1.7 (one environment cannot hold both), its
grammars compile on first use per language (63 s for German here) and then take 0.4-1.3 s per sentence,
a hundred times the budget (measurements in docs/normalization.md). num2words gives the number
words (with Russian case and gender); what is language-specific about the written forms (decimal comma,
thousands dot or space, "14h30", "1er", "3.", "5-го", "12,50 €") is below, one pass per form, each
writing final words. Dates and times are in european_dates.py, written ordinals in european_ordinals.py;
this module runs the pass and reads phone numbers, money, percentages, units, versions, ranges and
plain numbers. docs/normalization.md has the table of what is read and the known limits.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from . import european_dates, european_ordinals, locales, numwords
from .european_dates import SPACE as _SPACE
from .european_dates import word_before as _word_before
from .locales import Noun

# Every pattern's number is left-bounded so that "v1,5", "A4" or "x2" are not numbers.
_LEFT = r"(?<![\w.,])"
_RIGHT = r"(?![\w])"
_THOUSANDS = {
    True: r"\d{1,3}(?:\.\d{3})+",  # German, Spanish, Italian, Portuguese: 1.234.567
    False: rf"\d{{1,3}}(?:{_SPACE}\d{{3}})+",  # French, Russian: 1 234 567
}


def _number_pattern(language: str) -> str:
    # A number: grouped thousands or a plain run, then an optional decimal part. A dot with 1-2 (or 4+)
    # digits after it is an English-style decimal point; read as the language's decimal too.
    grouped = _THOUSANDS[language in locales.THOUSANDS_DOT]
    return rf"(?:{grouped}|\d+)(?:,\d+|\.\d{{1,2}}(?!\d)|\.\d{{4,}})?"


def _parse(written: str) -> tuple[str, str]:
    """'1.234,5' -> ('1234', '5'); '1 234' -> ('1234', ''); '3.14' -> ('3', '14')."""
    written = re.sub(_SPACE, "", written)
    if "," in written:
        whole, frac = written.split(",", 1)
        return whole.replace(".", ""), frac
    if re.fullmatch(r"\d{1,3}(?:\.\d{3})+", written):
        return written.replace(".", ""), ""
    whole, _, frac = written.partition(".")
    return whole, frac


def _form(value: int, noun: Noun, language: str, fractional: bool) -> str:
    """The noun form after ``value``: Russian one/few/many; elsewhere singular for 1 (French: 0 and 1)."""
    if language == "Russian":
        if fractional:
            return noun.few  # "1,5 километра": genitive singular
        if value % 10 == 1 and value % 100 != 11:
            return noun.one
        if value % 10 in (2, 3, 4) and value % 100 not in (12, 13, 14):
            return noun.few
        return noun.many
    if language == "French":
        return noun.one if value < 2 else noun.many
    return noun.one if value == 1 and not fractional else noun.many


def _decimal(whole: str, frac: str, language: str, gender: str = "bare", case: str = "n") -> str:
    words = numwords.number(
        whole or "0", language, gender if not frac else "f" if language == "Russian" else "bare", case
    )
    if not frac:
        return words
    if language == "Russian" and len(frac) <= 3 and case == "n" and len(whole) <= numwords.MAX_CARDINAL_DIGITS:
        return numwords.ru_decimal(whole, frac)  # "одна целая пять десятых"
    if language == "German" or frac.startswith("0") or len(frac) > 2:
        tail = numwords.digits(frac, language)  # German says decimals digit by digit: "drei Komma eins vier"
    else:
        tail = numwords.number(frac, language)  # "trois virgule quatorze"
    return f"{words} {locales.DECIMAL_WORD[language]} {tail}"


def _amount(written: str, noun: Noun, language: str, case: str = "n") -> str:
    whole, frac = _parse(written)
    value = numwords.magnitude_int(whole)
    words = _decimal(whole, frac, language, noun.gender, case)
    return f"{words} {_form(value, noun, language, bool(frac))}"


class _Rules:
    """The compiled patterns of one language (built once, on first use of the language)."""

    def __init__(self, language: str) -> None:
        self.language = language
        num = _number_pattern(language)
        self.num = num
        currencies = locales.CURRENCIES[language]
        symbols = "|".join(re.escape(k) for k in sorted(currencies, key=len, reverse=True))
        self.money_before = re.compile(rf"(?<![\w])({symbols}){_SPACE}?(?=\d)({num}){_RIGHT}")
        self.money_after = re.compile(rf"{_LEFT}({num}){_SPACE}?({symbols})(?![\w])")
        units = locales.UNITS[language]
        unit_alts = "|".join(re.escape(k) for k in sorted(units, key=len, reverse=True))
        self.units = re.compile(rf"{_LEFT}([-−](?=\d))?({num}){_SPACE}?({unit_alts})(?![\w/])")
        self.percent = re.compile(rf"{_LEFT}([-−]?)({num}){_SPACE}?%")
        self.range = re.compile(rf"{_LEFT}({num})\s?[-–]\s?({num}){_RIGHT}")
        self.number = re.compile(rf"{_LEFT}([-−](?=\d))?({num}){_RIGHT}")


_rules: dict[str, _Rules] = {}


def _rules_for(language: str) -> _Rules:
    rules = _rules.get(language)
    if rules is None:
        rules = _rules[language] = _Rules(language)
    return rules


# --- phone numbers ---------------------------------------------------------------------------------------

# "+49 30 1234567", "+33 6 12 34 56 78", "06 12 34 56 78", "030-1234567", "+7 (495) 123-45-67".
_PHONE = re.compile(
    # Not inside grouped thousands: "1 000 000" has a "000 000" in it.
    r"(?<![\w.+,-])(?<!\d[ \u00a0\u202f])"
    r"(?:\+\d{1,3}(?:[ .\u00a0-]?\(?\d{1,4}\)?){2,6}|0\d{1,4}(?:[ .\u00a0-]\d{2,8}){1,4})(?![\w]|[.,-]\d)"
)


def _phones(text: str, language: str) -> str:
    def replace(m: re.Match[str]) -> str:
        written = m.group()
        groups = re.findall(r"\d+", written)
        if language == "French":
            # French says its numbers in pairs: "zéro six, douze, trente-quatre".
            said = [_french_pairs(g) for g in groups]
        else:
            said = [numwords.digits(g, language) for g in groups]
        plus = locales.PHONE_PLUS[language] + " " if written.startswith("+") else ""
        return plus + ", ".join(said)

    return _PHONE.sub(replace, text)


def _french_pairs(group: str) -> str:
    if len(group) % 2:
        return numwords.digits(group, "French")
    pairs = [group[i : i + 2] for i in range(0, len(group), 2)]
    return " ".join(
        numwords.digits(p, "French") if p.startswith("0") else numwords.cardinal(int(p), "French") for p in pairs
    )


# --- the pass ----------------------------------------------------------------------------------------------


def _next_word(text: str, end: int) -> str:
    m = re.match(r"\s*(\w+)", text[end : end + 40])
    return m.group(1) if m else ""


def _sub(pattern: re.Pattern[str], fn: Callable[[re.Match[str]], str], text: str) -> str:
    return pattern.sub(fn, text) if any(ch.isdigit() for ch in text) else text


# "v1.2.3", "1.2.3" and "Version 2.0": numbers joined by the language's word for the dot.
_VERSION_WORDS = "version versión versione versão версия версии версию"
_VERSION = re.compile(
    r"(?:(?<![\w.,])(v)(\d+(?:\.\d+)+)|(?<![\w.,])(\d+\.\d+\.\d+(?:\.\d+)*)"
    rf"|\b((?i:{'|'.join(_VERSION_WORDS.split())}))\s(\d+\.\d+))(?![\w]|[.,]\d)"
)
_DOT_WORD = {
    "German": ("Version", "Punkt"),
    "French": ("version", "point"),
    "Spanish": ("versión", "punto"),
    "Italian": ("versione", "punto"),
    "Portuguese": ("versão", "ponto"),
    "Russian": ("версия", "точка"),
}


def _version(m: re.Match[str], language: str) -> str:
    prefix, dot = _DOT_WORD[language]
    written = m.group(2) or m.group(3) or m.group(5)
    if m.group(3) and language in locales.THOUSANDS_DOT and re.fullmatch(r"\d{1,3}(?:\.\d{3})+", written):
        return written  # "1.234.567" is a number with thousands dots, not a version
    said = f" {dot} ".join(numwords.number(part, language) for part in written.split("."))
    if m.group(4):
        return f"{m.group(4)} {said}"
    return f"{prefix} {said}" if m.group(1) else said


def rewrite(text: str, language: str) -> str:
    """Every number form of ``text`` in words of ``language`` (one of locales.EUROPEAN)."""
    if not any(ch.isdigit() for ch in text):
        return text  # the fast path
    rules = _rules_for(language)
    currencies = locales.CURRENCIES[language]
    units = locales.UNITS[language]
    text = european_dates.read_dates(text, language)
    text = _VERSION.sub(lambda m: _version(m, language), text)  # after dates: "14.03.2025" is one
    text = _phones(text, language)
    if language == "Russian":
        text = european_dates.read_russian_years(text)
    text = european_dates.read_times(text, language)

    def money(m: re.Match[str], symbol: str, written: str) -> str:
        main, cents = currencies[symbol]
        whole, frac = _parse(written)
        said = _amount(whole, main, language)
        if frac and int(frac[:2].ljust(2, "0")):
            said += _CENTS_JOIN[language] + _amount(frac[:2].ljust(2, "0"), cents, language)
        return said

    text = _sub(rules.money_before, lambda m: money(m, m.group(1), m.group(2)), text)
    text = _sub(rules.money_after, lambda m: money(m, m.group(2), m.group(1)), text)

    def percent(m: re.Match[str]) -> str:
        said = _amount(m.group(2), locales.PERCENT[language], language)
        return _signed(m.group(1), said, language)

    text = _sub(rules.percent, percent, text)
    text = _sub(
        rules.units, lambda m: _signed(m.group(1), _amount(m.group(2), units[m.group(3)], language), language), text
    )
    text = european_ordinals.read_ordinals(text, language)
    if language in locales.RANGE_WORD:
        word = locales.RANGE_WORD[language]
        text = _sub(
            rules.range, lambda m: f"{_plain(m.group(1), language)} {word} {_plain(m.group(2), language)}", text
        )

    def number(m: re.Match[str]) -> str:
        case = "n"
        if language == "Russian":
            case = locales.RUSSIAN_CASE_AFTER.get(_word_before(m.string, m.start()).lower(), "n")
        said = _plain(m.group(2), language, case, _next_word(m.string, m.end()))
        return _signed(m.group(1), said, language)

    return _sub(rules.number, number, text)


_CENTS_JOIN = {
    "German": " und ",
    "French": " et ",
    "Spanish": " con ",
    "Italian": " e ",
    "Portuguese": " e ",
    "Russian": " ",
}


def _signed(sign: str | None, said: str, language: str) -> str:
    return f"{numwords.MINUS[language]} {said}" if sign else said


# Feminine nouns by ending, for the "one"/"two" before them: a guess that is right for most nouns a
# number stands before (German "Stunde", "Person", "Woche"; Spanish "personas", Portuguese "horas").
_FEMININE_ENDING = {
    "German": re.compile(r"(?:e|ung|heit|keit|schaft|ion|tät|ik|in)$"),
    "Spanish": re.compile(r"(?:a|as|ión|iones|dad|dades)$"),
    "Italian": re.compile(r"(?:a|ione|tà)$"),
    "Portuguese": re.compile(r"(?:a|as|ão|ões|dade|dades)$"),
}


def _plain(written: str, language: str, case: str = "n", next_word: str = "") -> str:
    whole, frac = _parse(written)
    if language == "German" and not frac and len(whole) == 4 and 1100 <= int(whole) <= 1999:
        return numwords.year_de(int(whole))  # a bare 4-digit number in that range is said as a year
    gender = "bare"  # "eins", "uno", "um": the form said alone
    if language == "Russian":
        gender = _russian_gender(numwords.magnitude_int(whole), next_word.lower()) if not frac else "m"
    elif next_word.isalpha() and (language != "German" or next_word[:1].isupper()):
        feminine = _FEMININE_ENDING.get(language)
        gender = "f" if feminine and feminine.search(next_word) else "m"
    return _decimal(whole, frac, language, gender, case)


def _russian_gender(value: int, noun: str) -> str:
    """The gender a Russian noun after ``value`` shows in its ending: after 1 the nominative singular
    ("одна книга", "одно окно"), after 2-4 the genitive singular ("две книги", "два стола")."""
    last = value % 10
    if value % 100 in (11, 12, 13, 14) or not noun.isalpha():
        return "m"
    if last == 1:
        return "f" if noun.endswith(("а", "я")) else "n" if noun.endswith(("о", "е")) else "m"
    if last == 2:  # only "два"/"две" differ; 3 and 4 have one form
        return "f" if noun.endswith(("ы", "и")) else "m"
    return "m"
