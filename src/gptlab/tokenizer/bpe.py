"""Byte-level BPE encoding in pure Python (plus `regex`): GPT-2's algorithm, written out to be read.

Text is cut into pre-tokens by a regex; each pre-token's UTF-8 bytes start as single-byte tokens,
and the adjacent pair whose joined bytes have the lowest rank is merged (the leftmost on ties) until
no pair joins into a token. A pair's rank is the id of the token it makes, and a pre-token that is
a token already is that token: exactly what tiktoken does, so the ids are tiktoken's.

Speed comes from a cache of pre-token → ids (text repeats its words) and, for each new pre-token,
a heap of candidate pairs over a linked list of parts, so a long pre-token (a run of 100k spaces)
costs O(n log n), never a rescan of every pair after every merge.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

import regex

CACHE_LIMIT = 200_000  # pre-tokens remembered; the cache starts afresh when full (memory stays bounded)
CACHED_LENGTH = 256  # longer pre-tokens (rare, seldom repeated) are not remembered


class BytePairEncoder:
    """Text <-> ids for one byte-level BPE vocabulary: token bytes → id, a pre-token regex, special tokens."""

    def __init__(self, ranks: Mapping[bytes, int], pattern: str, specials: Mapping[str, int]) -> None:
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ValueError(f"a byte-level BPE vocabulary needs all 256 single bytes; byte {missing[0]} is missing")
        self._ranks = dict(ranks)
        self._split = regex.compile(pattern)
        self.specials = dict(specials)
        by_length = sorted(specials, key=len, reverse=True)  # the longest special wins where two start
        self._special_split = regex.compile("(" + "|".join(map(regex.escape, by_length)) + ")") if specials else None
        self._bytes_of = {i: token for token, i in self._ranks.items()}
        self._bytes_of.update({i: token.encode("utf-8") for token, i in self.specials.items()})
        self._cache: dict[str, list[int]] = {}

    @property
    def size(self) -> int:
        """One more than the highest id."""
        return max(self._bytes_of) + 1

    def encode(self, text: str) -> list[int]:
        """Token ids for text; special tokens written out in it become their ids."""
        refuse_surrogates(text)
        if self._special_split is None:
            return self.encode_ordinary(text)
        ids: list[int] = []
        for number, part in enumerate(self._special_split.split(text)):
            if number % 2:  # split() with one group alternates text, special, text, ...
                ids.append(self.specials[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids for text with no special tokens (their text is encoded as ordinary text)."""
        cache, ids = self._cache, []
        for piece in self._split.findall(text):
            piece_ids = cache.get(piece)
            if piece_ids is None:
                piece_ids = self._encode_piece(piece)
            ids += piece_ids
        return ids

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """The bytes of token ids, which may end inside a multi-byte character."""
        try:
            return b"".join([self._bytes_of[i] for i in ids])
        except (KeyError, TypeError):
            bad = next(i for i in ids if i not in self._bytes_of)
            raise ValueError(f"token id {bad!r} is not in this vocabulary (ids 0..{self.size - 1})") from None

    def _encode_piece(self, piece: str) -> list[int]:
        data = piece.encode("utf-8")
        token = self._ranks.get(data)
        ids = [token] if token is not None else [self._ranks[part] for part in merge_parts(data, self._ranks)]
        if len(piece) <= CACHED_LENGTH:
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[piece] = ids
        return ids


def merge_parts(data: bytes, ranks: Mapping[bytes, int]) -> list[bytes]:
    """`data` cut into tokens by merging, again and again, the adjacent pair of lowest rank (leftmost on ties).

    Parts are a linked list of start offsets; the heap holds (rank, start) of candidate pairs, and an
    entry whose pair has changed since it was pushed (a neighbour merged) is skipped when popped."""
    n = len(data)
    following = list(range(1, n + 1))  # following[start]: where the part beginning at start ends
    preceding = list(range(-1, n - 1))  # preceding[start]: where the part before it begins
    alive = [True] * n
    heap = [(rank, i) for i in range(n - 1) if (rank := ranks.get(data[i:i + 2])) is not None]
    heapq.heapify(heap)
    while heap:
        rank, start = heapq.heappop(heap)
        middle = following[start]
        if not alive[start] or middle >= n or ranks.get(data[start:following[middle]]) != rank:
            continue  # stale: a part of this pair has merged with something else since
        end = following[middle]
        alive[middle] = False
        following[start] = end
        if end < n:
            preceding[end] = start
            if (right := ranks.get(data[start:following[end]])) is not None:
                heapq.heappush(heap, (right, start))
        if (before := preceding[start]) >= 0 and (left := ranks.get(data[before:end])) is not None:
            heapq.heappush(heap, (left, before))
    parts, start = [], 0
    while start < n:
        parts.append(data[start:following[start]])
        start = following[start]
    return parts


def merge_pairs(ids: list[int], pairs: Mapping[tuple[int, int], tuple[float, int]]) -> list[int]:
    """`ids` after merging, again and again, the adjacent pair of lowest rank (leftmost on ties) into the id
    `pairs` gives it: `pairs[(left, right)] = (rank, merged)`. Hugging Face's BPE rule, where each pair has its
    own rank (so two pairs that join into the same text need not both merge, unlike `merge_parts`), and
    SentencePiece's, where the rank is minus the score of the token the pair makes.

    The same linked list and heap as `merge_parts`; an entry is stale when its pair no longer maps to the
    merge it was pushed with (the dict's own tuple, compared by identity)."""
    n = len(ids)
    if n < 2:
        return list(ids)
    symbols = list(ids)
    following = list(range(1, n + 1))  # following[i]: the position of the symbol after the one at i
    preceding = list(range(-1, n - 1))
    alive = [True] * n
    heap = [(merge[0], i, merge) for i in range(n - 1) if (merge := pairs.get((ids[i], ids[i + 1]))) is not None]
    heapq.heapify(heap)
    while heap:
        _, start, merge = heapq.heappop(heap)
        right = following[start]
        if not alive[start] or right >= n or pairs.get((symbols[start], symbols[right])) is not merge:
            continue  # stale: a symbol of this pair has merged with another since
        merged = symbols[start] = merge[1]
        alive[right] = False
        end = following[start] = following[right]
        if end < n:
            preceding[end] = start
            if (after := pairs.get((merged, symbols[end]))) is not None:
                heapq.heappush(heap, (after[0], start, after))
        if (before := preceding[start]) >= 0 and (left := pairs.get((symbols[before], merged))) is not None:
            heapq.heappush(heap, (left[0], before, left))
    merged_ids, at = [], 0
    while at < n:
        merged_ids.append(symbols[at])
        at = following[at]
    return merged_ids


def refuse_surrogates(text: str) -> None:
    """A lone surrogate (from text decoded with errors='surrogateescape', or a broken UTF-16 pair) has no
    UTF-8 bytes, so no tokens; say where it is rather than guess a replacement."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        code = ord(text[err.start])
        raise ValueError(f"the text has a lone surrogate U+{code:04X} at character {err.start}; it is not a "
                         "character and has no UTF-8 bytes: decode the source with errors='replace' or fix "
                         "its encoding") from None
