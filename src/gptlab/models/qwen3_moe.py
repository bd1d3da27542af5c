"""Qwen3-MoE (Alibaba, 2025): Qwen3 whose every MLP is a mixture of experts. A router (`mlp.gate`, a
linear map to one score per expert) picks for each token the experts its softmax ranks highest
(Qwen3-30B-A3B: 8 of 128, each a SwiGLU MLP 768 wide); their outputs are summed, weighted by those
probabilities, renormalised over the chosen few when `norm_topk_prob` says so.

The experts come in three layouts: one tensor per expert and projection (`mlp.experts.{e}.gate_proj`,
as the hub's files and transformers' `save_pretrained` write them), transformers 5's fused stacks
(`mlp.experts.gate_up_proj` (E, 2I, H) and `mlp.experts.down_proj` (E, H, I), as it holds them in
memory), and llama.cpp's stacks (`ffn_gate_exps`, `ffn_up_exps`, `ffn_down_exps`, (E, out, in)).
Import cuts every stack into the experts our GPT keeps one by one; Hugging Face export writes the hub's
layout, GGUF export llama.cpp's stacks.
llama.cpp keeps Hugging Face's rotary "halves" for Qwen, so GGUF q/k rows need no unpermuting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gptlab.config import Experts, GPTConfig
from gptlab.models import llama, qwen3
from gptlab.models.family import (
    ChatDefaults,
    Family,
    GGUFFormat,
    GGUFValue,
    HFFormat,
    Names,
    block_parts,
    check_piece,
    piece_shapes,
    split_parts,
    stack_parts,
    window_from_hf,
)

if TYPE_CHECKING:
    from torch import Tensor

PRESETS: dict[str, dict[str, Any]] = {
    "qwen3-moe-tiny": dict(vocab_size=50257, context_length=256, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                           head_size=32, experts=Experts(count=4, active=2, hidden=32), rope_theta=1e6,
                           layer_norm_eps=1e-6, tie_embeddings=False,
                           **llama.BLOCKS, **qwen3.BLOCKS),  # for tests and pretraining on CPU, GPT-2's vocabulary
    "qwen3-30b-a3b": dict(vocab_size=151936, context_length=40960, n_layer=48, n_head=32, n_kv_head=4, n_embd=2048,
                          head_size=128, experts=Experts(count=128, active=8, hidden=768), rope_theta=1e6,
                          layer_norm_eps=1e-6, tie_embeddings=False, **llama.BLOCKS, **qwen3.BLOCKS),
}
# Llama's names plus the mixture's: the router and each expert's projections ("{e}" is the expert).
HF_NAMES = {**llama.HF_NAMES, "router": "model.layers.{i}.mlp.gate",
            "expert_gate": "model.layers.{i}.mlp.experts.{e}.gate_proj",
            "expert_up": "model.layers.{i}.mlp.experts.{e}.up_proj",
            "expert_down": "model.layers.{i}.mlp.experts.{e}.down_proj"}
GGUF_NAMES = {**llama.GGUF_NAMES, "router": "blk.{i}.ffn_gate_inp",  # the experts: llama.cpp's stacks, cut up
              "expert_gate": "blk.{i}.ffn_gate_exps.{e}", "expert_up": "blk.{i}.ffn_up_exps.{e}",
              "expert_down": "blk.{i}.ffn_down_exps.{e}"}
# A stacked tensor's name ending → the endings of the pieces each expert's slice is cut into (along rows).
HF_STACKS = {".experts.gate_up_proj": (".experts.{e}.gate_proj.weight", ".experts.{e}.up_proj.weight"),
             ".experts.down_proj": (".experts.{e}.down_proj.weight",)}
GGUF_EXPERT_STACKS = ("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")  # llama.cpp's, each (E, out, in)
GGUF_STACKS = {f".{stack}.weight": (f".{stack}.{{e}}.weight",) for stack in GGUF_EXPERT_STACKS}
SHARED_EXPERTS = ("shared_expert_intermediate_size", "n_shared_experts", "num_shared_experts")


def config_from_hf(hf: dict[str, Any], source: str) -> GPTConfig:
    """Our config from a `Qwen3MoeForCausalLM` config.json; dense MLP blocks among the mixtures and
    shared experts are refused."""
    _refuse_what_we_lack(hf, source)
    try:
        experts = Experts(count=hf["num_experts"] if "num_experts" in hf else hf["num_local_experts"],
                          active=hf["num_experts_per_tok"], hidden=hf["moe_intermediate_size"],
                          normalize=bool(hf.get("norm_topk_prob", False)))  # transformers' default: False
    except KeyError as err:
        raise ValueError(f"{source}: missing field {err} in the qwen3_moe config") from None
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    window = window_from_hf(hf if hf.get("use_sliding_window") else {}, hf.get("num_hidden_layers", 0))
    return llama.config_from_hf(hf, source, "qwen3_moe", experts=experts, **qwen3.BLOCKS, **window)


def _refuse_what_we_lack(hf: dict[str, Any], source: str) -> None:
    if hf.get("mlp_only_layers") or hf.get("decoder_sparse_step", 1) != 1:
        raise ValueError(f"{source}: mlp_only_layers {hf.get('mlp_only_layers')} / decoder_sparse_step "
                         f"{hf.get('decoder_sparse_step')} put dense MLP blocks among the experts; gptlab's Qwen3-MoE "
                         "has experts in every block (mlp_only_layers [] and decoder_sparse_step 1)")
    shared = [key for key in SHARED_EXPERTS if hf.get(key)]
    if shared:
        raise ValueError(f"{source}: shared experts ({shared[0]} {hf[shared[0]]}) are not supported; gptlab's "
                         "Qwen3-MoE routes every token through its chosen experts only")


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A config.json that `transformers.Qwen3MoeForCausalLM` reads: experts in every block."""
    experts = config.experts
    if experts is None or config.sliding_layers is not None:
        raise ValueError("a Qwen3-MoE model has experts in every block and a window in all of them or none")
    return {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", **llama.hf_fields(config),
            "num_experts": experts.count, "num_experts_per_tok": experts.active,
            "moe_intermediate_size": experts.hidden, "norm_topk_prob": experts.normalize,
            "decoder_sparse_step": 1, "mlp_only_layers": [], "use_sliding_window": config.sliding_window is not None,
            "sliding_window": config.sliding_window}


