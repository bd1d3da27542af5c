"""Training a byte-level BPE vocabulary: the most frequent adjacent pair becomes a new token, again and again.

The text is counted once into distinct pre-tokens ("words") with their frequencies. A merge rewrites
only the words that hold its pair, and the pair counts change by what those words lose and gain, so
no merge recounts the corpus. A heap finds the most frequent pair; entries left stale by a merge are
corrected when they reach the top. Ties go to the pair with the smaller ids (left, then right), as
Hugging Face `tokenizers` breaks them: both trainers learn the same merges from the same text.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence

import regex

from gptlab.tokenizer.bpe import refuse_surrogates
from gptlab.tokenizer.gpt2 import ENDOFTEXT, N_BYTES
from gptlab.tokenizer.patterns import PATTERNS
from gptlab.tokenizer.scratch import BYTE_ORDER, BPEVocabulary

ID_OF_BYTE = {byte: i for i, byte in enumerate(BYTE_ORDER)}
Pair = tuple[int, int]
OnMerge = Callable[[int, int], None]  # (merges done, merges wanted), after each merge


def train_bpe(texts: Iterable[str], vocab_size: int, specials: Sequence[str] = (ENDOFTEXT,),
              pattern: str = PATTERNS["gpt2"], name: str = "bpe", on_merge: OnMerge | None = None) -> BPEVocabulary:
    """A vocabulary of `vocab_size` ids (256 bytes, the merges learned from `texts`, then `specials`).

    Fewer merges are learned when the texts run out of pairs. Special tokens written in the texts
    are cut out before counting, so no merge learns their spelling."""
    _check_settings(vocab_size, specials)
    words = count_words(texts, pattern, specials)
    if not words:
        raise ValueError("the training text is empty: there is nothing to learn merges from; give files with text")
    merges = learn_merges(words, vocab_size - N_BYTES - len(specials), on_merge)
    return BPEVocabulary(name, pattern, merges, list(specials))


def _check_settings(vocab_size: int, specials: Sequence[str]) -> None:
    smallest = N_BYTES + len(specials)
    if vocab_size < smallest:
        raise ValueError(f"vocab size {vocab_size} is below the {N_BYTES} single bytes + {len(specials)} special "
                         f"token(s); give a vocab size of at least {smallest}")
    if any(not isinstance(s, str) or not s for s in specials) or len(set(specials)) < len(specials):
        raise ValueError(f"special tokens must be distinct, non-empty strings; got {list(specials)!r}")


def count_words(texts: Iterable[str], pattern: str, specials: Sequence[str] = ()) -> Counter[str]:
    """How often each pre-token occurs in the texts (special tokens left out)."""
    split = regex.compile(pattern)
    cut_specials = regex.compile("|".join(map(regex.escape, specials))) if specials else None
    words: Counter[str] = Counter()
    for text in texts:
        refuse_surrogates(text)
        for segment in cut_specials.split(text) if cut_specials else (text,):
            pieces = split.findall(segment)
            if sum(map(len, pieces)) != len(segment):
                raise ValueError(f"the pattern {pattern!r} leaves characters of the text out of every pre-token, so "
                                 "they would be lost; add an alternative that matches them (e.g. '|.' at the end)")
            words.update(pieces)
    return words


def learn_merges(words: Counter[str], n_merges: int, on_merge: OnMerge | None = None) -> list[Pair]:
    """Up to `n_merges` merges (id pairs; merge i makes id 256 + i), the most frequent pair first."""
    state = _PairCounts([[ID_OF_BYTE[b] for b in word.encode("utf-8")] for word in words], list(words.values()))
    heap = [(-count, pair) for pair, count in state.counts.items()]
    heapq.heapify(heap)
    tokens = [bytes([b]) for b in BYTE_ORDER]
    token_ids = {token: i for i, token in enumerate(tokens)}
    merges: list[Pair] = []
    while len(merges) < n_merges and heap:
        negative, pair = heapq.heappop(heap)
        count = state.counts.get(pair, 0)
        if count != -negative:  # counts only fall after a pair is pushed: correct it and look again
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            continue
        joined = tokens[pair[0]] + tokens[pair[1]]
        new_id = token_ids.get(joined)
        if new_id is None:  # (a joined pair can spell a token made before; it then becomes that token)
            new_id = token_ids[joined] = len(tokens)
            tokens.append(joined)
            merges.append(pair)
            if on_merge is not None:
                on_merge(len(merges), n_merges)
        for new_pair in state.merge(pair, new_id):
            heapq.heappush(heap, (-state.counts[new_pair], new_pair))
    return merges


class _PairCounts:
    """Distinct words as id lists, their frequencies, every adjacent pair's count and the words holding it."""

    def __init__(self, words: list[list[int]], frequencies: list[int]) -> None:
        self.words, self.frequencies = words, frequencies
        self.counts: dict[Pair, int] = defaultdict(int)
        self.holders: dict[Pair, set[int]] = defaultdict(set)  # may hold words that lost the pair since
        for index, (word, frequency) in enumerate(zip(words, frequencies)):
            for pair in zip(word, word[1:]):
                self.counts[pair] += frequency
                self.holders[pair].add(index)

    def merge(self, pair: Pair, new_id: int) -> set[Pair]:
        """Replace `pair` by `new_id` in every word that holds it; the pairs made with `new_id` are returned."""
        made: set[Pair] = set()
        for index in self.holders.pop(pair, ()):
            old = self.words[index]
            new = replace_pair(old, pair, new_id)
            if len(new) == len(old):
                continue
            frequency = self.frequencies[index]
            for gone in zip(old, old[1:]):
                self.counts[gone] -= frequency
            for kept in zip(new, new[1:]):
                self.counts[kept] += frequency
                if new_id in kept:
                    self.holders[kept].add(index)
                    made.add(kept)
            self.words[index] = new
        self.counts.pop(pair, None)
        return made


def replace_pair(word: list[int], pair: Pair, new_id: int) -> list[int]:
    """`word` with each occurrence of `pair`, left to right, replaced by `new_id`."""
    left, right = pair
    out, i, last = [], 0, len(word) - 1
    while i <= last:
        if i < last and word[i] == left and word[i + 1] == right:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out
