"""URLs and e-mail addresses, read symbol by symbol ("example.com" -> "example dot com").

The English grammar reads them too, but says "HTTPS colon slash slash WWW"; the Chinese grammar leaves
them untouched. Reading them ourselves keeps both languages alike and keeps their digits away from the
number rules that run later.
"""

from __future__ import annotations

import re

from . import numwords
from .numbers import en_cardinal, en_digits, zh_cardinal, zh_digits

_TLDS = (
    "com|org|net|edu|gov|io|ai|dev|app|co|cn|uk|de|fr|jp|kr|ru|es|it|pt|br|in|us|ca|au|info|biz|me|tv|"
    "xyz|tech|cloud|site|online|top|ly|gg|so"
)
# ASCII mode: Chinese characters next to an address ("访问example.com") are not part of it.
_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][\w.+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+", re.ASCII)
_URL = re.compile(
    r"(?:\bhttps?://|(?<![\w.@-])www\.)[^\s<>\"'，。！？、；（）【】「」]+"
    rf"|(?<![\w.@/-])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:{_TLDS})(?![\w-])(?:/[^\s<>\"'，。！？、；（）【】「」]*)?",
    re.IGNORECASE | re.ASCII,
)
_TRAILING = ".,;:!?)]}'\""
_PARTS = re.compile(r"[A-Za-z]+|\d+|\S")

_SYMBOLS = {
    "English": {
        ".": "dot",
        "/": "slash",
        "@": "at",
        "-": "dash",
        "_": "underscore",
        ":": "colon",
        "?": "question mark",
        "=": "equals",
        "&": "and",
        "#": "hash",
        "%": "percent",
        "+": "plus",
        "~": "tilde",
    },
    "Chinese": {
        ".": "点",
        "/": "斜杠",
        "@": "艾特",
        "-": "杠",
        "_": "下划线",
        ":": "冒号",
        "?": "问号",
        "=": "等于",
        "&": "和",
        "#": "井号",
        "%": "百分号",
        "+": "加",
        "~": "波浪号",
    },
}
# The other languages, in the same order: . / @ - _ : ? = & # % + ~
_OTHER_SYMBOLS = {
    "German": "Punkt|Schrägstrich|at|Bindestrich|Unterstrich|Doppelpunkt|Fragezeichen|gleich|und|Raute|Prozent|"
    "plus|Tilde",
    "French": "point|barre oblique|arobase|tiret|tiret bas|deux-points|point d'interrogation|égal|et|dièse|pour cent|"
    "plus|tilde",
    "Spanish": "punto|barra|arroba|guion|guion bajo|dos puntos|interrogación|igual|y|almohadilla|por ciento|más|"
    "virgulilla",
    "Italian": "punto|barra|chiocciola|trattino|trattino basso|due punti|punto interrogativo|uguale|e|cancelletto|"
    "percento|più|tilde",
    "Portuguese": "ponto|barra|arroba|hífen|sublinhado|dois pontos|ponto de interrogação|igual|e|cardinal|por cento|"
    "mais|til",
    "Russian": "точка|слэш|собака|дефис|подчёркивание|двоеточие|вопросительный знак|равно|и|решётка|процент|плюс|"
    "тильда",
}
_SYMBOLS.update(
    {lang: dict(zip("./@-_:?=&#%+~", words.split("|"), strict=True)) for lang, words in _OTHER_SYMBOLS.items()}
)
# Short labels said letter by letter; a longer label without a vowel too ("www", "bbc", "cn").
_SPELLED = frozenset("io ai uk us de eu edu gg".split())


def _read_label(label: str) -> str:
    if label.lower() in _SPELLED or (len(label) > 1 and not re.search(r"[aeiouyAEIOUY]", label)):
        return " ".join(label.upper())
    return label


def _read(address: str, language: str) -> str:
    address = re.sub(r"^https?://", "", address, flags=re.IGNORECASE).rstrip("/")
    symbols = _SYMBOLS[language]
    english = language == "English"
    words = []
    for part in _PARTS.findall(address):
        if part.isdigit():
            short = len(part) <= 2 and not part.startswith("0")
            if english:
                words.append(en_cardinal(int(part)) if short else en_digits(part))
            elif language == "Chinese":
                words.append(zh_cardinal(int(part)) if short else zh_digits(part))
            else:
                words.append(numwords.cardinal(int(part), language) if short else numwords.digits(part, language))
        elif part.isalpha():
            words.append(_read_label(part))
        else:
            words.append(symbols.get(part, part))
    return _join_zh(words) if language == "Chinese" else " ".join(words)


def _join_zh(words: list[str]) -> str:
    # One join at the end: growing a string word by word copies it each time unless CPython happens to
    # extend it in place.
    out: list[str] = []
    last = ""
    for word in words:
        # Chinese needs no spaces, but two Latin words side by side do.
        if out and last[-1:].isascii() and word[:1].isascii():
            out.append(" ")
        out.append(word)
        last = word if word else last
    return "".join(out)


def _sub(pattern: re.Pattern[str], text: str, language: str) -> str:
    def replace(m: re.Match[str]) -> str:
        found = m.group(0)
        core = found.rstrip(_TRAILING)
        return _read(core, language) + found[len(core) :]

    return pattern.sub(replace, text)


def read_web_addresses(text: str, language: str) -> str:
    """Rewrite e-mail addresses and URLs for ``language`` (English, Chinese or one in _OTHER_SYMBOLS)."""
    if "." not in text:
        return text
    if "@" in text:
        text = _sub(_EMAIL, text, language)
    return _sub(_URL, text, language)
