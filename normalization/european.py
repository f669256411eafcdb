"""Numbers, dates, times, money, percentages, units, ordinals and phone numbers for German, French,
Spanish, Italian, Portuguese and Russian.

Why our own rules over num2words and not NVIDIA's nemo-text-processing grammars: nemo pins
pynini==2.1.6.post1 while WeTextProcessing runs on pynini 2.1.7 (one environment cannot hold both), and
its grammars compile on first use per language (minutes on our CI machines). num2words gives the number
words (with Russian case and gender); what is language-specific about the written forms (decimal comma,
thousands dot or space, "14h30", "1er", "3.", "5-го", "12,50 €") is below, one pass per form, each
writing final words. docs/normalization.md has the table of what is read and the known limits.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from . import locales, numwords
from .locales import Noun

# Every pattern's number is left-bounded so that "v1,5", "A4" or "x2" are not numbers.
_LEFT = r"(?<![\w.,])"
_RIGHT = r"(?![\w])"
_SPACE = "[ \u00a0\u202f]"  # French and Russian put a (narrow) no-break space in numbers and before units
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
    if language == "Russian" and len(frac) <= 3 and case == "n":
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
        months = "|".join(locales.MONTHS[language])
        self.numeric_date = re.compile(r"(?<![\w.,/-])(\d{1,2})([./])(\d{1,2})\2(\d{4})(?![\w]|[./]\d)")
        self.iso_date = re.compile(r"(?<![\w.,/-])(\d{4})-(\d{2})-(\d{2})(?![\w]|[-.]\d)")
        dot = r"\.?" if language == "German" else ""
        self.named_date = re.compile(rf"{_LEFT}(\d{{1,2}}){dot}(?:er|º|°)?({_SPACE}(?:de{_SPACE})?)({months})\b")
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


# --- dates, times ------------------------------------------------------------------------------------------


def _day(day: int, language: str, before: str) -> str:
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


def _word_before(text: str, start: int) -> str:
    m = re.search(r"(\w+)\W*$", text[max(0, start - 40) : start])
    return m.group(1) if m else ""


def _date(text: str, start: int, day: int, month: int, year: int | None, language: str) -> str | None:
    if not (1 <= day <= 31 and 1 <= month <= 12):
        return None
    said_day = _day(day, language, _word_before(text, start))
    fmt = locales.DATE_FORMAT[language]
    if year is None:
        fmt = fmt.split(" {y}")[0].removesuffix(" de")
        if language == "Russian":
            fmt = "{d} {m}"
    return fmt.format(d=said_day, m=locales.MONTHS[language][month - 1], y=_year(year or 0, language))


def _dates(text: str, rules: _Rules, language: str) -> str:
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
        return f"{_day(day, language, _word_before(m.string, m.start()))}{m.group(2)}{m.group(3)}"

    text = rules.numeric_date.sub(numeric, text)
    text = rules.iso_date.sub(iso, text)
    return rules.named_date.sub(named, text)


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


# --- ordinals ----------------------------------------------------------------------------------------------

_ORDINAL = {
    # "der 3. Platz": a number with a period before a word (the splitter keeps "3. Platz" together).
    "German": re.compile(r"(?<![\w.,])(\d{1,4})\.(?=[ \u00a0]+[^\W\d_])"),
    "French": re.compile(r"(?<![\w.,])(\d{1,4})(er|re|ère|e|ème|eme|nd|nde)(?![\w])"),
    "Spanish": re.compile(r"(?<![\w.,])(\d{1,4})\.?(º|°|ª|er|ero|era|ro|ra|do|da|to|ta|vo|va|no|na|mo|ma)(?![\w])"),
    "Italian": re.compile(r"(?<![\w.,])(\d{1,4})\.?(º|°|ª|o|a)(?![\w])"),
    "Portuguese": re.compile(r"(?<![\w.,])(\d{1,4})\.?(º|°|ª|o|a)(?![\w])"),
    "Russian": re.compile(
        r"(?<![\w.,])(\d{1,4})-(ого|его|ому|ему|ый|ий|ой|ая|ое|ые|ым|ом|ем|ых|их|ую|го|му|й|я|е|ю|х|м)(?![\w])"
    ),
}
# Russian suffix -> (gender, case) of the ordinal it abbreviates.
_RU_SUFFIX = {
    "й": ("m", "n"), "ый": ("m", "n"), "ий": ("m", "n"), "ой": ("m", "n"),
    "я": ("f", "n"), "ая": ("f", "n"),
    "е": ("n", "n"), "ое": ("n", "n"),
    "го": ("m", "genitive"), "ого": ("m", "genitive"), "его": ("m", "genitive"),
    "му": ("m", "dative"), "ому": ("m", "dative"), "ему": ("m", "dative"),
    "м": ("m", "prepositional"), "ом": ("m", "prepositional"), "ем": ("m", "prepositional"),
    "ю": ("f", "accusative"), "ую": ("f", "accusative"),
}  # fmt: skip


def _ordinal(m: re.Match[str], language: str) -> str:
    value = int(m.group(1))
    suffix = m.group(2) if language != "German" else ""
    if language == "German":
        words = numwords.ordinal(value, language)
        return words + "n" if _word_before(m.string, m.start()).lower() in locales.GERMAN_DATIVE_WORDS else words
    if language == "Russian":
        if suffix in ("х", "ых", "их", "ые", "ым"):
            return m.group()  # plural forms ("5-х годах"): num2words has no plural ordinals; left as written
        gender, case = _RU_SUFFIX.get(suffix, ("m", "n"))
        return numwords.ordinal(value, language, gender=gender, case=case)
    feminine = suffix in ("ª", "a", "re", "ère", "nde", "ra", "era", "da", "ta", "va", "na", "ma")
    words = numwords.ordinal(value, language, gender="f" if feminine else "m")
    if language == "Spanish" and suffix == "er":
        words = re.sub(r"(primer|tercer)o$", r"\1", words)  # "1er piso" -> "primer piso"
    return words


# --- the pass ----------------------------------------------------------------------------------------------


def _next_word(text: str, end: int) -> str:
    m = re.match(r"\s*(\w+)", text[end : end + 40])
    return m.group(1) if m else ""


def _russian_years(text: str) -> str:
    """ "в 2025 году" -> "в две тысячи двадцать пятом году" (an ordinal in the noun's case)."""
    cases = {"год": "n", "году": "prepositional", "года": "genitive", "годом": "instrumental"}

    def replace(m: re.Match[str]) -> str:
        return f"{numwords.ordinal(int(m.group(1)), 'Russian', case=cases[m.group(2)])} {m.group(2)}"

    def abbreviated(m: re.Match[str]) -> str:
        noun = "году" if _word_before(m.string, m.start()).lower() == "в" else "года"
        return f"{m.group(1)} {noun}" + ("." if m.end() == len(m.string) else "")  # "г." ended the sentence

    text = re.sub(r"(?<![\w.,])(\d{3,4})\s?г\.", abbreviated, text)
    return re.sub(r"(?<![\w.,])(\d{1,4})[ \u00a0](год|году|года|годом)\b", replace, text)


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
    text = _dates(text, rules, language)
    text = _VERSION.sub(lambda m: _version(m, language), text)  # after dates: "14.03.2025" is one
    text = _phones(text, language)
    if language == "Russian":
        text = _russian_years(text)
    text = _sub(_TIME, lambda m: _time(m, language), text)

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
    text = _sub(_ORDINAL[language], lambda m: _ordinal(m, language), text)
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
        return _year(int(whole), language)  # a bare 4-digit number in that range is said as a year
    gender = "bare"  # "eins", "uno", "um": the form said alone
    if next_word.isalpha() and (language != "German" or next_word[:1].isupper()):
        feminine = _FEMININE_ENDING.get(language)
        gender = "f" if feminine and feminine.search(next_word) else "m"
    return _decimal(whole, frac, language, gender, case)
