"""Phone numbers, read digit by digit in their written groups.

The English grammar reads "+1 415 555 0100" as "plus one four hundred and fifteen ..." and
"13812345678" as thirteen billion; the Chinese grammar reads "+86 138 1234 5678" as a list of
quantities. Recognised forms: "+<country> <groups>", "(415) 555-0100", "415-555-0100" (also with dots),
Chinese mobiles "13812345678" / "138 1234 5678", landlines "010-12345678" and hotlines "400-800-8888".
"""

from __future__ import annotations

import re

from .numbers import en_digits, zh_digits

_PHONE = re.compile(
    r"(?<![\w.+-])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{2,4}\)?){2,6}"  # international; later groups have 2+ digits
    r"|\(\d{3}\) ?\d{3}[-. ]\d{4}"  # (415) 555-0100
    r"|\d{3}([-.])\d{3}\1\d{4}"  # 415-555-0100, 415.555.0100
    r"|0\d{2,3}-\d{7,8}"  # 010-12345678
    r"|[48]00[- ]?\d{3}[- ]?\d{4}"  # 400-800-8888
    r"|1[3-9]\d(?:[- ]?\d{4}){2}"  # 13812345678, 138 1234 5678
    r")(?![\w]|[.-]\d)",
    re.ASCII,  # Chinese text around the number ("拨打138...") is not a word boundary problem
)


def _groups(number: str) -> tuple[bool, list[str]]:
    plus = number.startswith("+")
    groups = re.findall(r"\d+", number)
    if len(groups) == 1 and len(groups[0]) == 11 and not plus:
        digits = groups[0]
        groups = [digits[:3], digits[3:7], digits[7:]]  # Chinese mobiles are said 3-4-4
    return plus, groups


def read_phone_numbers(text: str, language: str) -> str:
    """Rewrite phone numbers for ``language`` ("English" or "Chinese")."""

    def replace(m: re.Match[str]) -> str:
        plus, groups = _groups(m.group(0))
        if language == "English":
            return ("plus " if plus else "") + ", ".join(en_digits(g) for g in groups)
        return ("加" if plus else "") + "，".join(zh_digits(g, yao=True) for g in groups)

    return _PHONE.sub(replace, text)
