"""Japanese numbers: Arabic digits rewritten as kanji numerals, with their units as words.

"2025年3月14日" -> "二千二十五年三月十四日", "14:30" -> "十四時三十分", "¥1,200" -> "千二百円",
"15%" -> "十五パーセント", "3人" -> "三人". The counter's reading (三人 = さんにん, 一人 = ひとり, 三本 =
さんぼん) is left to the model, which reads kanji numerals with their counters the way Japanese text is
written; Arabic digits next to a counter are where it goes wrong. Kanji numerals come from num2words.
Phone numbers are read digit by digit in katakana, as Japanese speakers say them.
"""

from __future__ import annotations

import re

from . import numwords

_DIGITS_KANA = "ゼロ イチ ニー サン ヨン ゴー ロク ナナ ハチ キュウ".split()
_UNITS = {
    "km/h": "キロメートル毎時",
    "km": "キロメートル",
    "cm": "センチメートル",
    "mm": "ミリメートル",
    "m": "メートル",
    "kg": "キログラム",
    "mg": "ミリグラム",
    "g": "グラム",
    "ml": "ミリリットル",
    "mL": "ミリリットル",
    "l": "リットル",
    "L": "リットル",
    "GB": "ギガバイト",
    "MB": "メガバイト",
    "TB": "テラバイト",
    "mAh": "ミリアンペア時",
    "kW": "キロワット",
    "W": "ワット",
    "°C": "度",
    "℃": "度",
    "%": "パーセント",
    "％": "パーセント",
}
_CURRENCY_BEFORE = {"¥": "円", "￥": "円", "$": "ドル", "€": "ユーロ", "£": "ポンド", "₩": "ウォン"}
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_LEFT = r"(?<![\w.,])"  # \w includes kanji and kana in Python: "第3" is handled by the plain pass below
_PHONE = re.compile(r"(?<![\d-])0\d{1,4}-\d{1,4}-\d{3,4}(?![\d-])")
_DATE = re.compile(r"(?<![\d/.-])(\d{4})[/.-](\d{1,2})[/.-](\d{1,2})(?![\d/.-])")
_TIME = re.compile(r"(?<![\d:])([01]?\d|2[0-3])[:：]([0-5]\d)(?![\d:])")
_MONEY = re.compile(rf"([¥￥$€£₩])\s?({_NUM})")
_UNIT = re.compile(
    rf"(?:(?<![A-Za-z0-9.,-])(-))?(?<![\d.,])({_NUM})\s?"
    rf"({'|'.join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))})(?![A-Za-z])"
)
# A minus only where no Latin word or number stands before it ("気温は-5℃" has one).
_LEFTOVER = re.compile(r"\d+")
# "v1.2.3", "1.2.3": each part a number, the dots said.
_VERSION = re.compile(r"(?<![A-Za-z0-9.])(v)?(\d+(?:\.\d+){2,}|(?<=v)\d+\.\d+)(?![\d.]*\d)")
_PLAIN = re.compile(rf"(?:(?<![A-Za-z0-9.,-])(-))?(?<![\d.])({_NUM})(?![\d])")
_RANGE = re.compile(r"(?<=\d)\s?[-~〜–]\s?(?=\d)")


def kanji(written: str) -> str:
    """'1,200' -> 千二百; '3.14' -> 三点一四; very long runs digit by digit."""
    whole, _, frac = written.replace(",", "").partition(".")
    said = numwords.number(whole, "Japanese")
    if frac:
        said += "点" + "".join(numwords.cardinal(int(d), "Japanese") if d != "0" else "〇" for d in frac)
    return said.replace("ゼロ", "〇") if said == "ゼロ" else said


def _phone(m: re.Match[str]) -> str:
    return "、".join("".join(_DIGITS_KANA[int(d)] for d in group) for group in m.group().split("-"))


def _time(m: re.Match[str]) -> str:
    hour, minute = int(m.group(1)), int(m.group(2))
    return f"{kanji(str(hour))}時" + (f"{kanji(str(minute))}分" if minute else "")


def _version(m: re.Match[str]) -> str:
    return ("バージョン" if m.group(1) else "") + "点".join(kanji(part) for part in m.group(2).split("."))


def rewrite(text: str) -> str:
    if not any(ch.isdigit() for ch in text):
        return text
    text = _PHONE.sub(_phone, text)
    text = _DATE.sub(lambda m: f"{kanji(m.group(1))}年{kanji(m.group(2))}月{kanji(m.group(3))}日", text)
    text = _VERSION.sub(_version, text)  # after dates: "2025.03.14" is one
    text = _TIME.sub(_time, text)
    text = _RANGE.sub("から", text)  # "3-5人" -> "三から五人"
    text = _MONEY.sub(lambda m: kanji(m.group(2)) + _CURRENCY_BEFORE[m.group(1)], text)
    text = _UNIT.sub(lambda m: ("マイナス" if m.group(1) else "") + kanji(m.group(2)) + _UNITS[m.group(3)], text)
    text = _PLAIN.sub(lambda m: ("マイナス" if m.group(1) else "") + kanji(m.group(2)), text)
    return _LEFTOVER.sub(lambda m: kanji(m.group()), text)  # digits after a stray "." ("v1.2.3")
