"""Reading users' data files: UTF-8 text and JSON Lines, with errors that name the file and line."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gptlab.checkpoint.manifest import check_listed

BLOCK = 1 << 22  # bytes read at a time by `utf8_blocks`


def read_utf8(path: Path, name: str | None = None) -> str:
    """The file's text exactly (line ends untranslated; a UTF-8 byte-order mark dropped); bad bytes
    are an error naming their line."""
    data = path.read_bytes()
    check_listed(path, data)  # a run folder's own file (a split, its test-set responses) as the run wrote it
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{name or path}:{line}: not UTF-8 text (byte {err.start}: {err.reason}); "
                         "re-save the file as UTF-8") from None


def utf8_blocks(path: Path) -> Iterator[str]:
    """The file's text as `read_utf8` reads it, `BLOCK` bytes at a time, so a large corpus is never whole
    in memory; a character split between two reads comes whole in the later block."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    lines = 0  # line breaks in the blocks before, for the error's line number
    with path.open("rb") as file:
        while True:
            data = file.read(BLOCK)
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as err:  # err.object: what the decoder held back, then `data`
                line = lines + err.object[: err.start].count(b"\n") + 1
                at = file.tell() - len(err.object) + err.start
                raise ValueError(f"{path}:{line}: not UTF-8 text (byte {at}: {err.reason}); "
                                 "re-save the file as UTF-8") from None
            lines += data.count(b"\n")
            if text:
                yield text
            if not data:
                return


def jsonl_rows(name: str, text: str) -> list[tuple[int, Any]]:
    """(line number, value) of every non-blank line of a JSON Lines text. Lines end at "\n" only:
    a U+2028 inside a string is text, not a line break (str.splitlines would cut there)."""
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(f"{name}:{number}: not valid JSON ({err.msg})") from None
            except RecursionError:
                raise ValueError(f"{name}:{number}: JSON nested too deeply to read") from None
    return rows
