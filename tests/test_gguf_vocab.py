"""Tokenizers in llama.cpp's form: GPT-2's published files as its converter writes them."""

from __future__ import annotations

from gptlab.tokenizer import GPT2Tokenizer
from gptlab.tokenizer.gguf_vocab import gguf_vocabulary


def test_gpt2s_vocabulary_is_written_as_llama_cpp_reads_it():
    vocab = gguf_vocabulary(GPT2Tokenizer())
    assert (vocab.pre, len(vocab.tokens), len(vocab.merges)) == ("gpt-2", 50257, 50000)
    assert (vocab.tokens[0], vocab.tokens[50256], vocab.merges[0]) == ("!", "<|endoftext|>", "Ġ t")
    assert [i for i, kind in enumerate(vocab.token_types) if kind != 1] == [50256]  # control: matched whole
    assert (vocab.bos_id, vocab.eos_id, vocab.adds_bos) == (50256, 50256, False)
