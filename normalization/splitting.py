"""Sentence splitting and the per-segment length cap.

Splitting runs on the input text, before any rewriting, so that ``enable_tn=False`` yields the same
segments and no cut can land inside a number or a URL. Every segment is a slice of the input, stripped
of surrounding whitespace. Short sentences are not merged: the server speaks segment by segment, and
merging would hold back the first audio until the next sentence arrives.
"""

from __future__ import annotations

import re

# Caps in characters of input text: CJK scripts carry about twice the speech per character.
DEFAULT_MAX_CHARS = 120
CJK_MAX_CHARS = 60
_CJK_LANGUAGES = frozenset({"Chinese", "Japanese", "Korean"})
# A run without any break point is extended to its end if it is at most this long (a long URL is one
# word); longer runs (20k digits) are not words and are cut at the cap.
MAX_WORD_CHARS = 200


def max_chars_for(language: str) -> int:
    return CJK_MAX_CHARS if language in _CJK_LANGUAGES else DEFAULT_MAX_CHARS


_CLOSERS = "\"'”’」』）)】》〉]}"
_CLOSE = "[" + re.escape(_CLOSERS) + "]*"
_CJK_CHAR = "\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af"
# Ends a sentence wherever it stands (a run counts once, with the closing quotes/brackets after it).
# ASCII ! and ? only before a space, the end or CJK text: "example.com/a?b=1" stays whole. That branch
# may only start at the beginning of a run: otherwise a run followed by a letter ("!!!!x") is retried
# from each of its positions, each try walking to the end of the run (quadratic; 28 s for 20k "!").
# A match inside a run succeeds exactly when one at its start does, so the lookbehind changes no split.
_HARD_END = re.compile(r"[。！？；．｡‼⁇⁈⁉]+" + _CLOSE + r"|(?<![!?])[!?]+" + _CLOSE + rf"(?=\s|$|[{_CJK_CHAR}])|\n+")
# An ASCII period followed by space, the end of text or CJK text; the word before it decides.
_PERIOD = re.compile(r"\." + _CLOSE + rf"(?=\s|$|[{_CJK_CHAR}])")

# Never ends a sentence: titles and "e.g."-like abbreviations (compared without the final dot).
_NEVER_END = frozenset(
    "mr mrs ms dr prof st mt jr sr vs e.g i.e cf approx fig no nos vol pp gen col lt sgt capt rev hon gov "
    "sen rep dept est ca ext tel".split()
    # German and Russian number abbreviations: "2 Mio. Euro", "2 тыс. человек", "в 1999 г. было".
    + "mio mrd tsd тыс г руб".split()
)
# Dotted month and weekday abbreviations never end a sentence either; compared case-sensitively so
# that "I sat." still ends one.
_NEVER_END_CASED = frozenset(
    "Jan Feb Mar Apr Jun Jul Aug Sep Sept Oct Nov Dec Mon Tue Tues Wed Thu Thur Thurs Fri Sat Sun".split()
)
# Ends a sentence only when the next word starts with a capital letter ("... at 3 p.m. Then ...").
_END_IF_CAPITAL = frozenset("etc inc ltd co corp al a.m p.m".split())
_DOTTED_CAPS = re.compile(r"(?:[A-Z]\.)+[A-Z]")  # "U.S", "U.S.A": an acronym, never an end
_LIST_CONTEXT = frozenset("\n.!?:;。！？：；")
_NEXT_CHAR = re.compile(r"\s*(\S)")


def _next_is_upper(text: str, after: int) -> bool:
    m = _NEXT_CHAR.match(text, after)
    return bool(m and m.group(1).isupper())


# Every rule below is about a short word (an abbreviation, an initial, a list number, "U.S.A", "...").
# A longer one is an ordinary word; not walking further back keeps text without spaces ("中.中.中.")
# linear instead of walking back to its start for every period.
MAX_RULE_WORD_CHARS = 64


def _word_start(text: str, end: int) -> int:
    """Start of the word ending at ``end``, or -1 if it is longer than MAX_RULE_WORD_CHARS."""
    limit = max(0, end - MAX_RULE_WORD_CHARS)
    start = end
    while start > limit and not text[start - 1].isspace():
        start -= 1
    if start > 0 and not text[start - 1].isspace():
        return -1
    return start


# German writes ordinals with a period: "am 3. März", "der 3. Platz". Such a period is no end when a
# month name follows it or an article or preposition stands before the number.
_GERMAN_MONTHS = frozenset(
    "Januar Jänner Februar März April Mai Juni Juli August September Oktober November Dezember".split()
)
_GERMAN_BEFORE_ORDINAL = frozenset("am im vom zum zur beim der die das dem den des ab bis seit".split())
_WORD_AFTER = re.compile(r"\s*(\w+)")
_WORD_BEFORE = re.compile(r"(\w+)\s*$")


def _german_ordinal(text: str, start: int, after: int) -> bool:
    following = _WORD_AFTER.match(text, after)
    if following and following.group(1) in _GERMAN_MONTHS:
        return True
    preceding = _WORD_BEFORE.search(text, max(0, start - 8), start)
    return bool(preceding and preceding.group(1).lower() in _GERMAN_BEFORE_ORDINAL and following)


