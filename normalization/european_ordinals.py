"""Written ordinals of the European languages: "3." (German), "1er", "2e", "1.º", "2ª", "1°", "5-го"."""

from __future__ import annotations

import re

from . import locales, numwords
from .european_dates import word_before

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
        return words + "n" if word_before(m.string, m.start()).lower() in locales.GERMAN_DATIVE_WORDS else words
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


def read_ordinals(text: str, language: str) -> str:
    """Every written ordinal of ``text`` in words of ``language``."""
    return _ORDINAL[language].sub(lambda m: _ordinal(m, language), text)
