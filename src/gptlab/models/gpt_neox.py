"""GPT-NeoX and Pythia (EleutherAI, 2022-23): GPT-2's LayerNorms with biases and biased projections,
but rotary positions on a quarter of each head (`rotary_pct` 0.25), an exact (erf) GELU, an untied
output matrix (`embed_out`), and, in every published model, a parallel residual: attention and MLP
both read the block's input and are added to it together.

Hugging Face files keep q, k and v interleaved per head in `query_key_value` (rows: head, then
q | k | v, then the head's dimensions); our `attn.c_attn` stacks all queries, then all keys, then all
values, so import regroups the rows and export puts them back. llama.cpp's converter already
regroups them as we do, so GGUF import and export only rename.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gptlab.config import GPTConfig
from gptlab.models import gpt2
from gptlab.models.family import (
    Family,
    GGUFFormat,
    GGUFValue,
    HFFormat,
    block_parts,
    rope_from_hf,
    rope_to_hf,
    rotary_fraction_from_hf,
    split_parts,
    stack_parts,
)

if TYPE_CHECKING:
    from torch import Tensor

BLOCKS: dict[str, Any] = dict(positions="rope", norm="layernorm", mlp="gelu_exact", bias=True, qkv_bias=True)  # a NeoX
PRESETS: dict[str, dict[str, Any]] = {
    "pythia-tiny": dict(vocab_size=50257, context_length=256, n_layer=2, n_head=4, n_embd=64, mlp_hidden=256,
                        rotary_fraction=0.25, parallel_residual=True, tie_embeddings=False,
                        **BLOCKS),  # heads of 16, 4 dimensions rotating; for tests and pretraining on CPU
    "pythia-160m": dict(vocab_size=50304, context_length=2048, n_layer=12, n_head=12, n_embd=768, mlp_hidden=3072,
                        rotary_fraction=0.25, parallel_residual=True, tie_embeddings=False, **BLOCKS),
}
# Pythia's vocabulary (GPT-NeoX-20B's) is cut as GPT-2's, after composing the text to Unicode NFC (its
# tokenizer.json's normalizer). llama.cpp's converter knows a vocabulary by the ids it gives a test text, here
# OLMo 1's (which reuses this one), so GPT-NeoX GGUF files name this cut "olmo".
NEOX_SPLIT = replace(gpt2.GPT2_SPLIT, name="olmo")
HF_NAMES = {
    "wte": "gpt_neox.embed_in", "ln_f": "gpt_neox.final_layer_norm", "lm_head": "embed_out",
    "ln_1": "gpt_neox.layers.{i}.input_layernorm", "ln_2": "gpt_neox.layers.{i}.post_attention_layernorm",
    "qkv": "gpt_neox.layers.{i}.attention.query_key_value", "o": "gpt_neox.layers.{i}.attention.dense",
    "fc": "gpt_neox.layers.{i}.mlp.dense_h_to_4h", "down": "gpt_neox.layers.{i}.mlp.dense_4h_to_h",
}
GGUF_NAMES = {
    "wte": "token_embd", "ln_f": "output_norm", "lm_head": "output",
    "ln_1": "blk.{i}.attn_norm", "ln_2": "blk.{i}.ffn_norm", "qkv": "blk.{i}.attn_qkv", "o": "blk.{i}.attn_output",
    "fc": "blk.{i}.ffn_up", "down": "blk.{i}.ffn_down",
}
BUFFERS = (".attention.bias", ".attention.masked_bias", ".rotary_emb.inv_freq")  # masks and angles in old files


def config_from_hf(hf: dict[str, Any], source: str) -> GPTConfig:
    """Our config from a `GPTNeoXForCausalLM` config.json (transformers 4.x or 5.x spelling)."""
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported; GPT-NeoX's MLP uses gelu")
    if not hf.get("attention_bias", True):
        raise ValueError(f"{source}: attention_bias false is not supported; gptlab's GPT-NeoX has attention biases")
    theta, scaling = rope_from_hf({"rope_theta": hf.get("rotary_emb_base", 10000.0), **hf}, source)
    try:
        fields: dict[str, Any] = dict(
            vocab_size=hf["vocab_size"], context_length=hf["max_position_embeddings"],
            n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"], n_embd=hf["hidden_size"],
            mlp_hidden=hf["intermediate_size"], rope_theta=theta, rope_scaling=scaling,
            rotary_fraction=rotary_fraction_from_hf(hf, default=0.25), layer_norm_eps=hf.get("layer_norm_eps", 1e-5),
            parallel_residual=hf.get("use_parallel_residual", True),
            tie_embeddings=hf.get("tie_word_embeddings", False),
            name=hf.get("_name_or_path") or "hf-gpt_neox", family="gpt_neox",
        )
    except KeyError as err:
        raise ValueError(f"{source}: missing field {err} in the gpt_neox config") from None
    try:
        return GPTConfig(**fields, **BLOCKS)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A config.json that `transformers.GPTNeoXForCausalLM` reads (4.x and 5.x), in Pythia's own spelling."""
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.hidden_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "max_position_embeddings": config.context_length,
        "layer_norm_eps": config.layer_norm_eps,
        "rotary_pct": config.rotary_fraction,
        "rotary_emb_base": config.rope_theta,
        "rope_scaling": rope_to_hf(config)["rope_scaling"],
        "use_parallel_residual": config.parallel_residual,
        "hidden_act": "gelu",
        "attention_bias": True,
        "attention_dropout": 0.0,
        "hidden_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": config.tie_embeddings,
        "torch_dtype": "float32",
    }