def _period_ends_sentence(text: str, dot: int, after: int) -> bool:
    start = _word_start(text, dot)
    if start < 0:
        # An ordinary long word, unless it ends an ellipsis ("word..."): that rule needs no word.
        return text[dot - 1] != "." or _next_is_upper(text, after)
    word = text[start:dot].lstrip("(\"'“‘[")
    key = word.lower()
    next_upper = _next_is_upper(text, after)
    if key in _NEVER_END or word in _NEVER_END_CASED or _DOTTED_CAPS.fullmatch(word):
        return False
    if key in _END_IF_CAPITAL or word.endswith("."):  # "etc.", "a.m.", an ellipsis "..."
        return next_upper
    if len(word) == 1 and word.isupper():
        return not next_upper  # an initial: "John F. Kennedy"
    if word.isdigit() and len(word) <= 2 and _german_ordinal(text, start, after):
        return False
    if word.isdigit():
        # "1. First step" after a line start or another sentence is a list marker, not an end. (Each
        # run of blanks is walked only for the word right after it: linear over the text.)
        before = start - 1
        while before >= 0 and text[before] in " \t":
            before -= 1
        return before >= 0 and text[before] not in _LIST_CONTEXT
    return True


def _sentence_ends(text: str) -> list[int]:
    ends = {m.end() for m in _HARD_END.finditer(text)}
    ends.update(m.end() for m in _PERIOD.finditer(text) if _period_ends_sentence(text, m.start(), m.end()))
    ends.add(len(text))
    return sorted(ends)


def _has_content(piece: str) -> bool:
    return any(ch.isalnum() for ch in piece)


def split_sentences(text: str) -> list[str]:
    """Sentences in order, each a stripped slice of ``text``.

    A piece with no letters or digits ("!!!", "——") joins its neighbour, so no character is lost.
    """
    spans: list[list[int]] = []
    # Whether the last span has content, kept rather than rescanned: a span that keeps absorbing
    # pieces would otherwise be read again for each of them.
    last_has_content = False
    start = 0
    for end in _sentence_ends(text):
        piece = text[start:end]
        if piece.strip():
            has_content = _has_content(piece)
            if spans and not (has_content and last_has_content):
                spans[-1][1] = end
                last_has_content = last_has_content or has_content
            else:
                spans.append([start, end])
                last_has_content = has_content
        start = end
    return [text[a:b].strip() for a, b in spans]


# Break points for the cap, best first. A comma between digits ("1,200", "3:30") is no break.
_COMMA_BREAK = re.compile(r"(?:[，、；：]|[,;:](?!\d)|\s[—–](?=\s))" + _CLOSE)
_SPACE_BREAK = re.compile(r"\s")
_RUN_END = re.compile(r"[\s，、,;；]")
_WORDLIKE = re.compile(r"[A-Za-z0-9\u00C0-\u024F\u0400-\u04FF'’._@/:%+#&=?-]")


def _last_break(pattern: re.Pattern[str], text: str, start: int, cap: int, floor: int, *, before: bool) -> int:
    """Head length for the last break within the cap: before the match (spaces) or after (commas)."""
    best = -1
    for m in pattern.finditer(text, start, start + cap + 1):
        pos = (m.start() if before else m.end()) - start
        if floor <= pos <= cap:
            best = pos
    return best


def _between_words(text: str, start: int, end: int, cap: int) -> int:
    """Last head length <= cap that splits no Latin word or number (CJK text has no spaces)."""
    for pos in range(start + min(cap, end - start - 1), start, -1):
        if not (_WORDLIKE.match(text[pos - 1]) and _WORDLIKE.match(text[pos])):
            return pos - start
    return -1


def _cut(text: str, start: int, end: int, cap: int) -> int:
    """Length of the next head of ``text[start:end]`` (longer than ``cap``); every search stays near start."""
    # A comma in the first quarter would leave a stub; a later space is the better cut.
    pos = _last_break(_COMMA_BREAK, text, start, cap, max(1, cap // 4), before=False)
    if pos < 0:
        pos = _last_break(_SPACE_BREAK, text, start, cap, 1, before=True)
    if pos < 0:
        pos = _between_words(text, start, end, cap)
    if pos < 0:
        # One run longer than the cap: keep it whole if it is word-sized, else it is not a word.
        m = _RUN_END.search(text, start + cap, min(end, start + MAX_WORD_CHARS + 1))
        pos = m.end() - start if m else cap
    return pos


_SPACES = re.compile(r"\s*")


def _skip_spaces(text: str, pos: int) -> int:
    """The offset of the first non-space at or after pos."""
    match = _SPACES.match(text, pos)
    assert match is not None  # \s* matches everywhere, if only the empty string
    return match.end()


def cap_length(sentence: str, cap: int) -> list[str]:
    """Cut a sentence into pieces of at most ``cap`` characters where possible, never inside a word."""
    if cap < 1:
        raise ValueError(f"cap must be at least 1, not {cap!r}")  # a zero cap would never advance
    pieces = []
    # Offsets into the sentence rather than a shrinking copy of the rest, which made each cut cost the
    # length of the whole remaining text.
    start = _skip_spaces(sentence, 0)
    end = len(sentence.rstrip())
    while end - start > cap:
        pos = start + _cut(sentence, start, end, cap)
        head = sentence[start:pos].strip()
        if head:
            pieces.append(head)
        start = _skip_spaces(sentence, pos)
    if start < end:
        pieces.append(sentence[start:end])
    return pieces
