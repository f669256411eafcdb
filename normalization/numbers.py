"""Number words that our own rewrites emit (English and Chinese).

The rewrites in ``fixes_en``/``fixes_zh`` produce final words for the forms WeTextProcessing reads
wrongly (years, money, phone numbers, versions, ...), so these helpers must be exact and cheap.
"""

from __future__ import annotations

import math
import unicodedata

_EN_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_EN_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_EN_SCALES = ((10**15, "quadrillion"), (10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_EN_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
EN_DIGITS = dict(zip("0123456789", _EN_ONES[:10], strict=True))


def _en_below_thousand(n: int) -> str:
    words = []
    hundreds, rest = divmod(n, 100)
    if hundreds:
        words.append(f"{_EN_ONES[hundreds]} hundred")
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(_EN_TENS[tens] + (f"-{_EN_ONES[ones]}" if ones else ""))
    elif rest:
        words.append(_EN_ONES[rest])
    return " ".join(words)


def en_cardinal(n: int) -> str:
    """1234 -> 'one thousand two hundred thirty-four' (American style, no 'and')."""
    if n < 0:
        return "minus " + en_cardinal(-n)
    if n < 1000:
        return _en_below_thousand(n) or "zero"
    if n >= 10**18:  # beyond any quantity a listener follows: read the digits
        return en_digits(str(n))
    words = []
    for value, name in _EN_SCALES:
        count, n = divmod(n, value)
        if count:
            words.append(f"{_en_below_thousand(count)} {name}")
    if n:
        words.append(_en_below_thousand(n))
    return " ".join(words)


def en_ordinal(n: int) -> str:
    """21 -> 'twenty-first'."""
    words = en_cardinal(n)
    head, sep, last = words.rpartition(" ")
    prefix, hyphen, last = last.rpartition("-")
    if last in _EN_ORDINAL_IRREGULAR:
        last = _EN_ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + prefix + hyphen + last


def en_year(n: int) -> str:
    """2025 -> 'twenty twenty-five', 1905 -> 'nineteen oh five', 2005 -> 'two thousand five'."""
    if not 1000 <= n <= 9999 or n % 1000 == 0 or 2000 < n < 2010:
        return en_cardinal(n)
    high, low = divmod(n, 100)
    if low == 0:
        return f"{en_cardinal(high)} hundred"
    if low < 10:
        return f"{en_cardinal(high)} oh {_EN_ONES[low]}"
    return f"{en_cardinal(high)} {en_cardinal(low)}"


def en_plural_year(n: int) -> str:
    """Decades: 1990 -> 'nineteen nineties', 2000 -> 'two thousands'."""
    words = en_year(n)
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def en_digits(digits: str) -> str:
    """'0100' -> 'zero one zero zero'."""
    return " ".join(EN_DIGITS[d] for d in digits if d in EN_DIGITS)


# The rewrites' regexes hand over digit runs of any length when normalize_piece gets a long text, but
# int() of a string costs time quadratic in its length and Python refuses one of more than 4300 digits
# (str() of such an int as well). No reading needs the exact value of a number this long.
MAX_VALUE_DIGITS = 1000


def _ascii_digits(digits: str) -> str:
    # A regex's \d also takes other scripts' digits ("٣"), which int() reads as well.
    return digits if digits.isascii() else "".join(str(unicodedata.decimal(ch)) for ch in digits)


def magnitude(digits: str) -> int | float:
    """int(digits) for a run of decimal digits; math.inf past MAX_VALUE_DIGITS significant digits.

    Comparisons with any number a rule checks against (a month, 255, 2099) stay exact.
    """
    significant = _ascii_digits(digits).lstrip("0")
    return int(significant or "0") if len(significant) <= MAX_VALUE_DIGITS else math.inf


def en_cardinal_digits(digits: str) -> str:
    """en_cardinal(int(digits)) for a digit run of any length (a very long one is read digit by digit)."""
    value = magnitude(digits)
    return en_cardinal(value) if isinstance(value, int) else en_digits(_ascii_digits(digits).lstrip("0"))


def en_number(text: str) -> str:
    """An unsigned integer or decimal string: '3.05' -> 'three point zero five'."""
    whole, _, frac = text.replace(",", "").partition(".")
    words = en_cardinal_digits(whole) if whole else "zero"
    return f"{words} point {en_digits(frac)}" if frac else words


_ZH_DIGITS = "零一二三四五六七八九"
_ZH_UNITS = ("", "十", "百", "千")
_ZH_GROUPS = ("", "万", "亿", "万亿")


def _zh_group(n: int) -> str:
    """0 < n < 10000, with inner zeros as 零 (1005 -> 一千零五)."""
    out: list[str] = []
    pending_zero = False
    for power in (3, 2, 1, 0):
        digit = (n // 10**power) % 10
        if digit == 0:
            pending_zero = bool(out)
            continue
        if pending_zero:
            out.append("零")
            pending_zero = False
        out.append(_ZH_DIGITS[digit] + _ZH_UNITS[power])
    return "".join(out)


def zh_cardinal(n: int) -> str:
    """1200 -> 一千二百, 10 -> 十, 100005 -> 十万零五. Uses 二, never 两 (ordinals, decimals)."""
    if n < 0:
        return "负" + zh_cardinal(-n)
    if n == 0:
        return "零"
    if n >= 10**16:
        return zh_digits(str(n))
    groups = []
    while n:
        n, group = divmod(n, 10000)
        groups.append(group)
    out: list[str] = []
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            continue
        # A group below 1000 after a higher group needs a 零: 一万零五百.
        if out and group < 1000 and not out[-1].endswith("零"):
            out.append("零")
        out.append(_zh_group(group) + _ZH_GROUPS[index])
    text = "".join(out)
    return text[1:] if text.startswith("一十") else text


def zh_digits(digits: str, *, yao: bool = False) -> str:
    """'0100' -> 零一零零; yao=True reads 1 as 幺, as is usual for phone numbers."""
    table = _ZH_DIGITS.replace("一", "幺") if yao else _ZH_DIGITS
    return "".join(table[int(d)] for d in digits if d.isdigit())


def zh_cardinal_digits(digits: str) -> str:
    """zh_cardinal(int(digits)) for a digit run of any length (a very long one is read digit by digit)."""
    value = magnitude(digits)
    return zh_cardinal(value) if isinstance(value, int) else zh_digits(_ascii_digits(digits).lstrip("0"))


def zh_number(text: str) -> str:
    """An unsigned integer or decimal string: '12.5' -> 十二点五."""
    whole, _, frac = text.replace(",", "").partition(".")
    words = zh_cardinal_digits(whole) if whole else "零"
    return f"{words}点{zh_digits(frac)}" if frac else words
