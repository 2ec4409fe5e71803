"""`<think>…</think>` handling. Whitespace is data (it changes token ids), so nothing is trimmed."""

from __future__ import annotations

import re

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_THINK_BLOCK = re.compile(r"<think>(.*?)</think>", re.DOTALL)


def wrap_think(text: str) -> str:
    return f"{THINK_OPEN}{text}{THINK_CLOSE}"


def split_think(text: str) -> tuple[list[str], str]:
    """(texts of every complete think block, the text with those blocks cut out).

    An unclosed `<think>` (a truncated generation) is left in the text as is.
    """
    if THINK_OPEN not in text:
        return [], text
    blocks = _THINK_BLOCK.findall(text)
    if not blocks:
        return [], text
    return blocks, _THINK_BLOCK.sub("", text)
