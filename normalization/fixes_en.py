"""English rewrites that run before the grammar, each around one known WeTextProcessing mistake.

What the English grammar (1.2.0) gets wrong, and the rule here that avoids it:

* "$12.50" -> "twelve point five dollars": money is read here ("twelve dollars fifty cents").
* "March 3rd, 2025" -> "the third of march , twenty twenty five"; ISO and m/d/yyyy dates likewise:
  dates are read here ("March third, twenty twenty-five").
* every 4-digit number is a year ("2025 apples" -> "twenty twenty five apples"), "1990s" ->
  "one thousand nine hundred and ninety seconds", "2020-2025" -> "two thousand and twenty to ...":
  plain integers, years, year ranges and decades are read here, years chosen by context.
* "GPT-4"/"COVID-19": hyphen between letters and digits becomes a space (never "minus").
* "5000mAh" -> "five thousand mAh", "100W" -> "one hundred W": units the grammar lacks are spelled out.
* "v1.2.3" -> "v one point two point three": "version one point two point three".
* "3x faster" -> "three times degrees Fahrenheit aster" (sic), "24/7" -> "twenty four sevenths",
  "50/50" -> "fifty fiftieths", "95/100" -> "ninety five one hundredths", "~5" -> "approximatelyfive",
  "×" left as is, "Between 2020-2023" -> "... to ...": read here.
* the Sunday/Television whitelist ("The Sun", "TV") and "3 f..." as Fahrenheit: avoided by handing the
  grammar number spans only (spans.py). After it, after_grammar() hyphenates "twenty five", says "oh"
  for clock minutes and "zero" in decimals.
* "+1 415 555 0100" and "13812345678" read as quantities: see phones.py; URLs: see web.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .numbers import (
    en_cardinal,
    en_cardinal_digits,
    en_digits,
    en_number,
    en_ordinal,
    en_plural_year,
    en_year,
    magnitude,
)
from .phones import read_phone_numbers
from .web import read_web_addresses

Rule = tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]

MONTHS = "January February March April May June July August September October November December".split()
_MONTH_BY_KEY = {m.lower(): m for m in MONTHS}
_MONTH_BY_KEY.update({m[:3].lower(): m for m in MONTHS})
_MONTH_BY_KEY["sept"] = "September"
_MONTH_NAMES = "|".join(sorted(set(MONTHS) | {m[:3] for m in MONTHS} | {"Sept"}, key=len, reverse=True))

# Units the grammar reads (they stay next to their number for it); used by spans.py as well.
GRAMMAR_UNITS = frozenset(
    """km m cm mm nm μm µm mi ft yd kg g mg lb lbs oz ml mL L kcal cal mph kph km/h m/s ms μs ns min
    Hz kHz MHz GHz KB kB MB GB TB PB kb Mb Gb Kbps kbps Mbps Gbps MB/s GB/s kW kw mA % ° °C °F ℃ ℉ rpm
    psi atm hp sq""".split()
)
_TIME_WORDS = ("am", "pm", "a.m.", "p.m.", "AM", "PM", "A.M.", "P.M.")


def _month_day_year(month: str, day: int, year: str | None) -> str:
    text = f"{month} {en_ordinal(day)}"
    return f"{text}, {en_year(int(year))}" if year else text


def _valid(month: int | float, day: int | float) -> bool:
    return 1 <= month <= 12 and 1 <= day <= 31


def _iso_date(m: re.Match[str]) -> str:
    month, day = int(m.group(2)), int(m.group(3))
    if not _valid(month, day):
        return m.group(0)
    return _month_day_year(MONTHS[month - 1], day, m.group(1))


def _us_date(m: re.Match[str]) -> str:
    month, day = int(m.group(1)), int(m.group(2))
    if not _valid(month, day):
        return m.group(0)
    return _month_day_year(MONTHS[month - 1], day, m.group(3))


def _month_first(m: re.Match[str]) -> str:
    day = int(m.group(2))
    if not 1 <= day <= 31:
        return m.group(0)
    return _month_day_year(_MONTH_BY_KEY[m.group(1).lower()], day, m.group(3))


def _day_first(m: re.Match[str]) -> str:
    day = int(m.group(1))
    if not 1 <= day <= 31:
        return m.group(0)
    text = f"the {en_ordinal(day)} of {_MONTH_BY_KEY[m.group(2).lower()]}"
    return f"{text}, {en_year(int(m.group(3)))}" if m.group(3) else text


_ORDINAL_SUFFIX = r"(?:st|nd|rd|th)?"
_DATE_RULES: list[Rule] = [
    (re.compile(r"(?<![\d-])(\d{4})-(\d{1,2})-(\d{1,2})(?![\d-])"), _iso_date),  # 2025-03-14
    (re.compile(r"(?<![\d/])(\d{1,2})/(\d{1,2})/(\d{4})(?![\d/])"), _us_date),  # 3/14/2025
    (  # March 3rd, 2025 / Mar. 3
        re.compile(rf"\b({_MONTH_NAMES})\.? (\d{{1,2}}){_ORDINAL_SUFFIX}(?:,? (\d{{4}}))?(?![\w:]|\.\d)"),
        _month_first,
    ),
    (  # 3 March 2025 / 3rd of March
        re.compile(rf"\b(\d{{1,2}}){_ORDINAL_SUFFIX} (?:of )?({_MONTH_NAMES})\b\.?(?:,? (\d{{4}})\b)?"),
        _day_first,
    ),
]

# ¥ is yen here: English text that means yuan usually says so ("1,200 yuan", "RMB").
_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "", ""),
}
_SCALES = {
    "k": "thousand",
    "K": "thousand",
    "m": "million",
    "M": "million",
    "mn": "million",
    "b": "billion",
    "B": "billion",
    "bn": "billion",
}
_AMOUNT = r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?"
_SCALE = r"(?:\s?(thousand|million|billion|trillion)\b|(bn|mn|[kKmMbB])\b)?"
_MONEY_BEFORE = re.compile(rf"(?<![\w$€£¥])(?:US)?([$€£¥])\s?{_AMOUNT}{_SCALE}")
_MONEY_RANGE = re.compile(r"(?<=\d)\s?[-–—]\s?(?=[$€£¥]\d)")  # $5-$10
_MONEY_AFTER = re.compile(rf"(?<![\w.,]){_AMOUNT}\s?([€£])")


def _money_words(symbol: str, whole: str, frac: str | None, scale: str | None) -> str:
    one, many, cent, cents = _CURRENCIES[symbol]
    if scale:
        return f"{en_number(whole + ('.' + frac if frac else ''))} {scale} {many}"
    units = magnitude(whole.replace(",", ""))
    if frac is not None and (len(frac) > 2 or not cent):
        frac = frac.rstrip("0")
        return f"{en_number(whole + '.' + frac if frac else whole)} {many}"
    minor = int((frac or "0").ljust(2, "0"))
    parts = []
    if units or not minor:
        parts.append(f"{en_cardinal_digits(whole.replace(',', ''))} {one if units == 1 else many}")
    if minor:
        parts.append(f"{en_cardinal(minor)} {cent if minor == 1 else cents}")
    return " ".join(parts)


def _money_before(m: re.Match[str]) -> str:
    scale = m.group(4) or _SCALES.get(m.group(5) or "")
    return _money_words(m.group(1), m.group(2), m.group(3), scale)


def _money_after(m: re.Match[str]) -> str:
    return _money_words(m.group(3), m.group(1), m.group(2), None)


def _read_version(parts: list[str]) -> str:
    # A part with a leading zero ("1.02") is said digit by digit.
    return " point ".join(en_digits(p) if p[:1] == "0" and len(p) > 1 else en_cardinal_digits(p) for p in parts)


def _dotted_number(m: re.Match[str]) -> str:
    parts = m.group(0).split(".")
    if len(parts) == 4 and all(magnitude(p) <= 255 for p in parts):  # an IPv4 address
        return " dot ".join(en_digits(p) for p in parts)
    if len(parts) == 3 and len(parts[2]) == 4 and _valid(magnitude(parts[1]), magnitude(parts[0])):  # 14.03.2025
        return f"the {en_ordinal(int(parts[0]))} of {MONTHS[int(parts[1]) - 1]}, {en_year(int(parts[2]))}"
    return _read_version(parts)


_VERSION = re.compile(r"(?<![\w.])v(\d+(?:\.\d+)*)(?![\w]|\.\d)")
_DOTTED_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+){2,}(?![\w]|\.\d)")

_YEAR = r"(1\d{3}|20\d{2})"
_YEAR_RANGE = re.compile(rf"(?<![\w.,/-]){_YEAR}\s?[-–—]\s?(1\d{{3}}|20\d{{2}}|\d{{2}})(?![\w%°]|[.,/-]\d)")
_BETWEEN = re.compile(  # "between 10-20", "between 9am-5pm": "and", not "to"
    r"\b([Bb]etween \$?\d[\d.,:]*(?:%|\s?(?:am|pm|AM|PM|a\.m\.|p\.m\.))?)\s?[-–—]\s?(?=[$\d])"
)
_DECADE = re.compile(r"(?<![\w'’])(1\d|20)(\d)0s\b")

# Words before a 4-digit number that make it a year, and count nouns after it that make it a quantity.
_YEAR_BEFORE = frozenset(
    """in since by from until till through of during before after around circa year years early mid
    late spring summer autumn fall winter the to and or between""".split()
) | {m.lower() for m in MONTHS}
_NOT_PLURAL = frozenset("is was has does its this thus as us yes plus vs his hers ours yours less".split())
_COUNT_NOUNS = frozenset("people men women children feet teeth mice sheep fish deer persons".split())


def _is_year(text: str, start: int, end: int) -> bool:
    before = re.search(r"([A-Za-z]+)[\s,]*$", text[max(0, start - 30) : start])
    if before and before.group(1).lower() in _YEAR_BEFORE:
        return True
    after = re.match(r"\s+([a-z]+)", text[end : end + 30])
    if after:
        word = after.group(1)
        if word in _COUNT_NOUNS or (word.endswith("s") and len(word) > 3 and word not in _NOT_PLURAL):
            return False
    return True


def _year_range(m: re.Match[str]) -> str:
    first, second = int(m.group(1)), m.group(2)
    last = int(second) if len(second) == 4 else first // 100 * 100 + int(second)
    if last <= first:
        return m.group(0)
    return f"{en_year(first)} to {en_year(last)}"


_UNIT_WORDS = {
    "mAh": ("milliamp hour", "milliamp hours"),
    "kWh": ("kilowatt hour", "kilowatt hours"),
    "Wh": ("watt hour", "watt hours"),
    "W": ("watt", "watts"),
    "V": ("volt", "volts"),
    "fps": ("frame per second", "frames per second"),
}
_UNITS = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s?(mAh|kWh|Wh|W|V|fps)(?![A-Za-z])")


def _unit(m: re.Match[str]) -> str:
    one, many = _UNIT_WORDS[m.group(2)]
    return f"{m.group(1)} {one if m.group(1) == '1' else many}"


def _out_of(m: re.Match[str]) -> str:
    top, bottom = magnitude(m.group(1)), magnitude(m.group(2))
    if bottom in (10, 100) or top >= bottom > 1:
        return f"{m.group(1)} out of {m.group(2)}"
    return m.group(0)  # a fraction: the grammar reads "1/3" as "one third"


_UNITS_AFTER = "|".join(re.escape(u) for u in sorted(GRAMMAR_UNITS | set(_TIME_WORDS), key=len, reverse=True))
# A plain integer: not part of a decimal, time, range, fraction, ordinal, unit or a longer token. Those
# are the grammar's (spans.py); plain integers are read here because the grammar takes every 4-digit
# number for a year and costs milliseconds per digit.
_INTEGER = re.compile(
    rf"(?<![\w.,:/\-−+#$€£¥])(\d{{1,3}}(?:,\d{{3}})+|\d+)"
    rf"(?![\w%°℃℉]|[.,:/\-–]\d|\s?(?:{_UNITS_AFTER})(?![A-Za-z]))"
)
_AFTER_CAPS = re.compile(r"(?:^|\s)[A-Z]+\s$")


def _integer(m: re.Match[str], text: str) -> str:
    digits = m.group(1)
    if "," not in digits and len(digits) > 1 and digits.startswith("0"):
        return en_digits(digits)  # "007", "0100"
    plain = digits.replace(",", "")
    value = magnitude(plain)  # a year is an int; math.inf only stands for a huge number
    if len(digits) == 4 and _AFTER_CAPS.search(text, max(0, m.start() - 12), m.start()):
        return en_year(int(value))  # model numbers are said in pairs: "RTX 4090" -> "forty ninety"
    if "," not in digits and 1000 <= value <= 2099 and _is_year(text, m.start(), m.end()):
        return en_year(int(value))
    return en_cardinal_digits(plain)


# Rules that need no digit.
_TEXT_RULES: list[Rule] = [
    (re.compile(r"\b([A-Z]{2,})-(?=[A-Z0-9])"), r"\1 "),  # RISC-V, USB-C: spelled later, no dash
    (re.compile(r"(?<=[A-Za-z])\s?&\s?(?=[A-Za-z])"), " and "),  # R&D, AT&T
]
_NUMBER_RULES: list[Rule] = [
    (re.compile(r"(?<=\d)\s?[–—]\s?(?=\d)"), "-"),  # dashes in ranges read like a hyphen
    (re.compile(r"(?<=%)\s?[-–—~]\s?(?=\d)"), " to "),  # 10%-20%
    (re.compile(r"(?<=\d)(\s?(?:am|pm|AM|PM|a\.m\.|p\.m\.))\s?[-–—]\s?(?=\d)"), r"\1 to "),  # 9am-5pm
    # GPT-4, COVID-19: a hyphen between letters and digits is no minus ("3-year-old" keeps its hyphen).
    (re.compile(r"(?<=[A-Za-z])-(?=\d)|(?<=\d)-(?=[A-Z])"), " "),
    (re.compile(r"(?<![\w'’])['’](?=\d0s\b)"), ""),  # '90s
    (_UNITS, _unit),
    (re.compile(r"(?<=\d)\s?[x×](?=[\s,.;:!?)]|$)"), " times"),  # 3x faster
    (re.compile(r"(?<=\d)\s?[×*]\s?(?=\d)"), " times "),
    (re.compile(r"(?<![\w~])~\s?(?=\d)"), "about "),
    (re.compile(r"≈\s?(?=\d)"), "approximately "),
    (re.compile(r"(?<=\d)\s?±\s?(?=\d)"), " plus or minus "),
    (re.compile(r"(?<![\d/])24/7(?![\d/])"), "twenty-four seven"),
    (re.compile(r"(?<![\d/.])50/50(?![\d/])"), "fifty-fifty"),
    (re.compile(r"(?<![\d/.])(\d+)/(\d+)(?![\d/])"), _out_of),  # 95/100, 5/5: scores, not fractions
    (re.compile(r"(?<![\d.])(\d)['’]\s?(\d{1,2})(?:\"|”|'')"), r"\1 foot \2"),  # 6'2"
    (re.compile(r"\bNo\.\s?(?=\d)"), "number "),
    (
        re.compile(
            r"(?<=[\w%])\s?/\s?(?=(?:month|year|day|week|hour|night|person|user|seat|unit|page|minute|"
            r"second|mo|yr|hr)s?\b)"
        ),
        " per ",
    ),  # $20/month, 23/day
    (re.compile(r"(?<=\d)\s?\+\s?(?=\d)"), " plus "),  # 2 + 2 = 4
    (re.compile(r"(?<=\d)\s?=\s?(?=[-−]?\d)"), " equals "),
]


def _apply(rules: list[Rule], text: str) -> str:
    for pattern, repl in rules:
        text = pattern.sub(repl, text)
    return text


def rewrite(text: str) -> str:
    """Everything before abbreviation spell-out: web, phones, dates, versions, money, ranges, units."""
    text = _apply(_TEXT_RULES, read_web_addresses(text, "English"))
    if not any(ch.isdigit() for ch in text):
        return text
    text = read_phone_numbers(text, "English")
    for pattern, handler in _DATE_RULES:
        text = pattern.sub(handler, text)
    text = _DOTTED_NUMBER.sub(_dotted_number, text)
    text = _VERSION.sub(lambda m: "version " + _read_version(m.group(1).split(".")), text)
    text = _BETWEEN.sub(r"\1 and ", text)
    text = _MONEY_RANGE.sub(" to ", text)
    text = _MONEY_BEFORE.sub(_money_before, text)
    text = _MONEY_AFTER.sub(_money_after, text)
    text = _YEAR_RANGE.sub(_year_range, text)
    text = _DECADE.sub(lambda m: en_plural_year(int(m.group(1) + m.group(2) + "0")), text)
    return _apply(_NUMBER_RULES, text)


def read_integers(text: str) -> str:
    """Plain integers and years, after spell-out (so "G P T 4" reads "G P T four")."""
    if not any(ch.isdigit() for ch in text):
        return text
    return _INTEGER.sub(lambda m: _integer(m, text), text)


_TENS = "twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety"
_UNITS_WORDS = "one|two|three|four|five|six|seven|eight|nine"
_ORDINAL_UNITS = "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth"


def _zero_digits(m: re.Match[str]) -> str:
    return "point" + m.group(1).replace("oh", "zero")


_NUMBER_WORD = rf"(?:{_TENS}|{_UNITS_WORDS}|ten|eleven|twelve|\w+teen)"
_AFTER_GRAMMAR: list[Rule] = [
    # The grammar writes "twenty five"; written English hyphenates compound numbers.
    (re.compile(rf"\b({_TENS}) ({_UNITS_WORDS}|{_ORDINAL_UNITS})\b"), r"\1-\2"),
    # Clock minutes: "nine o five" -> "nine oh five" (a lone "o" may be read as the letter).
    (re.compile(rf"\bo ({_UNITS_WORDS})\b"), r"oh \1"),
    # Decimals: "oh point oh five" -> "zero point zero five".
    (re.compile(r"\boh point\b"), "zero point"),
    (re.compile(rf"\bpoint((?: (?:oh|zero|{_UNITS_WORDS}))+)"), _zero_digits),
    # The grammar says "minus" and "negative" by context; "minus ten degrees" is the usual one.
    (re.compile(r"\bnegative\b"), "minus"),
    # American style, as in our own readings: "one hundred and eighty" -> "one hundred eighty".
    (re.compile(rf"\b(hundred|thousand|million|billion) and (?={_NUMBER_WORD}\b)"), r"\1 "),
    (re.compile(r"\s{2,}"), " "),
]


def after_grammar(spoken: str) -> str:
    """Clean one grammar output (a number span)."""
    for pattern, repl in _AFTER_GRAMMAR:
        spoken = pattern.sub(repl, spoken)
    return spoken.strip()
