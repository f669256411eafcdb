"""Speakable units from text that arrives in pieces (an LLM's tokens), each released once it is complete.

    buffer = SentenceBuffer("English")
    buffer.feed("Hello there. How ")  # ["Hello there."]
    buffer.feed("are you?")           # []: "you?" may still be followed by "”" or more text
    buffer.flush()                    # ["How are you?"]

Sentence ends are split_sentences' own, so a streamed text gives the sentences the whole text gives.
On each feed the unreleased text (with a little of the text before it) is split again and every
piece but the last is released; the last piece waits for a word after it, a clause cut, the length
cap or flush(). Why that is safe, from the rules in splitting.py:

* An end is decided by the text before it and, after it, by the first non-space character (the case
  of the next word, a closing quote, more marks) or, after a period, the first word ("am 3. März" is
  no end). So an end followed by a whole word never moves or disappears as text is appended, and a
  new end can only appear after the last letter or digit, or just before a last word after a period.
* The last piece always runs to the last non-space character (blank pieces are dropped, pieces
  without letters or digits join the one before). So the pieces before it are bounded by ends with
  text after them, and final once the word after a period is whole. The last one never is before
  flush(): a period can still become "Mr.", "3.14", "e.g.", "U.S." or "example.com/a.b", a mark can
  still get a closing quote, and a run without letters ("!!!") after it would still join it.
* The rules look back at most MAX_RULE_WORD_CHARS + 1 characters before a word, plus the blanks
  before it and the one character before those; the kept tail of released text covers that, so the
  split of tail + pending has the same ends after the tail as the split of the whole text.

Latency cuts inside the last piece (never in complete sentences, which the pipeline caps itself),
each only once a letter or digit follows it, as text after the last one may yet start a sentence:

* a clause mark (", ; : —" followed by a space; "，、；：" not followed by a closing quote and not
  between two digits) once the text before it has ``min_clause_chars`` characters;
* the length cap: the first piece ``cap_length`` would cut from the sentence, once the text seen
  proves that cut (a run without breaks may still end within MAX_WORD_CHARS and be kept whole).

Memory and work per feed grow with the pending text, which holds at most one unfinished sentence
piece (bounded by the cap) plus whatever the rules cannot decide yet, such as blanks or a run of
marks; nothing here bounds that. The server bounds the whole text per context (max_text_chars).
"""

from __future__ import annotations

import re

from .language import canonical_language
from .splitting import (
    _CJK_CHAR,
    _CLOSERS,
    MAX_RULE_WORD_CHARS,
    MAX_WORD_CHARS,
    cap_length,
    max_chars_for,
    split_sentences,
)

__all__ = ["CJK_MIN_CLAUSE_CHARS", "DEFAULT_MIN_CLAUSE_CHARS", "SentenceBuffer"]

# About ten English words; a CJK character carries about a syllable, so fewer of them.
DEFAULT_MIN_CLAUSE_CHARS = 60
CJK_MIN_CLAUSE_CHARS = 15
_CJK_LANGUAGES = frozenset({"Chinese", "Japanese", "Korean"})

# Released text kept in front of the pending text: more than the rules' look-back (see above).
_TAIL_CHARS = 2 * MAX_RULE_WORD_CHARS

_CLOSE = "[" + re.escape(_CLOSERS) + "]*"
# ASCII marks only before a space: "1,000", "3,5", "3:30" and "https://a.b/c,d" are never cut. The
# CJK branch must see a character after its closers, and one that is not another closer: otherwise a
# "，" at the end of the text could be cut before the "」" that arrives next.
_CLAUSE = re.compile(rf"(?:[,;:]|\s[—–]){_CLOSE}(?=\s)|[，、；：]{_CLOSE}(?=[^{re.escape(_CLOSERS)}])")
_CJK_CLAUSE_MARKS = frozenset("，、；：")
_BLANKS = " \t"
_CJK_SEARCH = re.compile(f"[{_CJK_CHAR}]")
_WORD = re.compile(r"\w+")
_PERIOD_END = re.compile(rf"\.{_CLOSE}$")


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _spans(text: str) -> list[tuple[int, int]]:
    """split_sentences(text) as offsets: each piece is a stripped slice, with only spaces between."""
    spans = []
    pos = 0
    for piece in split_sentences(text):
        start = _skip_spaces(text, pos)
        assert text.startswith(piece, start)  # pieces are slices in order, stripped of spaces only
        pos = start + len(piece)
        spans.append((start, pos))
    return spans


def _keep_tail(text: str) -> str:
    """The end of the released text that the split of the pending text still needs to see."""
    if len(text) <= _TAIL_CHARS:
        return text
    cut = len(text) - _TAIL_CHARS
    if text[cut] in _BLANKS:
        # A list number's rule walks back over any number of blanks to the character before them:
        # keep that character but not a long run, which would be split again on every feed.
        return text[:cut].rstrip(_BLANKS)[-1:] + text[cut:]
    return text[cut:]


