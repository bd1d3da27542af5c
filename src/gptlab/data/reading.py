"""Reading users' data files: UTF-8 text and JSON Lines, with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_utf8(path: Path, name: str | None = None) -> str:
    """The file's text (a UTF-8 byte-order mark is dropped); bad bytes are an error naming their line."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(f"{name or path}:{line}: not UTF-8 text (byte {err.start}: {err.reason}); "
                         "re-save the file as UTF-8") from None


def jsonl_rows(name: str, text: str) -> list[tuple[int, Any]]:
    """(line number, value) of every non-blank line of a JSON Lines text."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                raise ValueError(f"{name}:{number}: not valid JSON ({err.msg})") from None
    return rows
