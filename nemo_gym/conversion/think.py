"""`<think>…</think>` handling. Whitespace is data (it changes token ids), so nothing is trimmed."""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_OPEN_LEN = len(THINK_OPEN)
_CLOSE_LEN = len(THINK_CLOSE)


def wrap_think(text: str) -> str:
    return f"{THINK_OPEN}{text}{THINK_CLOSE}"


def split_think(text: str) -> tuple[list[str], str]:
    """(texts of every complete think block, the text with those blocks cut out).

    An unclosed `<think>` (a truncated generation) is left in the text as is. Same result as
    `re.findall`/`re.sub` with `<think>(.*?)</think>`, but with `str.find`: the lazy regex
    cost 76 µs on a 1,000-token reasoning text, this a few.
    """
    start = text.find(THINK_OPEN)
    if start < 0:
        return [], text
    blocks: list[str] = []
    kept: list[str] = []
    pos = 0
    while start >= 0:
        end = text.find(THINK_CLOSE, start + _OPEN_LEN)
        if end < 0:
            break
        kept.append(text[pos:start])
        blocks.append(text[start + _OPEN_LEN : end])
        pos = end + _CLOSE_LEN
        start = text.find(THINK_OPEN, pos)
    if not blocks:
        return [], text
    kept.append(text[pos:])
    return blocks, "".join(kept)