def _regroup(qkv: Tensor, outer: int, inner: int) -> Tensor:
    """Rows (outer, inner, d) → (inner, outer, d) of a fused q/k/v weight or bias: (head, q|k|v) ↔ (q|k|v, head)."""
    return qkv.reshape(outer, inner, -1).transpose(0, 1).reshape(qkv.shape)


def _attention_rows(config: GPTConfig) -> list[str]:
    return [f"h.{i}.attn.c_attn.{kind}" for i in range(config.n_layer) for kind in ("weight", "bias")]


def hf_to_ours(hf_state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Rename, regroup each block's q/k/v rows from per-head to ours; drop old buffers and a tied head's copy.
    Takes the tensors out of `hf_state` (`stack_parts`: each is freed once renamed)."""
    for name in [n for n in hf_state if n.endswith(BUFFERS) or (n == "embed_out.weight" and config.head_is_tied)]:
        del hf_state[name]
    state = stack_parts(hf_state, block_parts(config, HF_NAMES))
    for name in _attention_rows(config):
        if name in state:  # else the shape check names what is missing
            state[name] = _regroup(state[name], config.n_head, 3)
    return state


def ours_to_hf(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """The inverse: q/k/v rows interleaved per head again, Hugging Face's names."""
    regrouped = {**state, **{name: _regroup(state[name], 3, config.n_head) for name in _attention_rows(config)}}
    return split_parts(regrouped, block_parts(config, HF_NAMES))


def config_from_gguf(meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str) -> GPTConfig:
    """Our config from a gptneox GGUF file; llama.cpp writes neither the vocabulary size (the embedding's rows
    give it) nor the rotary base (Pythia's 10,000, unless the file says otherwise)."""
    own = {key.removeprefix("gptneox."): value for key, value in meta.items() if key.startswith("gptneox.")}
    try:
        n_embd, n_head = int(own["embedding_length"]), int(own["attention.head_count"])
        fields: dict[str, Any] = dict(
            vocab_size=shapes["token_embd.weight"][0], context_length=int(own["context_length"]),
            n_layer=int(own["block_count"]), n_head=n_head, n_embd=n_embd, mlp_hidden=int(own["feed_forward_length"]),
            rotary_fraction=int(own["rope.dimension_count"]) / (n_embd // n_head),
            rope_theta=float(own.get("rope.freq_base", 10000.0)),
            layer_norm_eps=float(own["attention.layer_norm_epsilon"]),
            parallel_residual=bool(own.get("use_parallel_residual", True)),
            tie_embeddings="output.weight" not in shapes, name=str(meta.get("general.name", "gguf")), family="gpt_neox",
        )
    except KeyError as err:
        key = err.args[0] if err.args[0] == "token_embd.weight" else f"gptneox.{err.args[0]}"
        raise ValueError(f"{source}: missing {key!r} of a gptneox model") from None
    try:
        return GPTConfig(**fields, **BLOCKS)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def gguf_to_ours(tensors: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Rename only: llama.cpp's converter has already stacked q/k/v as we do."""
    return stack_parts(tensors, block_parts(config, GGUF_NAMES))


def config_to_gguf(config: GPTConfig) -> dict[str, GGUFValue]:
    """The `gptneox.…` metadata llama.cpp reads (its converter's keys, and the rotary base, which it reads where
    given); a rotary scaling, which llama.cpp's gptneox converter never writes, is refused."""
    if config.rope_scaling is not None:
        raise ValueError(f"a GPT-NeoX model with {config.rope_scaling.kind} rotary scaling has no GGUF form gptlab "
                         "writes (llama.cpp's gptneox files carry none)")
    meta: dict[str, GGUFValue] = {
        "context_length": config.context_length, "embedding_length": config.n_embd, "block_count": config.n_layer,
        "feed_forward_length": config.hidden_size, "rope.dimension_count": config.rotary_dims,
        "rope.freq_base": config.rope_theta, "attention.head_count": config.n_head,
        "use_parallel_residual": config.parallel_residual, "attention.layer_norm_epsilon": config.layer_norm_eps,
    }
    return {f"gptneox.{key}": value for key, value in meta.items()}


def ours_to_gguf(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """llama.cpp's names, with the `output` tensor its gptneox always has (the embedding, when tied)."""
    tensors = split_parts(state, block_parts(config, GGUF_NAMES))
    tensors.setdefault("output.weight", tensors["token_embd.weight"])
    return tensors


FAMILY = Family(
    name="gpt_neox",
    vocabulary="file",
    hf=HFFormat(("gpt_neox",), config_from_hf, config_to_hf, hf_to_ours, ours_to_hf),
    gguf=GGUFFormat(("gptneox",), config_from_gguf, gguf_to_ours, config_to_gguf, ours_to_gguf),
    presets=PRESETS,
    pre_tokenizers=(NEOX_SPLIT,),
)
