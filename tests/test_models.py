"""The family registry: presets, lookups by what files and configs say, pre-tokenizer cuts, chat defaults."""

from __future__ import annotations

import pytest

from gptlab.config import GPTConfig
from gptlab.models import (
    FAMILIES,
    ChatDefaults,
    family_for_gguf,
    family_for_hf,
    family_of,
    gpt2,
    llama,
    pre_tokenizer,
    preset_config,
)

LLAMA_TINY = GPTConfig(vocab_size=300, context_length=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                       mlp_hidden=96, rope_theta=50000.0, layer_norm_eps=1e-5, tie_embeddings=False, **llama.BLOCKS)


def test_every_preset_belongs_to_the_family_that_declares_it():
    for family in FAMILIES:
        for name in family.presets:
            assert family_of(preset_config(name)) is family, name
    assert family_of(LLAMA_TINY) is llama.FAMILY
    assert family_of(GPTConfig(positions="rope")) is None  # learned norms and MLP of GPT-2 with RoPE: no family


def test_families_are_found_by_what_their_files_say():
    assert family_for_hf({"model_type": "gpt2"}, "config.json") is gpt2.FAMILY
    assert family_for_hf({"model_type": "llama"}, "config.json") is llama.FAMILY
    assert family_for_gguf("llama", "m.gguf") is llama.FAMILY
    known = ", ".join(t for family in FAMILIES for t in family.hf.model_types)
    assert known.startswith("gpt2, llama, qwen2")
    with pytest.raises(ValueError, match=r"^x/config.json: model_type None is not supported; gptlab reads "
                                         rf"Hugging Face folders of model_type {known}$"):
        family_for_hf({}, "x/config.json")
    architectures = ", ".join(a for family in FAMILIES if family.gguf is not None for a in family.gguf.architectures)
    assert architectures.startswith("gpt2, llama")  # GPT-2's GGUF files are read too
    with pytest.raises(ValueError, match=r"^m.gguf: architecture 'mamba' is not supported; gptlab reads GGUF "
                                         rf"files of {architectures}$"):
        family_for_gguf("mamba", "m.gguf")


@pytest.mark.parametrize("config", [preset_config("gpt-tiny"), LLAMA_TINY])
def test_hugging_face_configs_round_trip(config):
    family = family_of(config)
    assert family.hf.read_config(family.hf.write_config(config), "config.json") == config


def test_pre_tokenizers_are_found_by_gguf_name_or_tokenizer_json_spec():
    assert pre_tokenizer("smollm", "m.gguf") is llama.SMOLLM_SPLIT
    assert pre_tokenizer("gpt-2", "m.gguf") is gpt2.GPT2_SPLIT
    offsets_differ = {**gpt2.GPT2_SPLIT.hf, "trim_offsets": False}  # moves offsets, never ids
    assert pre_tokenizer(offsets_differ, "tokenizer.json") is gpt2.GPT2_SPLIT
    with pytest.raises(ValueError, match=r"^tokenizer.json: pre-tokenizer \{\"type\": \"ByteLevel\", "
                                         r"\"add_prefix_space\": true.* gptlab knows gpt-2, smollm"):
        pre_tokenizer({**gpt2.GPT2_SPLIT.hf, "add_prefix_space": True}, "tokenizer.json")
    with pytest.raises(ValueError, match="m.gguf: pre-tokenizer 'deepseek-llm' is not supported"):
        pre_tokenizer("deepseek-llm", "m.gguf")


def test_llama_and_gpt2_bring_no_chat_defaults():
    """A Llama is prompted by its file's chat template (SmolLM2's brings ChatML and its system message); one
    without a template gets no family's guess, least of all SmolLM2's system message."""
    assert llama.FAMILY.chat == gpt2.FAMILY.chat == ChatDefaults(None, None)


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="unknown preset 'gpt5'; choose one of: gpt2, .*gpt-tiny"):
        preset_config("gpt5")
    assert preset_config("gpt-tiny", context_length=32).context_length == 32
