"""Chinese rewrites that run before the grammar, each around one known WeTextProcessing mistake.

What the Chinese grammar (1.2.0) gets wrong, and the rule here that avoids it:

* "GPT-4" -> "GPT负四", "COVID-19" -> "COVID负十九": a hyphen between letters and digits is a space.
* "12.5" -> "十二月五日", "11.11" -> "十一月十一日": decimals are read here ("十二点五").
* "¥1200.50" -> "一千二百点五零元": yuan amounts become 元/角/分 ("一千二百元五角").
* "$12.50" -> "十二点五零美元", "12.5美元" -> "十二月五日美元": foreign money is read here.
* "5000mAh" -> "五千米Ah", "3kWh" -> "三千瓦h", "100W" -> "一百W": units are written in Chinese first.
* "v1.2.3" -> "v一.二点三": versions are read here ("V一点二点三").
* "20%-30%" -> "百分之二十百分之负三十": percentage ranges are read here.
* "第2名" -> "第两名": ordinals are read here ("第二名"); "21st" -> "二十一秒t": "第二十一".
* "1,234,567" -> "一,两百三十四,五百六十七": thousands separators are dropped first.
* "+86 138 1234 5678" read as quantities: see phones.py; URLs are left as is: see web.py.
* "15% more" -> "百分之十五米ore": fixed by the span extraction in spans.py (Latin words are never
  handed to the grammar), not here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .numbers import magnitude, zh_cardinal_digits, zh_digits, zh_number
from .phones import read_phone_numbers
from .web import read_web_addresses

# Full-width digits, letters and a few symbols become ASCII so every rule (and the grammar) sees them.
_FULL_WIDTH = str.maketrans(
    {chr(0xFF10 + i): str(i) for i in range(10)}
    | {chr(0xFF21 + i): chr(0x41 + i) for i in range(26)}
    | {chr(0xFF41 + i): chr(0x61 + i) for i in range(26)}
    | {"％": "%", "＄": "$", "＋": "+"}
)
_FULL_WIDTH_BETWEEN_DIGITS = re.compile(r"(?<=\d)[．：－／](?=\d)")
_FW_SEPARATORS = {"．": ".", "：": ":", "－": "-", "／": "/"}

_NUMBER = r"\d+(?:\.\d+)?"

_CURRENCY_WORDS = {"$": "美元", "€": "欧元", "£": "英镑"}
_YUAN = re.compile(r"[¥￥]\s?(\d+)(?:\.(\d{1,2}))?(?![\d.万亿])|(?<![\d.])(\d+)\.(\d{1,2})\s?元")
_YUAN_SCALED = re.compile(rf"[¥￥]\s?({_NUMBER})([万亿])")
_FOREIGN = re.compile(rf"(?:US)?([$€£])\s?({_NUMBER})([万亿])?")


def _yuan(m: re.Match[str]) -> str:
    whole = m.group(1) or m.group(3)
    frac = (m.group(2) if m.group(1) else m.group(4)) or ""
    jiao, fen = (int(d) for d in frac.ljust(2, "0"))
    out = f"{whole}元" if magnitude(whole) or not (jiao or fen) else ""
    if jiao:
        out += f"{jiao}角"
    if fen:
        out += ("零" if out and not jiao else "") + f"{fen}分"
    return out


def _foreign(m: re.Match[str]) -> str:
    amount = m.group(2).rstrip("0").rstrip(".") if "." in m.group(2) else m.group(2)  # 12.50 -> 十二点五
    return zh_number(amount) + (m.group(3) or "") + _CURRENCY_WORDS[m.group(1)]


def _version(parts: list[str]) -> str:
    return "点".join(zh_digits(p) if p[:1] == "0" and len(p) > 1 else zh_cardinal_digits(p) for p in parts)


def _v_version(m: re.Match[str]) -> str:
    return "V" + _version(m.group(1).split("."))


def _dotted_number(m: re.Match[str]) -> str:
    parts = m.group(0).split(".")
    if len(parts) == 3 and len(parts[0]) == 4:
        return m.group(0)  # 2025.03.14: the grammar reads dates well
    if len(parts) == 4 and all(magnitude(p) <= 255 for p in parts):  # an IPv4 address
        return "点".join(zh_digits(p) for p in parts)
    return _version(parts)


_UNITS = [
    (re.compile(r"(?<=\d)\s?mAh(?![A-Za-z])"), "毫安时"),
    (re.compile(r"(?<=\d)\s?[kK][wW][hH](?![A-Za-z])"), "千瓦时"),
    (re.compile(r"(?<=\d)\s?Wh(?![A-Za-z])"), "瓦时"),
    (re.compile(r"(?<=\d)\s?[kK]W(?![A-Za-z])"), "千瓦"),
    (re.compile(r"(?<=\d)\s?W(?![A-Za-z])"), "瓦"),
    (re.compile(r"(?<=\d)\s?mA(?![A-Za-z])"), "毫安"),
    (re.compile(r"(?<=\d)\s?V(?![A-Za-z])"), "伏"),
    (re.compile(r"(?<=\d)\s?GHz(?![A-Za-z])"), "吉赫兹"),
    (re.compile(r"(?<=\d)\s?MHz(?![A-Za-z])"), "兆赫兹"),
    (re.compile(r"(?<=\d)\s?fps(?![A-Za-z])"), "帧每秒"),
]

_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (_YUAN_SCALED, r"\1\2元"),
    (_YUAN, _yuan),
    (_FOREIGN, _foreign),
    (re.compile(r"(?<![\w.])[vV](\d+(?:\.\d+)*)(?![\d.]*\d)", re.ASCII), _v_version),
    (re.compile(r"(?<![\d.])\d+(?:\.\d+){2,}(?![\d.]*\d)"), _dotted_number),
    # Percentage ranges: "20%-30%" -> 百分之二十到百分之三十, "10-20%" -> 百分之十到二十. The first
    # one only starts at the start of a digit run: from inside a long run it would retry the whole run
    # from each digit (quadratic), and a match from inside a run always has one from its start.
    (
        re.compile(rf"(?<!\d)({_NUMBER})%\s?[-~～–—至到]\s?({_NUMBER})%"),
        lambda m: f"百分之{zh_number(m.group(1))}到百分之{zh_number(m.group(2))}",
    ),
    (
        re.compile(rf"(?<![\d.])({_NUMBER})\s?[-~～–—]\s?({_NUMBER})%"),
        lambda m: f"百分之{zh_number(m.group(1))}到{zh_number(m.group(2))}",
    ),
    (re.compile(r"(?<=\d),(?=\d{3}(?!\d))"), ""),  # 1,234,567
    # Decimals the grammar may take for dates; a decimal before % stays for the grammar.
    (re.compile(r"(?<![\d.:])(\d+\.\d+)(?![\d.%:]|\s?%)"), lambda m: zh_number(m.group(1))),
    (re.compile(r"(?<=\d)\s?[–—]\s?(?=\d)"), "-"),  # dashes in ranges: 3—5天 -> 3-5天
    (re.compile(r"(?<=[A-Za-z])-(?=\d)|(?<=\d)-(?=[A-Za-z])"), " "),  # GPT-4, COVID-19: no minus
    (re.compile(r"\b([A-Z]{2,})-(?=[A-Z0-9])", re.ASCII), r"\1 "),  # RISC-V
    *_UNITS,
    (re.compile(r"(?<=\d)\s?[xX](?![A-Za-z0-9])"), "倍"),  # 3x更快
    (re.compile(r"(?<=[\d元])/(?=[月年天日周晚人次个])"), "每"),  # ¥99/月 -> 九十九元每月
    (re.compile(r"(?<![\w.])(\d+)(?:st|nd|rd|th)(?![A-Za-z])", re.ASCII), lambda m: "第" + m.group(1)),
    (re.compile(r"第(\d+)(?![\d.])"), lambda m: "第" + zh_cardinal_digits(m.group(1))),
    (re.compile(r"\b[Nn]o\.\s?(\d+)(?![\d.])", re.ASCII), lambda m: zh_cardinal_digits(m.group(1)) + "号"),  # 一号
    (re.compile(r"(?<![\d.])2(?=点)"), "两"),  # 2点 (two o'clock, two points) is 两点
    # Model numbers after capitals are said digit by digit: "RTX 4090" -> RTX 四零九零.
    (re.compile(r"(?<=[A-Z])(\s?)(\d{4})(?![\d.])"), lambda m: m.group(1) + zh_digits(m.group(2))),
    # Years before these words are said digit by digit, as before 年 (which the grammar handles).
    (re.compile(r"(?<!\d)((?:19|20)\d{2})(?=赛季|财年|学年|届|款|版)"), lambda m: zh_digits(m.group(1))),
]


def rewrite(text: str) -> str:
    """Everything before abbreviation spell-out: web, phones, money, versions, decimals, units."""
    text = text.translate(_FULL_WIDTH)
    text = _FULL_WIDTH_BETWEEN_DIGITS.sub(lambda m: _FW_SEPARATORS[m.group(0)], text)
    text = read_web_addresses(text, "Chinese")
    if not any(ch.isdigit() for ch in text):
        return re.sub(r"\b([A-Z]{2,})-(?=[A-Z])", r"\1 ", text, flags=re.ASCII)
    text = read_phone_numbers(text, "Chinese")
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text
