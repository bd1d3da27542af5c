"""Phi-3 / Phi-4-mini against `transformers` (see `family_checks`): fused qkv_proj and gate_up_proj, half of
each head rotating, a sliding window over every block; the same weights as llama.cpp's phi3 GGUF; longrope
refused in one line."""

from __future__ import annotations

import json

import pytest
import torch

from family_checks import check_family, prompt_ids, save_tiny, transformers_model
from gguf_files import hf_state, write_gguf
from gptlab.loading import load_model
from gptlab.models import phi3

SHAPE = dict(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5)  # SmolLM2's vocabulary
GGUF_ROLES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.qkv_proj": "attn_qkv",
              "self_attn.o_proj": "attn_output", "mlp.gate_up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


@pytest.fixture(scope="module")
def phi3_folder(tmp_path_factory, hf_smollm2):
    """Heads of 16 with 8 rotating dimensions, every block windowed over 8 keys, an untied head."""
    from transformers import Phi3Config

    config = Phi3Config(**SHAPE, partial_rotary_factor=0.5, sliding_window=8, tie_word_embeddings=False,
                        rope_theta=10000.0, pad_token_id=0)
    return save_tiny(tmp_path_factory.mktemp("phi3") / "phi3", config, hf_smollm2 / "tokenizer.json")


def test_phi3_matches_transformers(phi3_folder, tmp_path):
    config = check_family(phi3_folder, tmp_path, "phi3").model.config
    assert (config.rotary_dims, config.sliding_window, config.sliding_layers) == (8, 8, None)
    exported = json.loads((tmp_path / "exported" / "config.json").read_text())
    assert (exported["partial_rotary_factor"], exported["sliding_window"]) == (0.5, 8)


def test_phi3_gguf_loads_with_equal_logits(phi3_folder, tmp_path, hf_smollm2):
    """As llama.cpp's converter writes phi3: fused tensors kept as they are, no q/k permutation."""
    tensors = {"token_embd.weight": None, "output_norm.weight": None, "output.weight": None}
    renamed = dict(zip(["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"], tensors))
    for name, tensor in hf_state(phi3_folder).items():
        if name in renamed:
            tensors[renamed[name]] = tensor
            continue
        block, role = name.split(".")[2], ".".join(name.split(".")[3:]).removesuffix(".weight")
        tensors[f"blk.{block}.{GGUF_ROLES[role]}.weight"] = tensor
    meta = {"context_length": 128, "embedding_length": 64, "feed_forward_length": 96, "block_count": 2,
            "attention.head_count": 4, "attention.head_count_kv": 2, "attention.layer_norm_rms_epsilon": 1e-5,
            "rope.dimension_count": 8, "rope.freq_base": 10000.0, "attention.sliding_window": 8,
            "rope.scaling.original_context_length": 128}
    path = write_gguf(tmp_path / "phi3.gguf", "phi3", meta, tensors, hf_smollm2 / "tokenizer.json")
    loaded = load_model(str(path))
    assert (loaded.model.config.family, loaded.model.config.rotary_dims, loaded.model.config.sliding_window) == (
        "phi3", 8, 8)
    ids = prompt_ids(49152)
    with torch.no_grad():
        theirs = transformers_model(phi3_folder)(torch.tensor([ids])).logits
        assert (loaded.model(torch.tensor([ids])) - theirs).abs().max() < 1e-4


def test_longrope_is_refused_in_one_line(phi3_folder, tmp_path):
    folder = tmp_path / "phi3-128k"
    folder.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (folder / name).symlink_to(phi3_folder / name)
    config = json.loads((phi3_folder / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                 "long_factor": [1.0] * 4, "short_factor": [1.0] * 4}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: rope scaling 'longrope' is not supported") as err:
        load_model(str(folder))
    assert "\n" not in str(err.value)


def test_longrope_gguf_is_refused_in_one_line():
    """llama.cpp writes longrope's factors as tensors (rope_factors_long/short) and no scaling type."""
    meta = {"phi3.embedding_length": 64, "phi3.attention.head_count": 4}
    shapes = {"token_embd.weight": (49152, 64), "rope_factors_long.weight": (4,), "rope_factors_short.weight": (4,)}
    with pytest.raises(ValueError, match=r"^phi3-128k\.gguf: longrope .* is not supported yet$"):
        phi3.FAMILY.gguf.read_config(meta, shapes, "phi3-128k.gguf")