class SentenceBuffer:
    """Collects streamed text and hands out the units that are complete, in order.

    Every unit is a slice of the text as fed, stripped; only the whitespace between units is dropped.
    language: one of LANGUAGES; it picks the cap and the clause threshold ("Auto": by the script of
    the pending piece). min_clause_chars: characters before a clause mark for a clause cut (default
    60, CJK 15). max_chars: the length cap, as passed to normalize() (default max_chars_for). clauses:
    False releases only whole sentences and cap pieces. Not thread-safe: one buffer per text stream.
    """

    def __init__(
        self,
        language: str = "Auto",
        *,
        min_clause_chars: int | None = None,
        max_chars: int | None = None,
        clauses: bool = True,
    ) -> None:
        for name, value in (("min_clause_chars", min_clause_chars), ("max_chars", max_chars)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
        self._language = canonical_language(language)
        self._min_clause_chars = min_clause_chars
        self._max_chars = max_chars
        self._clauses = clauses
        self._tail = ""  # the end of the released text (see _keep_tail)
        self._pending = ""  # everything after the last released character

    @property
    def pending(self) -> str:
        """The text not released yet, as fed (it may start or end with whitespace)."""
        return self._pending

    def feed(self, delta: str) -> list[str]:
        """Append ``delta``; return the units it completed, in order (often none)."""
        if not isinstance(delta, str):
            raise TypeError(f"delta must be str, not {type(delta).__name__}")
        after_word = _WORD.match(self._pending[-1:]) is not None
        self._pending += delta
        # Only a letter or digit, or the end of the word after a period, can complete a unit: a piece
        # without letters or digits joins the one before, and every cut waits for a letter after it.
        # Skipping the split otherwise keeps a stream of marks or blanks from costing one per character.
        if not after_word and not any(ch.isalnum() for ch in delta):
            return []
        return self._release(final=False)

    def flush(self) -> list[str]:
        """Every unit left, complete or not; [] if only whitespace is pending.

        Later feeds continue the same text: the rules still see what came before.
        """
        return self._release(final=True)

    def _release(self, *, final: bool) -> list[str]:
        window = self._tail + self._pending
        start = len(self._tail)
        first = _skip_spaces(window, start)
        spans = [(max(a, first), b) for a, b in _spans(window) if b > start]
        if not spans:
            return []
        cuts: list[tuple[int, int]] = []
        if not final:
            last = spans.pop()
            word = _WORD.match(window, last[0])
            if spans and word and word.end() == len(window) and _PERIOD_END.search(window, 0, spans[-1][1]):
                # Whether a period ends a sentence may depend on the whole word after it ("Seite 3. Mai"
                # ends none, "Seite 3. Mais" does): hold both pieces, and the cuts, until that word is
                # whole. Other marks depend on no more than the next character.
                spans.pop()
            else:
                cuts = self._cuts(window, last[0])
        units = [window[a:b] for a, b in spans + cuts]
        end = max([start] + [b for _, b in spans + cuts])
        if end > start:
            self._tail = _keep_tail(window[:end])
            self._pending = window[end:]
        return units

    def _limits(self, piece: str) -> tuple[int, int]:
        """The cap and the clause threshold for a pending piece."""
        if self._language == "Auto":
            # Any kana, Hangul or Han character makes the pipeline pick a CJK language; the script is
            # all that matters here, and the statistical Latin pick is too slow to run on every feed.
            cjk = _CJK_SEARCH.search(piece) is not None
            cap = self._max_chars or max_chars_for("Chinese" if cjk else "Auto")
        else:
            cjk = self._language in _CJK_LANGUAGES
            cap = self._max_chars or max_chars_for(self._language)
        if self._min_clause_chars is not None:
            return cap, self._min_clause_chars
        return cap, CJK_MIN_CLAUSE_CHARS if cjk else DEFAULT_MIN_CLAUSE_CHARS

    def _cuts(self, window: str, start: int) -> list[tuple[int, int]]:
        """Heads of the last, incomplete piece ``window[start:]`` that can be spoken already."""
        # Text after the last letter or digit may still become the start of the next sentence: in
        # "Yes? (" the " (" joins "Yes?" only until a word follows it. So cuts, and the length that
        # decides the cap, stop at that letter.
        limit = len(window)
        while limit > start and not window[limit - 1].isalnum():
            limit -= 1
        cuts = []
        unit = start
        while start < limit:
            cap, min_clause = self._limits(window[unit:limit])
            cut = self._clause_cut(window, start, limit, min_clause) if self._clauses else -1
            if not 0 < cut - start <= cap:
                head = self._cap_head(window[start:limit], cap)
                if head < 0:
                    break
                cut = start + head
            long_run = cut - start > cap
            start = _skip_spaces(window, cut)
            # A head over the cap is a run (a URL) that cap_length keeps whole only because a break
            # follows it: alone, it would be cut at the cap when the pipeline caps the unit again. So it
            # goes out together with the head after it.
            if not long_run:
                cuts.append((unit, cut))
                unit = start
        return cuts

    @staticmethod
    def _clause_cut(window: str, start: int, limit: int, min_chars: int) -> int:
        for m in _CLAUSE.finditer(window, start, limit):
            if m.start() - start < min_chars:
                continue
            if m.group()[0] in _CJK_CLAUSE_MARKS and window[m.start() - 1].isdigit() and window[m.end()].isdigit():
                continue  # "1，000"
            return m.end()
        return -1

    @staticmethod
    def _cap_head(rest: str, cap: int) -> int:
        """Length of the first piece cap_length cuts from any sentence that starts with ``rest``, or -1."""
        if len(rest) <= cap:
            return -1
        # cap_length's first cut looks at the first cap + 1 characters, except for a run with no break
        # in them: that is kept whole if it ends within MAX_WORD_CHARS. The cut is proven when the
        # run ending now and the run going on past that limit give the same head.
        head = cap_length(rest + " x", cap)[0]
        if head != cap_length(rest + "a" * (MAX_WORD_CHARS + 1), cap)[0]:
            return -1
        assert rest.startswith(head)  # rest starts with non-space text: the head is its prefix
        return len(head)
