"""The regexes that cut text into pre-tokens before BPE, by name, each with its Hugging Face form.

A trained tokenizer records its regex; `split_for` gives it the form `tokenizer.json` needs:
GPT-2's own is the ByteLevel pre-tokenizer, any other a Split followed by a regex-free ByteLevel
(`gptlab.models.family.regex_cut`, as Llama 3 and Qwen2 write theirs).
"""

from __future__ import annotations

import regex

from gptlab.models import PreTokenizer
from gptlab.models.family import regex_cut
from gptlab.models.gpt2 import GPT2_SPLIT

# GPT-4's (cl100k) cut as minbpe writes it: case-insensitive contractions, a letter run with at most
# one leading non-letter, digits in threes, punctuation with its line breaks, newlines apart.
GPT4_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
                r"""|\s*[\r\n]|\s+(?!\S)|\s+""")
PATTERNS = {"gpt2": GPT2_SPLIT.pattern, "gpt4": GPT4_PATTERN}


def pattern_named(name_or_regex: str) -> str:
    """The regex of a named pattern (gpt2, gpt4), or the given text itself, checked to compile."""
    pattern = PATTERNS.get(name_or_regex, name_or_regex)
    try:
        compiled = regex.compile(pattern)
    except regex.error as err:
        raise ValueError(f"pattern {name_or_regex!r} is not gpt2, gpt4 or a valid regex ({err})") from None
    if compiled.match("") is not None:
        raise ValueError(f"pattern {name_or_regex!r} matches the empty string, so it cannot cut text into "
                         "pieces; make every alternative match at least one character")
    return pattern


def split_for(pattern: str) -> PreTokenizer:
    """The pre-tokenizer of a pattern, with the spec Hugging Face `tokenizers` runs it by."""
    if pattern == GPT2_SPLIT.pattern:
        return GPT2_SPLIT
    return regex_cut(next((n for n, p in PATTERNS.items() if p == pattern), "custom"), pattern)
