"""Korean numbers: Sino-Korean words by default, native Korean numbers before native counters.

Korean has two number systems and the counter decides: "3개" -> "세 개", "14시 30분" -> "열네 시 삼십
분", "2025년 3월 14일" -> "이천이십오 년 삼 월 십사 일" (6월/10월 are 유월/시월), "5,000원" -> "오천 원".
Sino-Korean words come from num2words; the native numbers (1-99, in the form before a counter) are the
small table below, since num2words only has them inside its ordinals. A native counter after a number
of 100 or more takes Sino-Korean, as speakers do.
"""

from __future__ import annotations

import re

from . import numwords

_NATIVE_ONES = ["", "한", "두", "세", "네", "다섯", "여섯", "일곱", "여덟", "아홉"]
_NATIVE_TENS = ["", "열", "스물", "서른", "마흔", "쉰", "예순", "일흔", "여든", "아흔"]
# Counters that take native numbers (hours on the clock too: 세 시).
_NATIVE_COUNTERS = "시간 시 개 명 살 마리 권 잔 병 번 사람 곳 가지 그루 대 장 켤레 벌 송이 달".split()
_SINO_DIGITS = "공 일 이 삼 사 오 육 칠 팔 구".split()  # 0 is 공 in phone numbers
_UNITS = {
    "km/h": "킬로미터",
    "km": "킬로미터",
    "cm": "센티미터",
    "mm": "밀리미터",
    "m": "미터",
    "kg": "킬로그램",
    "mg": "밀리그램",
    "g": "그램",
    "ml": "밀리리터",
    "mL": "밀리리터",
    "l": "리터",
    "L": "리터",
    "GB": "기가바이트",
    "MB": "메가바이트",
    "TB": "테라바이트",
    "mAh": "밀리암페어시",
    "kW": "킬로와트",
    "W": "와트",
    "°C": "도",
    "℃": "도",
    "%": "퍼센트",
    "％": "퍼센트",
}
_CURRENCY_BEFORE = {"₩": "원", "$": "달러", "€": "유로", "¥": "엔", "£": "파운드"}
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_PHONE = re.compile(r"(?<![\d-])0\d{1,2}-\d{3,4}-\d{4}(?![\d-])")
_DATE = re.compile(r"(?<![\d/.-])(\d{4})[/.-] ?(\d{1,2})[/.-] ?(\d{1,2})\.?(?![\d/-])")
_TIME = re.compile(r"(?<![\d:])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])")
_MONEY = re.compile(rf"([₩$€¥£])\s?({_NUM})")
_UNIT = re.compile(
    rf"(?:(?<![A-Za-z0-9.,-])(-))?(?<![\d.,])({_NUM})\s?"
    rf"({'|'.join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))})(?![A-Za-z])"
)
_NATIVE = re.compile(rf"(?<![\d.,])(\d{{1,2}})\s?({'|'.join(_NATIVE_COUNTERS)})")
_NATIVE_RANGE = re.compile(rf"(?<![\d.,])(\d{{1,2}})\s?[-~〜–]\s?(\d{{1,2}})\s?({'|'.join(_NATIVE_COUNTERS)})")
_MONTH = re.compile(r"(?<![\d.,])(\d{1,2})\s?월")
# A minus only where no Latin word or number stands before it ("気温は-5℃" has one).
_LEFTOVER = re.compile(r"\d+")
# "v1.2.3", "1.2.3": each part a number, the dots said.
_VERSION = re.compile(r"(?<![A-Za-z0-9.])(v)?(\d+(?:\.\d+){2,}|(?<=v)\d+\.\d+)(?![\d.]*\d)")
_PLAIN = re.compile(rf"(?:(?<![A-Za-z0-9.,-])(-))?(?<![\d.])({_NUM})(?![\d])")
_RANGE = re.compile(r"(?<=\d)\s?[-~〜–]\s?(?=\d)")


def native(n: int) -> str:
    """1..99 in the form before a counter: 1 -> 한, 20 -> 스무, 24 -> 스물네."""
    if n == 20:
        return "스무"
    return _NATIVE_TENS[n // 10] + _NATIVE_ONES[n % 10]


def sino(written: str) -> str:
    """'5,000' -> 오천; '3.14' -> 삼 점 일사."""
    whole, _, frac = written.replace(",", "").partition(".")
    said = numwords.number(whole, "Korean")
    if frac:
        said += " 점 " + "".join(_SINO_DIGITS[int(d)] if d != "0" else "영" for d in frac)
    return said


def _month(m: re.Match[str]) -> str:
    month = int(m.group(1))
    return {6: "유월", 10: "시월"}.get(month, f"{sino(m.group(1))}월")


def _counted(m: re.Match[str]) -> str:
    n = int(m.group(1))
    return f"{native(n)} {m.group(2)}" if 1 <= n <= 99 else f"{sino(m.group(1))} {m.group(2)}"


def _counted_range(m: re.Match[str]) -> str:
    low, high = int(m.group(1)), int(m.group(2))
    if not (1 <= low <= 99 and 1 <= high <= 99):
        return m.group()
    return f"{native(low)}에서 {native(high)} {m.group(3)}"  # "3-5개" -> "세에서 다섯 개"


def _time(m: re.Match[str]) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    said = f"{native(hour)} 시" if hour else "영 시"
    return said + (f" {sino(m.group(2))} 분" if minute else "")


def _version(m: re.Match[str]) -> str:
    return ("버전 " if m.group(1) else "") + " 점 ".join(sino(part) for part in m.group(2).split("."))


def rewrite(text: str) -> str:
    if not any(ch.isdigit() for ch in text):
        return text
    text = _PHONE.sub(lambda m: ", ".join("".join(_SINO_DIGITS[int(d)] for d in g) for g in m.group().split("-")), text)
    text = _DATE.sub(lambda m: f"{m.group(1)}년 {m.group(2)}월 {m.group(3)}일", text)
    text = _VERSION.sub(_version, text)  # after dates: "2025.03.14" is one
    text = _TIME.sub(_time, text)
    text = _MONEY.sub(lambda m: f"{sino(m.group(2))} {_CURRENCY_BEFORE[m.group(1)]}", text)
    text = _UNIT.sub(lambda m: ("마이너스 " if m.group(1) else "") + f"{sino(m.group(2))} {_UNITS[m.group(3)]}", text)
    text = _MONTH.sub(_month, text)
    text = _NATIVE_RANGE.sub(_counted_range, text)
    text = _NATIVE.sub(_counted, text)
    text = _RANGE.sub("에서 ", text)  # "3-5" -> "삼에서 오"
    text = _PLAIN.sub(lambda m: ("마이너스 " if m.group(1) else "") + sino(m.group(2)), text)
    return _LEFTOVER.sub(lambda m: sino(m.group()), text)  # digits after a stray "." ("v1.2.3")
