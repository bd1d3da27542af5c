"""Property tests of gptlab's own BPE over arbitrary Unicode: gpt2-scratch gives tiktoken's GPT-2 ids (its
own pattern, its own loader of GPT-2's files), a trained vocabulary gives the ids tiktoken gets from its
export, every text round-trips, and lone surrogates are refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str

from gptlab.tokenizer import BPETokenizer, gpt2_scratch, save_bpe, train_bpe

ENDOFTEXT = "<|endoftext|>"
# pieces where byte-level BPE goes wrong first: emoji (ZWJ sequences, flags, skin tones), CJK, combining
# marks, runs of spaces, tabs and line breaks, contractions in both cases, digits, specials
FRAGMENTS = ["👩‍👩‍👧", "🇫🇷", "👍🏽", "🙂", "你好世界", "日本語", "한국어", "e\u0301", "n\u0303\u0323", "ﷺ", "\u200b",
             " ", "  ", "    ", "\t", "\n", "\r\n", "\n\n\n", " \n ", "\u00a0", "\u3000", "'s", "'ll", "'S", "'LL",
             "'re", "'ve", "'d", "'m", "'t", "don't", "12345", "3.14", "٣", "Ⅻ", "<|endoftext|>", "<|endof", "--",
             "..."]
# Code points unassigned in Python's Unicode tables are left out: each regex engine classes them by its own
# Unicode version (`regex` calls U+3D000 a letter, tiktoken's Rust tables do not), so no ids are "right".
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(st.characters(exclude_categories=["Cs", "Cn"]),
                                                                max_size=12)), max_size=24).map("".join)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def scratch() -> BPETokenizer:
    return gpt2_scratch()


@pytest.fixture(scope="module")
def tiktoken_gpt2(data_dir: Path) -> tiktoken.Encoding:
    """tiktoken's own GPT-2: its loader of GPT-2's two files, its own regex."""
    ranks = data_gym_to_mergeable_bpe_ranks(str(data_dir / "gpt2/vocab.bpe"), str(data_dir / "gpt2/encoder.json"))
    return tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: 50256})


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir: Path) -> Iterator[tuple[BPETokenizer, tiktoken.Encoding]]:
    """A 1,000-id vocabulary of The Verdict, ours and as tiktoken loads its export."""
    folder = tmp_path_factory.mktemp("verdict-bpe")
    vocabulary = train_bpe([(data_dir / "the-verdict.txt").read_text(encoding="utf-8")], 1000)
    save_bpe(vocabulary, folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", "")  # read the files, never a copy cached by their path
        ranks = data_gym_to_mergeable_bpe_ranks(str(folder / "vocab.bpe"), str(folder / "encoder.json"))
    fast = tiktoken.Encoding("verdict", pat_str=vocabulary.pattern, mergeable_ranks=ranks,
                             special_tokens={ENDOFTEXT: 999})
    yield BPETokenizer(vocabulary), fast


@PROPERTY
@given(text=texts)
def test_gpt2_scratch_equals_tiktoken_and_round_trips(scratch, tiktoken_gpt2, text: str) -> None:
    ids = scratch.encode(text)
    assert ids == tiktoken_gpt2.encode(text, allowed_special="all")
    assert scratch.decode(ids) == text


@PROPERTY
@given(text=texts)
def test_a_trained_vocabulary_equals_tiktoken_running_its_export(trained, text: str) -> None:
    ours, fast = trained
    ids = ours.encode(text)
    assert ids == fast.encode(text, allowed_special="all")
    assert ours.decode(ids) == text


@settings(max_examples=100, deadline=None)
@given(before=texts, surrogate=st.characters(categories=["Cs"]), after=texts)
def test_lone_surrogates_are_refused(scratch, before: str, surrogate: str, after: str) -> None:
    with pytest.raises(ValueError, match=f"lone surrogate U\\+{ord(surrogate):04X} at character {len(before)};"):
        scratch.encode(before + surrogate + after)