def per_expert(state: dict[str, Tensor], stacks: Mapping[str, tuple[str, ...]], config: GPTConfig,
               names: Names) -> dict[str, Tensor]:
    """`state`, changed in place, with every stack of experts (E, rows, in) cut into one tensor per expert
    and piece: a stack named `<prefix><ending>` becomes `<prefix><piece>` for each of `stacks[ending]`,
    its rows split evenly among the pieces (transformers' fused gate/up: gate rows first). Each stack is
    checked whole first, against the shape its pieces (as `names` spells them) make up. The pieces are
    views, so a stack is freed once `stack_parts` has taken every piece of it."""
    shapes = piece_shapes(block_parts(config, names))
    count = config.experts.count if config.experts is not None else 0
    for name in [name for name in state if name.endswith(tuple(stacks))]:
        ending = next(end for end in stacks if name.endswith(end))
        prefix, pieces, stack = name[: -len(ending)], stacks[ending], state.pop(name)
        first = [prefix + piece.format(e=0) for piece in pieces]  # expert 0's pieces, each (rows, in)
        if all(piece in shapes for piece in first):  # else no block has it: left for the key check to name
            check_piece(name, stack, (count, sum(shapes[piece][0] for piece in first), *shapes[first[0]][1:]))
        for e, expert in enumerate(stack):  # (rows, in)
            for piece, rows in zip(pieces, expert.chunk(len(pieces))):
                state[prefix + piece.format(e=e)] = rows
    return state


def hf_to_ours(hf_state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Our tensors from the hub's per-expert layout or transformers 5's fused stacks."""
    return llama.hf_to_ours(per_expert(hf_state, HF_STACKS, config, HF_NAMES), config, HF_NAMES)


def ours_to_hf(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """The hub's layout: one tensor per expert and projection (transformers 5 loads it, fusing them itself)."""
    return llama.ours_to_hf(state, config, HF_NAMES)


def config_from_gguf(meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str) -> GPTConfig:
    """Our config from a qwen3moe GGUF file: Llama's keys plus the experts'. llama.cpp always
    renormalises the chosen experts' weights for this architecture, so the file does not say."""
    try:
        count, active = int(meta["qwen3moe.expert_count"]), int(meta["qwen3moe.expert_used_count"])
        hidden = meta.get("qwen3moe.expert_feed_forward_length") or int(meta["qwen3moe.feed_forward_length"]) // active
        experts = Experts(count=count, active=active, hidden=int(hidden), normalize=True)
    except KeyError as err:
        raise ValueError(f"{source}: missing metadata {err} of a qwen3moe model") from None
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    return llama.config_from_gguf(meta, shapes, source, "qwen3moe", "qwen3_moe", experts=experts, **qwen3.BLOCKS)


def gguf_to_ours(tensors: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Cut llama.cpp's expert stacks per expert, then stack q/k/v and gate/up as for Hugging Face (q/k
    rows as they are: llama.cpp rotates Qwen's as halves)."""
    return stack_parts(per_expert(tensors, GGUF_STACKS, config, GGUF_NAMES), block_parts(config, GGUF_NAMES))


def config_to_gguf(config: GPTConfig) -> dict[str, GGUFValue]:
    """The `qwen3moe.…` metadata llama.cpp reads: Llama's keys plus the experts' (its converter's). llama.cpp
    always renormalises the chosen experts' weights, so a model that does not is refused."""
    experts = config.experts
    if experts is None or not experts.normalize:
        raise ValueError("a Qwen3-MoE model that weighs its chosen experts without renormalising them "
                         "(norm_topk_prob false) has no GGUF form: llama.cpp's qwen3moe always renormalises")
    return {**llama.config_to_gguf(config, "qwen3moe"), "qwen3moe.expert_count": experts.count,
            "qwen3moe.expert_used_count": experts.active, "qwen3moe.expert_feed_forward_length": experts.hidden}


def ours_to_gguf(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """llama.cpp's tensors: q/k/v and gate/up split (q/k rows as they are), each projection's experts stacked
    into one (E, out, in) tensor: the inverse of `gguf_to_ours`."""
    import torch  # here: the families' data is read where torch is not imported

    tensors = split_parts(state, block_parts(config, GGUF_NAMES))
    count = config.experts.count if config.experts is not None else 0
    for i in range(config.n_layer):
        for stack in GGUF_EXPERT_STACKS:
            pieces = [tensors.pop(f"blk.{i}.{stack}.{e}.weight") for e in range(count)]
            tensors[f"blk.{i}.{stack}.weight"] = torch.stack(pieces)
    return tensors


FAMILY = Family(
    name="qwen3_moe",
    vocabulary="file",
    hf=HFFormat(("qwen3_moe",), config_from_hf, config_to_hf, hf_to_ours, ours_to_hf),
    gguf=GGUFFormat(("qwen3moe",), config_from_gguf, gguf_to_ours, config_to_gguf, ours_to_gguf),
    presets=PRESETS,
    chat=ChatDefaults(prompt_style="chatml"),
)
