"""All-caps spell-out, Roman numerals and dotted abbreviations (run before the grammar).

WeTextProcessing never spells acronyms, and Qwen3-TTS then tries to pronounce "LLM" as a word. So an
all-caps token of two or more letters is spelled letter by letter ("LLM" -> "L L M", "GPUs" ->
"G P U's") unless it is read as a word:

* it is in the word list (``SPOKEN_AS_WORDS`` plus any words the caller passes), e.g. NASA, NATO, OK,
  and the common English words an LLM writes in capitals for emphasis (NOT, VERY, ...);
* it has six or more letters with at least two vowels (IMPORTANT, WARNING, UNESCO, NVIDIA): long
  spelled-out acronyms are rare, shouted words are not;
* it sits in an English sentence written in capitals (no lowercase letter, three or more words, two
  of them in capitals), and it has a vowel: "I DON'T KNOW" is shouting, "LLM" in it is still spelled.

Mixed-case names (iPhone, OpenAI, macOS, IPv6) are left alone; so are single letters ("I", "A").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .numbers import en_cardinal, en_ordinal

# All-caps words read as words, not letters. Extend per call with normalize(..., spoken_words=...).
SPOKEN_AS_WORDS: frozenset[str] = frozenset(
    """
    NASA NATO UNESCO UNICEF OPEC FIFA UEFA ASEAN NASDAQ DARPA CERN ICANN IKEA LEGO FEMA OSHA HIPAA
    POTUS SCOTUS NAFTA COVID AIDS SARS MERS NIMBY YOLO FOMO SWAT AWOL ASCII CAPTCHA LASER RADAR SONAR
    LIDAR SCUBA JSON YAML GIF JPEG CUDA POSIX UNIX LINUX NAND RAM ROM SIM PIN LAN WAN RAID SATA OLED ISO
    ACID CRUD REST SOAP AJAX SWIFT GAAP TOEFL IELTS GMAT WASM DOS
    OK OKAY
    A AM AN AND ANY ARE AS AT BAD BE BEST BIG BUT BY CAN DID DO DOES DON'T DONE EACH EVEN EVER EVERY
    FOR FREE FROM GET GO GOOD GREAT HAS HAVE HE HELP HER HERE HIM HIS HOT HOW IF IN INTO IS ITS JUST
    KEY LAST LIKE LOVE MAKE MANY MAY ME MORE MOST MUCH MUST MY NEED NEVER NEW NEXT NO NONE NOR NOT NOTE
    NOW OF OFF OH ON ONCE ONE ONLY OR OUR OUT OVER READ REAL SAFE SAID SALE SAME SEE SHE SHOULD SO SOME
    STEP STILL STOP SURE TAKE TOP THAN THAT THE THEM THEN THEY THIS TIP TO TOO TRUE TRY TWO UP USE VERY WAIT
    WANT WAS WAY WE WELL WERE WHAT WHEN WHY WILL WITH WON'T WORK WOW YES YET YOU YOUR ZERO
    """.split()
)
# Deliberately absent: US, IT, WHO, AM/PM-like and other tokens that are mostly acronyms when capitalised.

_CAPS = re.compile(
    r"(?<![A-Za-z'’])([A-Z]{2,})(?![A-Z])"  # a maximal run of capitals, not inside a mixed-case word
    r"(?:(['’]?s)(?![A-Za-z])|(?![a-z]|['’][A-Za-z]))"  # optional plural "s"/"'s"; not "DON'T"
)
_VOWELS = frozenset("AEIOU")
# Capitalised units after a number are the grammar's to read ("24 GB", "10GB", "3 PM").
_UNITS_AFTER_NUMBER = frozenset("KB MB GB TB PB KW MW GW AM PM".split())
_AFTER_NUMBER = re.compile(r"\d\s?$")


def _is_shouting(text: str) -> bool:
    """An English sentence in capitals: no lowercase letter, three or more words, two in capitals."""
    return (
        not re.search(r"[a-z]", text)
        and len(re.findall(r"[A-Z]+", text)) >= 3
        and len(re.findall(r"[A-Z]{2,}", text)) >= 2
    )


def spell_out(text: str, words: Iterable[str] = (), *, english: bool = True) -> str:
    """'LLM' -> 'L L M', 'GPT4' -> 'G P T 4', 'GPUs' -> "G P U's"; see the module docstring."""
    spoken = SPOKEN_AS_WORDS | {w.upper() for w in words}
    shouting = english and _is_shouting(text)

    def replace(m: re.Match[str]) -> str:
        token, plural = m.group(1), m.group(2) or ""
        if token in _UNITS_AFTER_NUMBER and _AFTER_NUMBER.search(text, max(0, m.start() - 2), m.start()):
            return m.group(0)
        vowels = sum(ch in _VOWELS for ch in token)
        if token in spoken or (len(token) >= 6 and vowels >= 2) or (shouting and vowels):
            return m.group(0)
        spelled = " ".join(token) + ("'s" if plural else "")
        after = text[m.end() : m.end() + 1]
        return spelled + " " if after.isdigit() else spelled

    return _CAPS.sub(replace, text)


# Roman numerals (English only). I..XXXIX after a capitalised word become numbers: "World War II" ->
# "World War two", "Chapter IV" -> "Chapter four"; after a monarch's name, "Henry VIII" -> "Henry the
# eighth". A single letter (I, V, X) only converts after "War" or a monarch's name. Anywhere else the
# token is treated like any other all-caps token ("an IV drip" -> "an I V drip"). L, C, D and M numerals
# are not read: they collide with too many acronyms (CD, MD, DC, LCD, XL).
_REGNAL = frozenset(
    """King Queen Pope Emperor Tsar Czar Henry Edward George William Charles Elizabeth Louis Richard
    James John Pius Leo Benedict Gregory Clement Innocent Alexander Nicholas Peter Frederick Philip
    Ramesses Ramses Napoleon Catherine Mary Victor Ferdinand Alfonso Olav Harald Gustaf Constantine Ivan
    Wilhelm Friedrich Otto Francis Paul""".split()
)
_ROMAN = re.compile(r"\b([A-Z][a-z]+) ((?=[IVX])X{0,3}(?:IX|IV|V?I{0,3}))(?![A-Za-z0-9'’])")
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10}


def _roman_value(numeral: str) -> int:
    total = 0
    for ch, nxt in zip(numeral, numeral[1:] + " ", strict=True):
        value = _ROMAN_VALUES[ch]
        total += -value if nxt in _ROMAN_VALUES and _ROMAN_VALUES[nxt] > value else value
    return total


def read_roman_numerals(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        name, numeral = m.group(1), m.group(2)
        if name in _REGNAL:
            return f"{name} the {en_ordinal(_roman_value(numeral))}"
        if len(numeral) == 1 and name != "War":
            return m.group(0)
        return f"{name} {en_cardinal(_roman_value(numeral))}"

    return _ROMAN.sub(replace, text)


# Dotted English abbreviations, expanded so the reading does not depend on whether the sentence also
# has a number (the grammar expands some of them, but it only sees the number spans). Weekdays and
# months only with their dot: "Sun" and "Sat" are words, "Sun." after a date is not.
_DOTTED = [
    (re.compile(r"\bMr\.(?=\s)"), "Mister"),
    (re.compile(r"\bMrs\.(?=\s)"), "Missus"),
    (re.compile(r"\bMs\.(?=\s)"), "Miz"),
    (re.compile(r"\bDr\.(?=\s+[A-Z])"), "Doctor"),  # "Dr." before a name; "Main Dr." is Drive
    (re.compile(r"\bProf\.(?=\s)"), "Professor"),
    (re.compile(r"\bJr\."), "Junior"),
    (re.compile(r"\bSr\."), "Senior"),
    (re.compile(r"(?<![\w.])e\.g\.(?=[\s,])"), "for example"),
    (re.compile(r"(?<![\w.])i\.e\.(?=[\s,])"), "that is"),
    (re.compile(r"\betc\."), "et cetera."),
    (re.compile(r"\bvs\.?(?=\s)"), "versus"),
    (re.compile(r"\bapprox\.(?=\s)"), "approximately"),
    *[
        (re.compile(rf"\b{short}\.(?=[\s,])"), full)
        for short, full in (
            ("Mon", "Monday"),
            ("Tue", "Tuesday"),
            ("Tues", "Tuesday"),
            ("Wed", "Wednesday"),
            ("Thu", "Thursday"),
            ("Thur", "Thursday"),
            ("Thurs", "Thursday"),
            ("Fri", "Friday"),
            ("Sat", "Saturday"),
            ("Sun", "Sunday"),
            ("Jan", "January"),
            ("Feb", "February"),
            ("Mar", "March"),
            ("Apr", "April"),
            ("Jun", "June"),
            ("Jul", "July"),
            ("Aug", "August"),
            ("Sep", "September"),
            ("Sept", "September"),
            ("Oct", "October"),
            ("Nov", "November"),
            ("Dec", "December"),
        )
    ],
]


def expand_dotted(text: str) -> str:
    if "." not in text and "vs" not in text:
        return text
    for pattern, words in _DOTTED:
        text = pattern.sub(words, text)
    return re.sub(r"et cetera\.(?=\s*[a-z,;:)]|\.)", "et cetera", text)
