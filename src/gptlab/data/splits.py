"""Seeded splits of a data set into named parts, one function for every task."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def shuffled_split(items: Sequence[T], seed: int, shares: dict[str, float], rest: str) -> dict[str, list[T]]:
    """Shuffle (seeded), then cut the named `shares` in order, each its fraction of all items rounded
    down; the part named `rest` gets what is left. The book cuts classification data train | val |
    test (70/10/20) and instructions train | test | val (85/10/5: 935/110/55 of 1,100); passing the
    shares in the book's order reproduces its splits exactly."""
    fractions = list(shares.values())
    if not fractions or fractions[0] <= 0 or min(fractions) < 0 or sum(fractions) > 1:
        given = ", ".join(f"{name}={share}" for name, share in shares.items())
        raise ValueError(f"split fractions {given} must be positive and sum to at most 1")
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    parts, start = {}, 0
    for name, share in shares.items():
        end = start + int(len(shuffled) * share)
        parts[name], start = shuffled[start:end], end
    parts[rest] = shuffled[start:]
    return parts
