"""Qwen3-MoE against `transformers` (see `family_checks`): a tiny random mixture (4 experts, 2 per token)
read from the hub's per-expert layout, from transformers 5's fused expert stacks and from a GGUF written
as llama.cpp writes qwen3moe; what it refuses; LoRA's default targets on a mixture; an int8 load."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from family_checks import check_family, prompt_ids, save_tiny, transformers_model
from gguf_files import hf_state, llama_cpp_metadata, llama_cpp_names, write_gguf
from gptlab.config import Experts
from gptlab.generation import GenerationSettings, generate
from gptlab.loading import load_model
from gptlab.lora import LoRALinear, LoRASettings, apply_lora
from gptlab.model import GPT, MixtureOfExperts
from gptlab.models import preset_config
from gptlab.quantize import Int8Linear

SHAPE = dict(vocab_size=1024, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=32, num_experts=4, num_experts_per_tok=2,
             norm_topk_prob=True, max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=False,
             rope_theta=1e6)  # `small_tokenizer_json`'s vocabulary; heads 4 x 32 in a 64-wide stream; int4 fits


@pytest.fixture(scope="module")
def folder(tmp_path_factory, small_tokenizer_json):
    from transformers import Qwen3MoeConfig

    return save_tiny(tmp_path_factory.mktemp("qwen3-moe"), Qwen3MoeConfig(**SHAPE), small_tokenizer_json)


def logits_difference(spec: str, folder) -> float:
    ids = torch.tensor([prompt_ids(SHAPE["vocab_size"])])
    with torch.no_grad():
        return (load_model(spec).model(ids) - transformers_model(folder)(ids).logits).abs().max().item()


def test_matches_transformers_and_exports_the_hub_layout(folder, tmp_path):
    config = check_family(folder, tmp_path, "qwen3_moe").model.config
    assert (config.experts, config.head_dim, config.qk_norm) == (Experts(4, 2, 32, normalize=True), 32, "head")
    exported = hf_state(tmp_path / "exported")
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in exported  # one tensor per expert, as the hub's
    assert not any(name.endswith("gate_up_proj") for name in exported)


@pytest.mark.parametrize("normalize", [True, False])
def test_the_mixture_block_equals_transformers_sparse_block(normalize):
    """Routing alone, both ways transformers weighs the chosen experts (`norm_topk_prob`)."""
    from transformers import Qwen3MoeConfig
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

    torch.manual_seed(0)
    theirs = Qwen3MoeSparseMoeBlock(Qwen3MoeConfig(**{**SHAPE, "norm_topk_prob": normalize}))
    ours = MixtureOfExperts(preset_config("qwen3-moe-tiny", experts=Experts(4, 2, 32, normalize)))
    with torch.no_grad():
        for param in theirs.parameters():
            param.normal_(0.0, 0.5)
        ours.router.weight.copy_(theirs.gate.weight)
        for e, expert in enumerate(ours.experts):
            expert.c_fc.weight.copy_(theirs.experts.gate_up_proj[e])
            expert.c_proj.weight.copy_(theirs.experts.down_proj[e])
        x = torch.randn(2, 10, 64)
        torch.testing.assert_close(ours(x), theirs(x))  # float32's tolerance: outputs reach 40


def test_flops_count_the_active_experts_only():
    def flops(count: int) -> int:
        return GPT(preset_config("qwen3-moe-tiny", experts=Experts(count, 2, 32))).flops_per_token(64)

    assert flops(4) - flops(2) == 2 * 2 * (4 - 2) * 64  # 2 blocks' routers score 2 more experts; none runs more


def test_reads_transformers_fused_expert_stacks(folder, tmp_path):
    state = transformers_model(folder).state_dict()  # transformers 5 holds experts fused: (E, 2I, H), (E, H, I)
    assert tuple(state["model.layers.0.mlp.experts.gate_up_proj"].shape) == (4, 64, 64)
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(tmp_path / "model.safetensors"))
    for name in ("config.json", "tokenizer.json"):
        shutil.copyfile(folder / name, tmp_path / name)
    assert logits_difference(str(tmp_path), folder) < 1e-4


def test_gguf_as_llama_cpp_writes_it_loads_with_equal_logits(folder, tmp_path):
    """llama.cpp's converter stacks each projection's experts into one (E, out, in) tensor, then renames
    with gguf's own name map; q/k rows keep Hugging Face's order for Qwen."""
    state = hf_state(folder)
    for i in range(SHAPE["num_hidden_layers"]):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            pieces = [state.pop(f"model.layers.{i}.mlp.experts.{e}.{proj}.weight") for e in range(4)]
            state[f"model.layers.{i}.mlp.experts.{proj}.weight"] = torch.stack(pieces)
    tensors = llama_cpp_names(state, "qwen3moe", SHAPE["num_hidden_layers"])
    assert tuple(tensors["blk.0.ffn_gate_exps.weight"].shape) == (4, 32, 64) and "blk.1.ffn_gate_inp.weight" in tensors
    metadata = {**llama_cpp_metadata(folder), "expert_count": 4, "expert_used_count": 2,
                "expert_feed_forward_length": 32}
    path = write_gguf(tmp_path / "tiny.gguf", "qwen3moe", metadata, tensors, folder / "tokenizer.json")
    assert logits_difference(str(path), folder) < 1e-4


@pytest.mark.parametrize("change, message", [
    ({"mlp_only_layers": [1]}, "dense MLP blocks among the experts"),
    ({"decoder_sparse_step": 2}, "dense MLP blocks among the experts"),
    ({"shared_expert_intermediate_size": 64}, "shared experts"),
    ({"num_experts_per_tok": 5}, "1 <= active <= count"),
])
def test_refuses_what_it_cannot_run_in_one_line(folder, tmp_path, change, message):
    hf = {**json.loads((folder / "config.json").read_text()), **change}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match=message) as err:
        load_model(str(tmp_path))
    assert str(tmp_path / "config.json") in str(err.value) and "\n" not in str(err.value)


def test_reads_a_window_over_every_block_only_when_it_is_switched_on():
    from gptlab.models.qwen3_moe import config_from_hf

    hf = {**SHAPE, "sliding_window": 16, "model_type": "qwen3_moe"}
    assert config_from_hf(hf, "config.json").sliding_window is None
    windowed = config_from_hf({**hf, "use_sliding_window": True}, "config.json")
    assert (windowed.sliding_window, windowed.sliding_layers) == (16, None)


def test_lora_adapts_attention_by_default_not_the_experts():
    model = GPT(preset_config("qwen3-moe-tiny"))
    apply_lora(model, LoRASettings(rank=4))
    wrapped = sorted(name for name, module in model.named_modules() if isinstance(module, LoRALinear))
    assert wrapped == sorted(f"h.{i}.attn.{proj}" for i in range(2) for proj in ("c_attn", "c_proj"))


def test_int8_quantizes_the_experts_keeps_the_router_float_and_generates(folder):
    ids = prompt_ids(SHAPE["vocab_size"])
    quantized = load_model(str(folder), quantize="int8").model
    mixture = quantized.h[0].mlp
    assert isinstance(mixture.experts[3].c_fc, Int8Linear) and isinstance(mixture.experts[3].c_proj, Int8Linear)
    assert type(mixture.router) is not Int8Linear and isinstance(mixture.router, nn.Linear)
    with torch.no_grad():
        reference = load_model(str(folder)).model(torch.tensor([ids])).softmax(-1)
        got = quantized(torch.tensor([ids])).float().softmax(-1)
    assert (got - reference).abs().sum(-1).max() < 0.35  # total variation per position (measured 0.14)
    assert len(list(generate(quantized, ids, GenerationSettings(max_new_tokens=5, temperature=0)))) == 5
