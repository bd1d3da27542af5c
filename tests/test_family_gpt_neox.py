"""GPT-NeoX / Pythia against `transformers` (see `family_checks`): q/k/v interleaved per head, a quarter of each
head rotating, LayerNorms and projections with biases, exact GELU, parallel and sequential residuals; the same
weights as llama.cpp's gptneox GGUF; what gptlab's GPT-NeoX lacks refused in one line."""

from __future__ import annotations

import pytest
import torch

from family_checks import check_family, prompt_ids, save_tiny, transformers_model
from gguf_files import hf_state, write_gguf
from gptlab.loading import load_model
from gptlab.models import gpt_neox

SHAPE = dict(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=128, layer_norm_eps=1e-5, rotary_pct=0.25, rotary_emb_base=10000,
             tie_word_embeddings=False)  # heads of 16, 4 dimensions rotating; SmolLM2's vocabulary
HEADS, WIDTH = 4, 64
GGUF_ROLES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
              "attention.query_key_value": "attn_qkv", "attention.dense": "attn_output",
              "mlp.dense_h_to_4h": "ffn_up", "mlp.dense_4h_to_h": "ffn_down"}
OUTSIDE = {"gpt_neox.embed_in": "token_embd", "gpt_neox.final_layer_norm": "output_norm", "embed_out": "output"}


def save_neox(folder, tokenizer_json, parallel: bool = True):
    from transformers import GPTNeoXConfig

    return save_tiny(folder, GPTNeoXConfig(**SHAPE, use_parallel_residual=parallel), tokenizer_json)


@pytest.mark.parametrize("parallel", [True, False])
def test_gpt_neox_matches_transformers(parallel, tmp_path, hf_smollm2):
    folder = save_neox(tmp_path / "neox", hf_smollm2 / "tokenizer.json", parallel)
    config = check_family(folder, tmp_path, "gpt_neox").model.config
    assert (config.rotary_dims, config.parallel_residual, config.bias, config.mlp) == (4, parallel, True, "gelu_exact")


def llama_cpp_tensors(folder) -> dict[str, torch.Tensor]:
    """The folder's tensors as llama.cpp's converter writes them: renamed, each block's q/k/v rows taken out of
    their per-head interleaving into all q, all k, all v."""
    tensors = {}
    for name, tensor in hf_state(folder).items():
        stem, kind = name.rsplit(".", 1)
        if stem in OUTSIDE:
            tensors[f"{OUTSIDE[stem]}.{kind}"] = tensor
            continue
        block, role = stem.split(".")[2], ".".join(stem.split(".")[3:])
        if role == "attention.query_key_value":
            tensor = tensor.reshape(HEADS, 3, -1).transpose(0, 1).reshape(tensor.shape)
        tensors[f"blk.{block}.{GGUF_ROLES[role]}.{kind}"] = tensor
    return tensors


def test_gptneox_gguf_loads_with_equal_logits(tmp_path, hf_smollm2):
    folder = save_neox(tmp_path / "neox", hf_smollm2 / "tokenizer.json")
    meta = {"context_length": 128, "embedding_length": WIDTH, "block_count": 2, "feed_forward_length": 128,
            "rope.dimension_count": 4, "attention.head_count": HEADS, "use_parallel_residual": True,
            "attention.layer_norm_epsilon": 1e-5}
    path = write_gguf(tmp_path / "neox.gguf", "gptneox", meta, llama_cpp_tensors(folder), hf_smollm2 / "tokenizer.json")
    loaded = load_model(str(path))
    assert (loaded.model.config.family, loaded.model.config.rotary_dims, loaded.model.config.tie_embeddings) == (
        "gpt_neox", 4, False)
    ids = prompt_ids(49152)
    with torch.no_grad():
        theirs = transformers_model(folder)(torch.tensor([ids])).logits
        assert (loaded.model(torch.tensor([ids])) - theirs).abs().max() < 1e-4


def pythia_config(**changes) -> dict:
    """A Pythia config.json in transformers 4.x's spelling, as the published models have it."""
    return {"model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": 768, "intermediate_size": 3072,
            "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 2048, "rotary_pct": 0.25,
            "rotary_emb_base": 10000, "use_parallel_residual": True, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
            "tie_word_embeddings": False, **changes}


def test_pythia_config_reads_as_the_preset():
    from gptlab.models import preset_config

    config = gpt_neox.FAMILY.hf.read_config(pythia_config(), "pythia-160m/config.json")
    assert config == preset_config("pythia-160m") and config.rotary_dims == 16


@pytest.mark.parametrize(("changes", "message"), [
    ({"hidden_act": "relu"}, "hidden_act 'relu' is not supported"),
    ({"attention_bias": False}, "attention_bias false is not supported"),
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, "rope scaling 'dynamic' is not supported"),
    ({"hidden_size": None}, "missing field 'hidden_size'"),
])
def test_what_gptlab_lacks_is_refused_in_one_line(changes, message):
    hf = {key: value for key, value in pythia_config(**changes).items() if value is not None}
    with pytest.raises(ValueError, match=rf"^pythia/config\.json: {message}[^\n]*$"):
        gpt_neox.FAMILY.hf.read_config(hf, "pythia/config.json")
