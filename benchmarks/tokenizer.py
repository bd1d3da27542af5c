"""Tokenizer speed: gptlab's own BPE against tiktoken and Hugging Face `tokenizers`, in one run.

    python benchmarks/tokenizer.py [--repeats 5] [--vocab-size 4096] [--naive-merges N]

Encoding: The Verdict and Tiny Shakespeare with GPT-2's vocabulary in tiktoken, HF `tokenizers` and
gptlab's `gpt2-scratch` (cold: a fresh encoder's first pass; warm: its second); all ids must agree.
Training: a 4,096-id vocabulary on Tiny Shakespeare with gptlab's trainer, HF's BpeTrainer and a naive
trainer written here as minbpe does it (every merge recounts every pair of the whole text), with
gptlab's tie-break so that it must learn the same merges. Prints seconds and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable

import regex
import tiktoken
import tokenizers
from tokenizers import models, pre_tokenizers, trainers

from gptlab.files import fetch
from gptlab.tokenizer import GPT2Tokenizer, gpt2_scratch, train_bpe
from gptlab.tokenizer.patterns import PATTERNS
from gptlab.tokenizer.training import ID_OF_BYTE, replace_pair

ENDOFTEXT = "<|endoftext|>"


def best_of(repeats: int, run: Callable[[], object]) -> tuple[float, object]:
    """The fastest of `repeats` timed calls, and the last call's result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def hf_gpt2() -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(models.BPE.from_file(str(fetch("gpt2-encoder")), str(fetch("gpt2-vocab"))))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tokenizer


def encode_all(name: str, text: str, repeats: int) -> None:
    """One text through every GPT-2 encoder; times against tiktoken's."""
    fast = GPT2Tokenizer()._encoding  # tiktoken itself (gptlab's gpt2 adds only a cut of very long texts)
    hf, warm = hf_gpt2(), gpt2_scratch()
    warm.encode(text)
    runs = {"tiktoken": lambda: fast.encode(text, allowed_special={ENDOFTEXT}),
            "HF tokenizers": lambda: hf.encode(text).ids,
            "gpt2-scratch cold": lambda: gpt2_scratch().encode(text),
            "gpt2-scratch warm": lambda: warm.encode(text)}
    times, ids = {}, {}
    for engine, run in runs.items():
        times[engine], ids[engine] = best_of(repeats, run)
    same = all(found == ids["tiktoken"] for found in ids.values())
    print(f"\nencode {name}: {len(text):,} characters, {len(ids['tiktoken']):,} tokens, ids equal: {same}")
    for engine, seconds in times.items():
        print(f"  {engine:<18} {seconds * 1e3:9.1f} ms  {len(text) / seconds / 1e6:6.2f} MB/s  "
              f"{seconds / times['tiktoken']:5.2f}x tiktoken's time")


def naive_train(text: str, n_merges: int) -> list[tuple[int, int]]:
    """minbpe's RegexTokenizer.train: recount every pair of every chunk for every merge. The most frequent
    pair wins, ties to the smaller ids (gptlab's and HF's rule, not minbpe's first-seen)."""
    chunks = [[ID_OF_BYTE[b] for b in piece.encode("utf-8")] for piece in regex.findall(PATTERNS["gpt2"], text)]
    merges = []
    for new_id in range(256, 256 + n_merges):
        counts: dict[tuple[int, int], int] = {}
        for chunk in chunks:
            for pair in zip(chunk, chunk[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))
        chunks = [replace_pair(chunk, pair, new_id) for chunk in chunks]  # gptlab's, as in its trainer
        merges.append(pair)
    return merges


def hf_train(text: str, vocab_size: int) -> list[str]:
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer)
    return [" ".join(m) for m in json.loads(tokenizer.to_str())["model"]["merges"]]


def train_all(text: str, vocab_size: int, naive_merges: int | None, repeats: int) -> None:
    """The three trainers on one text; merges compared."""
    n_merges = vocab_size - 256 - 1
    ours_s, ours = best_of(repeats, lambda: train_bpe([text], vocab_size))
    hf_s, hf = best_of(repeats, lambda: hf_train(text, vocab_size))
    print(f"\ntrain {vocab_size:,} ids on Tiny Shakespeare ({n_merges:,} merges):")
    print(f"  gptlab           {ours_s:8.2f} s")
    print(f"  HF tokenizers    {hf_s:8.2f} s   gptlab takes {ours_s / hf_s:.1f}x HF's time "
          f"(HF on {os.cpu_count()} threads)")
    same = ours.to_dict()["merges"] == hf
    first = next((i for i, (a, b) in enumerate(zip(ours.to_dict()["merges"], hf)) if a != b), None)
    print(f"  merges identical to HF's: {same}" + ("" if same else f" (first difference at merge {first})"))
    naive_n = n_merges if naive_merges is None else min(naive_merges, n_merges)
    naive_s, naive = best_of(1, lambda: naive_train(text, naive_n))
    print(f"  naive (minbpe)   {naive_s:8.2f} s for {naive_n:,} merges; merges equal gptlab's: "
          f"{naive == ours.merges[:naive_n]}")
    if naive_n == n_merges:
        print(f"  gptlab is {naive_s / ours_s:.0f}x faster than the naive trainer")
    else:
        print(f"  gptlab is at least {naive_s / ours_s:.0f}x faster than the naive trainer (whose first {naive_n:,} "
              f"of {n_merges:,} merges alone took {naive_s / ours_s:.0f}x gptlab's whole run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per encoder (the best counts)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="ids of the trained vocabulary")
    parser.add_argument("--naive-merges", type=int, default=None,
                        help="stop the naive trainer after this many merges, for a lower bound of the speed-up "
                             "(default: all merges; that takes 10 minutes or more)")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load[0]:.1f}; Python "
          f"{platform.python_version()}, tiktoken {tiktoken.__version__}, tokenizers {tokenizers.__version__}, "
          f"regex {regex.__version__}")
    verdict = fetch("the-verdict").read_text(encoding="utf-8")
    shakespeare = fetch("tinyshakespeare").read_text(encoding="utf-8")
    encode_all("The Verdict", verdict, args.repeats)
    encode_all("Tiny Shakespeare", shakespeare, args.repeats)
    train_all(shakespeare, args.vocab_size, args.naive_merges, max(1, args.repeats // 2))


if __name__ == "__main__":
    main()
