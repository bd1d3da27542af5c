"""Llama 3.x, Qwen2/2.5, Qwen3 and Mistral against `transformers` (see `family_checks`): tiny random
models with each family's distinguishing blocks switched on."""

from __future__ import annotations

import pytest

from family_checks import check_cli_greedy, check_family, save_tiny

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


@pytest.mark.parametrize("kind", ["llama3", "mistral"])
def test_generate_cli_matches_transformers_greedy(kind, tmp_path, hf_smollm2):
    make_config, _ = FAMILIES[kind]
    check_cli_greedy(save_tiny(tmp_path / kind, make_config(), hf_smollm2 / "tokenizer.json"))
