"""Markdown an LLM leaves in its text, which a TTS model would otherwise try to read.

Only unambiguous marks are removed: "**bold**"/"__bold__" markers, inline-code backticks, and a list,
heading or quote marker at the start of a segment. A lone "*" (2 * 3) or "#" (#1) stays.
"""

from __future__ import annotations

import re

# "**bold**": an opener before a non-space, the shortest text on the same line up to the same marker
# after a non-space. As one regex, (\*\*|__)(?=\S)(.+?)(?<=\S)\1, every opener without a closer scans
# to the end of its line, which is quadratic in "**a **a **a ..."; _strip_emphasis finds the same
# matches with searches that only move forward.
_OPENER = re.compile(r"(\*\*|__)(?=\S)")
_CODE = re.compile(r"`([^`\n]+)`")
_LEADING_MARK = re.compile(r"^(?:#{1,6}\s+|>\s+|[-*•·]\s+)")


class _Forward:
    """First closing marker or newline at or after a position, asked for at positions that never go back.

    A result found from an earlier position stays right for a later one unless it lies behind it, so
    each part of the text is searched once.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.found: dict[str, int] = {}  # "**", "__" or "\n" -> the last result (-1: none left)

    def _reuse(self, key: str, pos: int) -> int | None:
        j = self.found.get(key)
        return j if j is not None and (j == -1 or j >= pos) else None

    def closer(self, marker: str, pos: int) -> int:
        """A marker right after a non-space."""
        j = self._reuse(marker, pos)
        if j is None:
            j = self.text.find(marker, pos)
            while j != -1 and self.text[j - 1].isspace():
                j = self.text.find(marker, j + 1)
            self.found[marker] = j
        return j

    def newline(self, pos: int) -> int:
        j = self._reuse("\n", pos)
        if j is None:
            j = self.found["\n"] = self.text.find("\n", pos)
        return j


def _strip_emphasis(text: str) -> str:
    parts: list[str] = []
    last = pos = 0
    forward = _Forward(text)
    while m := _OPENER.search(text, pos):
        marker, inner = m.group(1), m.end()
        close = forward.closer(marker, inner + 1)  # at least one character inside
        newline = forward.newline(inner)
        if close < 0 or 0 <= newline < close:
            pos = m.start() + 1
            continue
        parts += (text[last : m.start()], text[inner:close])
        last = pos = close + len(marker)
    parts.append(text[last:])
    return "".join(parts)


def strip_markup(text: str) -> str:
    if "*" in text or "_" in text:
        text = _strip_emphasis(text)
    if "`" in text:
        text = _CODE.sub(r"\1", text)
    return _LEADING_MARK.sub("", text)
