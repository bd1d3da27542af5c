"""Llama 3.x, Qwen2/2.5, Qwen3 and Mistral against `transformers` (see `family_checks`): tiny random
models with each family's distinguishing blocks switched on."""

from __future__ import annotations

import json

import pytest

from family_checks import check_family, save_tiny

SHAPE = dict(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5)  # SmolLM2's vocabulary


def llama3_config():
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPE, tie_word_embeddings=True, rope_theta=500000.0,
                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 16})


def llama_linear_config():
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPE, rope_theta=10000.0, rope_scaling={"rope_type": "linear", "factor": 4.0})


def qwen2_config():
    from transformers import Qwen2Config

    return Qwen2Config(**SHAPE, tie_word_embeddings=True, rope_theta=1e6, use_sliding_window=True, sliding_window=8,
                       max_window_layers=1)  # blocks 1 and 2 windowed


def qwen3_config():
    from transformers import Qwen3Config

    return Qwen3Config(**SHAPE, head_dim=32, tie_word_embeddings=False, rope_theta=1e6)  # heads 4 x 32 in a 64 stream


def mistral_config():
    from transformers import MistralConfig

    return MistralConfig(**SHAPE, sliding_window=8, tie_word_embeddings=False, rope_theta=1e4)


FAMILIES = {"llama3": (llama3_config, "llama"), "llama-linear": (llama_linear_config, "llama"),
            "qwen2": (qwen2_config, "qwen2"), "qwen3": (qwen3_config, "qwen3"), "mistral": (mistral_config, "mistral")}


@pytest.mark.parametrize("kind", FAMILIES)
def test_family_matches_transformers(kind, tmp_path, hf_smollm2):
    make_config, family = FAMILIES[kind]
    folder = save_tiny(tmp_path / kind, make_config(), hf_smollm2 / "tokenizer.json")
    config = check_family(folder, tmp_path, family).model.config
    if kind == "qwen2":
        assert (config.qkv_bias, config.bias, config.sliding_window, config.sliding_layers) == (True, False, 8, (1, 2))
    if kind == "qwen3":
        assert (config.head_dim, config.qk_norm) == (32, "head")


def test_a_sentencepiece_llama2_folder_prompts_after_bos_as_transformers(tmp_path):
    """A Llama-2-style folder (SentencePiece BPE whose post-processor puts <s> first): `gptlab generate` reads
    the prompt as HF's tokenizer does by default, BOS first, and continues it as transformers does."""
    from tokenizers import Tokenizer
    from transformers import LlamaConfig

    from e2e.commands import gptlab
    from family_checks import NEW_TOKENS, transformers_greedy
    from gptlab.files import fetch
    from sentencepiece_vocab import save_kind, trained_vocabulary

    tokenizer_json = save_kind(trained_vocabulary(fetch("the-verdict").read_text(encoding="utf-8")), "llama2",
                               tmp_path / "tokenizer")
    vocab_size = Tokenizer.from_file(str(tokenizer_json)).get_vocab_size()
    folder = save_tiny(tmp_path / "llama2", LlamaConfig(**{**SHAPE, "vocab_size": vocab_size}), tokenizer_json)
    prompt = "The picture was"
    ids = Tokenizer.from_file(str(tokenizer_json)).encode(prompt).ids
    assert ids[0] == 1  # <s>
    out = gptlab("generate", "--model", str(folder), "--prompt", prompt, "--temperature", "0",
                 "--max-new-tokens", str(NEW_TOKENS), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["completion_ids"] == transformers_greedy(folder, ids)


def test_a_config_eos_id_the_tokenizer_lacks_is_not_its_end_of_text(tmp_path, hf_smollm2):
    """Olmo2Config's default eos_token_id (50279) in a folder whose tokenizer has 49,152 tokens: the folder
    loads with no end-of-text id from it, and exports (it crashed writing tokenizer_config.json)."""
    from transformers import LlamaConfig

    from gptlab.checkpoint.hf import export_hf_folder
    from gptlab.loading import load_model

    folder = save_tiny(tmp_path / "llama", LlamaConfig(**SHAPE, eos_token_id=50279), hf_smollm2 / "tokenizer.json")
    loaded = load_model(str(folder))
    assert loaded.tokenizer.eos_id is None
    export_hf_folder(loaded.model, tmp_path / "exported", loaded.tokenizer)
    assert load_model(str(tmp_path / "exported")).tokenizer.encode("Hi there") == loaded.tokenizer.encode("Hi there")


@pytest.mark.parametrize("preset", ["qwen3-tiny", "gemma3-tiny"])
def test_a_config_missing_a_required_field_is_one_line_naming_it(preset, tmp_path):
    from gptlab.models import family_of, preset_config

    config = preset_config(preset)
    written = family_of(config).hf.write_config(config)
    del written["num_hidden_layers"]
    (tmp_path / "config.json").write_text(json.dumps(written))
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'config.json'}: missing field 'num_hidden_layers' in the "
                                         rf"{config.family} config$"):
        family_of(config).hf.read_config(written, str(tmp_path / "config.json"))
