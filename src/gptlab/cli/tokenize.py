"""`gptlab tokenize` (how a tokenizer cuts a text; counts; decodes ids) and `gptlab tokenizer train`
(a byte-level BPE vocabulary learned from your text)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from gptlab.data.reading import read_utf8
from gptlab.data.text import resolve_text
from gptlab.tokenizer import NAMES, Tokenizer, get_tokenizer, save_bpe, train_bpe
from gptlab.tokenizer.gpt2 import ENDOFTEXT
from gptlab.tokenizer.patterns import pattern_named

TOKENIZE = ("Show the token ids of a text. Without --json, each token's text follows: coloured token by token in a "
            "terminal, else one line per token (id, then the token as a JSON string). Tokens that end inside a "
            "character show its bytes as \\x escapes.")
TRAIN = ("Learn a byte-level BPE vocabulary from text files: GPT-2's algorithm (the most frequent adjacent pair "
         "becomes a new token, ties to the smaller ids as in Hugging Face tokenizers). Writes bpe.json (gptlab's own: "
         "vocabulary, merges, special tokens, pattern), encoder.json + vocab.bpe (GPT-2's format, which tiktoken "
         "loads) and tokenizer.json (Hugging Face tokenizers). Use it with --tokenizer FOLDER, e.g. gptlab pretrain "
         "--tokenizer FOLDER.")
COLOURS = ("\033[48;5;153m", "\033[48;5;223m", "\033[48;5;157m", "\033[48;5;217m", "\033[48;5;230m")
RESET = "\033[0m"


def add_tokenize(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("tokenize", help="show how a tokenizer cuts a text into ids (or count, or decode ids)",
                            description=TOKENIZE)
    p.add_argument("--tokenizer", default="gpt2", metavar="NAME|PATH", help=f"{NAMES} (default: gpt2)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the text to tokenize")
    source.add_argument("--file", type=Path, help="a UTF-8 text file to tokenize")
    source.add_argument("--decode", metavar="ID,ID,...", help="print the text of these comma-separated ids instead "
                                                              "(e.g. 15496,11)")
    p.add_argument("--count", action="store_true", help="print only the number of tokens")
    p.add_argument("--json", action="store_true", help='print one JSON object: {"ids": [...]}, {"count": N} with '
                                                       '--count, {"text": "..."} with --decode')
    p.set_defaults(func=cmd_tokenize)


def cmd_tokenize(args: argparse.Namespace) -> int:
    text = read_utf8(args.file) if args.file is not None else args.text
    tokenizer = get_tokenizer(args.tokenizer, text=text)
    if args.decode is not None:
        decoded = tokenizer.decode(parse_ids(args.decode))
        print(json.dumps({"text": decoded}, ensure_ascii=False) if args.json else decoded)
        return 0
    ids = tokenizer.encode(text)
    if args.count:
        print(json.dumps({"count": len(ids)}) if args.json else len(ids))
    elif args.json:
        print(json.dumps({"ids": ids}))
    else:
        print(",".join(map(str, ids)))
        print(coloured(tokenizer, ids) if sys.stdout.isatty() else listed(tokenizer, ids))
    return 0


def parse_ids(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(f"--decode {text!r}: expected token ids separated by commas, e.g. 15496,11") from None


def token_texts(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """Each token's own text; bytes of a character split across tokens as \\x escapes."""
    return [tokenizer.decode_bytes([i]).decode("utf-8", errors="backslashreplace") for i in ids]


def coloured(tokenizer: Tokenizer, ids: list[int]) -> str:
    """The text, each token on its own background colour."""
    texts = token_texts(tokenizer, ids)
    return "".join(f"{COLOURS[n % len(COLOURS)]}{text}{RESET}" for n, text in enumerate(texts))


def listed(tokenizer: Tokenizer, ids: list[int]) -> str:
    """One line per token: its id and its text as a JSON string (spaces and line breaks visible)."""
    texts = token_texts(tokenizer, ids)
    return "\n".join(f"{i}\t{json.dumps(text, ensure_ascii=False)}" for i, text in zip(ids, texts))


def add_tokenizer(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("tokenizer", help="train a byte-level BPE tokenizer on your text",
                                description="Tokenizers of your own.")
    actions = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("train", help="learn a BPE vocabulary from text files", description=TRAIN)
    p.add_argument("--data", nargs="+", required=True, metavar="FILE|NAME",
                   help="UTF-8 text files, or built-in data sets (the-verdict, tinyshakespeare)")
    p.add_argument("--vocab-size", type=int, required=True, metavar="N",
                   help="ids in the vocabulary: the 256 single bytes + the merges to learn + the special tokens")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write the tokenizer's files into")
    p.add_argument("--special", nargs="+", default=[ENDOFTEXT], metavar="TOKEN",
                   help=f"special tokens, matched whole in text and never learned as merges; the first one ends a "
                        f"document (default: {ENDOFTEXT})")
    p.add_argument("--pattern", default="gpt2", metavar="gpt2|gpt4|REGEX",
                   help="how text is cut into pieces before BPE: gpt2 (GPT-2's regex), gpt4 (cl100k's: digits in "
                        "threes, case-insensitive contractions, line breaks apart) or a regex of your own "
                        "(default: gpt2)")
    p.add_argument("--name", help="the tokenizer's name (default: the --out folder's name)")
    p.set_defaults(func=cmd_train_tokenizer)


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    pattern = pattern_named(args.pattern)
    texts = [read_utf8(resolve_text(source), source) for source in args.data]
    bar = MergeBar()
    try:
        vocabulary = train_bpe(texts, args.vocab_size, args.special, pattern, args.name or args.out.resolve().name,
                               bar)
    finally:
        bar.close()
    files = save_bpe(vocabulary, args.out)
    wanted = args.vocab_size - 256 - len(args.special)
    if len(vocabulary.merges) < wanted:
        print(f"the text has pairs for {len(vocabulary.merges):,} merges, not {wanted:,}: the vocabulary has "
              f"{vocabulary.size:,} ids", file=sys.stderr)
    print(f"{vocabulary.name}: {vocabulary.size:,} ids (256 bytes, {len(vocabulary.merges):,} merges, "
          f"{len(vocabulary.specials)} special) in {args.out}/: {', '.join(f.name for f in files)}")
    print(f"use it: gptlab tokenize --tokenizer {args.out} --text 'Hello'; gptlab pretrain --tokenizer {args.out} ...")
    return 0


class MergeBar:
    """A progress bar of merges, drawn from the first merge on (bad input fails before any bar)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc="merges", unit="merge", dynamic_ncols=True,
                            mininterval=0.5 if sys.stderr.isatty() else 30)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
