"""Long texts in pieces a regex pre-tokenizer can take: tiktoken's regex overflows its stack on a
run of about a million spaces, so encoders cut texts where the cut changes no token."""

from __future__ import annotations

import re
from collections.abc import Iterator

MAX_CHARS = 100_000  # characters handed to the pre-tokenizer at once
# A non-space character followed by ASCII white space: GPT-2-style patterns (letters, digits,
# punctuation runs, each with at most a leading space) never match across it, so a cut there
# gives the same tokens as no cut.
_WORD_END = re.compile(r"\S(?=[ \t\n\r])")


def safe_pieces(text: str, limit: int = MAX_CHARS) -> Iterator[str]:
    """`text` in pieces of at most `limit` characters, cut at the last word end inside each piece;
    a stretch with none (a megabyte of spaces) is cut hard, which can only change how that
    stretch is split into tokens, never what they decode to."""
    start = 0
    while len(text) - start > limit:
        end = start + limit
        cut = end
        for match in _WORD_END.finditer(text, start, end):
            cut = match.end()
        yield text[start:cut]
        start = cut
    yield text[start:]


def last_line_start(text: str, start: int = 0) -> int:
    """The last place in `text` where a line starts after a line break at `start` or later that has a
    character other than white space on both sides (where `cuts_at_lines` tokenizers may be cut); 0 if none."""
    at = len(text) - 1
    while (at := text.rfind("\n", max(start, 1), at)) > 0:
        if not text[at - 1].isspace() and not text[at + 1].isspace():
            return at + 1
    return 0
