"""Markdown an LLM leaves in its text, which a TTS model would otherwise try to read.

Only unambiguous marks are removed: "**bold**"/"__bold__" markers, inline-code backticks, and a list,
heading or quote marker at the start of a segment. A lone "*" (2 * 3) or "#" (#1) stays.
"""

from __future__ import annotations

import re

_EMPHASIS = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_CODE = re.compile(r"`([^`\n]+)`")
_LEADING_MARK = re.compile(r"^(?:#{1,6}\s+|>\s+|[-*•·]\s+)")


def strip_markup(text: str) -> str:
    if "*" in text or "_" in text:
        text = _EMPHASIS.sub(r"\2", text)
    if "`" in text:
        text = _CODE.sub(r"\1", text)
    return _LEADING_MARK.sub("", text)
