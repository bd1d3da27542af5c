"""Llama-family models (Llama, SmolLM2): rotary positions, RMSNorm, a SwiGLU MLP, grouped-query
attention and no biases, as `GPTConfig` swaps of the one `GPT` class.

Hugging Face and GGUF files keep q/k/v and gate/up as separate matrices; our GPT fuses them
(`attn.c_attn`, `mlp.c_fc`), so import stacks them and export splits them again. Hugging Face
rotates "halves" as our RoPE does; llama.cpp interleaves the q/k rows, which GGUF import undoes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gptlab.config import GPTConfig, RopeScaling
from gptlab.models.family import (
    Family,
    GGUFFormat,
    GGUFValue,
    HFFormat,
    Names,
    PreTokenizer,
    block_parts,
    check_piece,
    piece_shapes,
    regex_cut,
    rope_from_hf,
    rope_to_hf,
    split_parts,
    stack_parts,
)

if TYPE_CHECKING:
    from torch import Tensor

BLOCKS = dict(positions="rope", norm="rmsnorm", mlp="swiglu", bias=False, qkv_bias=False)  # what makes a Llama
LLAMA3_ROPE = RopeScaling("llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_context=8192)
PRESETS: dict[str, dict[str, Any]] = {
    "llama-tiny": dict(vocab_size=50257, context_length=256, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                       mlp_hidden=128, rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, layer_norm_eps=1e-5,
                       **BLOCKS),  # for tests and pretraining on CPU, with GPT-2's vocabulary
    "llama-3.2-1b": dict(vocab_size=128256, context_length=131072, n_layer=16, n_head=32, n_kv_head=8, n_embd=2048,
                         mlp_hidden=8192, rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, layer_norm_eps=1e-5,
                         **BLOCKS),
}
# SmolLM's cut: every digit alone, then GPT-2's pattern. A run of spaces before a digit stays
# whole, as when HF's Digits pre-tokenizer has cut the text at the digit first.
SMOLLM_SPLIT = PreTokenizer(
    "smollm", r"""'s|'t|'re|'ve|'m|'ll|'d|\p{N}| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+""",
    {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]},
)
# Llama 3's cut, OpenAI's cl100k: contractions in any case, a letter run with at most one leading
# non-letter, digits in threes, punctuation with its line breaks, line breaks apart from other spaces.
LLAMA3_SPLIT = regex_cut(
    "llama-bpe", r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                 r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
# One layout, two spellings: our role → the file's tensor name ("{i}" is the block number).
HF_NAMES = {
    "wte": "model.embed_tokens", "ln_f": "model.norm", "lm_head": "lm_head",
    "ln_1": "model.layers.{i}.input_layernorm", "ln_2": "model.layers.{i}.post_attention_layernorm",
    "q": "model.layers.{i}.self_attn.q_proj", "k": "model.layers.{i}.self_attn.k_proj",
    "v": "model.layers.{i}.self_attn.v_proj", "o": "model.layers.{i}.self_attn.o_proj",
    "gate": "model.layers.{i}.mlp.gate_proj", "up": "model.layers.{i}.mlp.up_proj",
    "down": "model.layers.{i}.mlp.down_proj",
    "q_norm": "model.layers.{i}.self_attn.q_norm", "k_norm": "model.layers.{i}.self_attn.k_norm",  # Qwen3, ...
}
GGUF_NAMES = {
    "wte": "token_embd", "ln_f": "output_norm", "lm_head": "output",
    "ln_1": "blk.{i}.attn_norm", "ln_2": "blk.{i}.ffn_norm",
    "q": "blk.{i}.attn_q", "k": "blk.{i}.attn_k", "v": "blk.{i}.attn_v", "o": "blk.{i}.attn_output",
    "gate": "blk.{i}.ffn_gate", "up": "blk.{i}.ffn_up", "down": "blk.{i}.ffn_down",
    "q_norm": "blk.{i}.attn_q_norm", "k_norm": "blk.{i}.attn_k_norm",
    "attn_out_norm": "blk.{i}.post_attention_norm", "mlp_out_norm": "blk.{i}.post_ffw_norm",  # OLMo 2, Gemma 3
}


def holds(config: GPTConfig) -> bool:
    """Rotary positions, RMSNorm and a SwiGLU MLP: Llama's blocks."""
    return (config.positions, config.norm, config.mlp) == ("rope", "rmsnorm", "swiglu")


def config_from_hf(hf: dict[str, Any], source: str, family: str = "llama", **blocks: Any) -> GPTConfig:
    """Our config from a Hugging Face `LlamaForCausalLM` config.json; what our blocks lack is refused.

    Families built on Llama (Qwen, Mistral, ...) read their config.json here too, naming themselves
    and the blocks they swap in (`blocks` overrides `BLOCKS` and what the file gives).
    """
    _refuse_what_we_lack(hf, source)
    theta, scaling = rope_from_hf(hf, source)
    try:
        fields = dict(
            vocab_size=hf["vocab_size"], context_length=hf["max_position_embeddings"],
            n_layer=hf["num_hidden_layers"], n_head=hf["num_attention_heads"], n_embd=hf["hidden_size"],
            n_kv_head=hf.get("num_key_value_heads"), mlp_hidden=hf["intermediate_size"], head_size=_head_size(hf),
            rope_theta=theta, rope_scaling=scaling, layer_norm_eps=hf.get("rms_norm_eps", 1e-6),
            tie_embeddings=hf.get("tie_word_embeddings", False),
            name=hf.get("_name_or_path") or hf.get("_model_name_or_path") or f"hf-{family}", family=family,
        )
    except KeyError as err:
        raise ValueError(f"{source}: missing field {err} in the {family} config") from None
    try:
        return GPTConfig(**{**fields, **BLOCKS, **blocks})
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def _head_size(hf: dict[str, Any]) -> int | None:
    """`head_dim` where it differs from hidden_size / num_attention_heads (Qwen3, Gemma), else None."""
    head_dim, heads, width = hf.get("head_dim"), hf.get("num_attention_heads"), hf.get("hidden_size")
    return head_dim if head_dim and heads and width and head_dim * heads != width else None


def _refuse_what_we_lack(hf: dict[str, Any], source: str) -> None:
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported; Llama's MLP uses silu")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise ValueError(f"{source}: attention_bias / mlp_bias are not supported; gptlab's Llama has no biases")


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A config.json that `transformers.LlamaForCausalLM.from_pretrained` reads (4.x and 5.x)."""
    if config.bias or config.qkv_bias:
        raise ValueError("a Llama-family model with biases has no Hugging Face Llama form (LlamaForCausalLM has none)")
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **hf_fields(config)}


def hf_fields(config: GPTConfig) -> dict[str, Any]:
    """The config.json fields every Llama-shaped family writes the same way (its shape, rotary, norms)."""
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.hidden_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.context_length,
        "rms_norm_eps": config.layer_norm_eps,
        **rope_to_hf(config),
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": config.tie_embeddings,
        "torch_dtype": "float32",
    }


def hf_to_ours(hf_state: dict[str, Tensor], config: GPTConfig, names: Names = HF_NAMES) -> dict[str, Tensor]:
    """Stack q/k/v and gate/up; drop rotary buffers of old files and a tied head's copy. `names`: the
    file's spelling (a family that adds roles, e.g. a mixture's experts, passes its own). Takes the
    tensors out of `hf_state` (`stack_parts`: each is freed once stacked)."""
    for name in [n for n in hf_state if n.endswith("rotary_emb.inv_freq")
                 or (n == "lm_head.weight" and config.head_is_tied)]:
        del hf_state[name]
    return stack_parts(hf_state, block_parts(config, names))


def ours_to_hf(state: dict[str, Tensor], config: GPTConfig, names: Names = HF_NAMES) -> dict[str, Tensor]:
    """Split our fused q/k/v and gate/up into Hugging Face's separate projections."""
    return split_parts(state, block_parts(config, names))


def config_from_gguf(meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str, arch: str = "llama",
                     family: str = "llama", **blocks: Any) -> GPTConfig:
    """Our config from a llama GGUF file's metadata. Llama 3.1's rotary scaling comes as the per-frequency
    factors llama.cpp computed from it (the `rope_freqs` tensor, which the reader hands over as the setting
    it is: `meta["rope_freqs"]`). The vocabulary is the embedding's rows: llama.cpp writes `vocab_size` for
    llama files only (qwen2, qwen3, olmo2 lack it).

    Architectures llama.cpp builds on Llama's keys (qwen3moe, ...) are read here too, under their own
    key prefix `arch`, naming their family and the blocks they swap in (`blocks` overrides `BLOCKS`).
    """
    own = {key.removeprefix(f"{arch}."): value for key, value in meta.items() if key.startswith(f"{arch}.")}
    scaling = own.get("rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise ValueError(f"{source}: rope scaling {scaling!r} is not supported; gptlab reads 'linear'")
    if "token_embd.weight" not in shapes:
        raise ValueError(f"{source}: no tensor token_embd.weight; a {arch} model keeps its token embedding there")
    try:
        n_embd, n_head = int(own["embedding_length"]), int(own["attention.head_count"])
        head_dim = int(own.get("attention.key_length", n_embd // n_head))  # Qwen3's differs from the width / heads
        head_size = head_dim if head_dim * n_head != n_embd else None
        fields: dict[str, Any] = dict(
            vocab_size=shapes["token_embd.weight"][0], context_length=int(own["context_length"]),
            n_layer=int(own["block_count"]), n_head=n_head, n_embd=n_embd,
            n_kv_head=int(own.get("attention.head_count_kv", n_head)), mlp_hidden=int(own["feed_forward_length"]),
            head_size=head_size, rope_theta=float(own.get("rope.freq_base", 1e4)),
            layer_norm_eps=float(own["attention.layer_norm_rms_epsilon"]),
            tie_embeddings="output.weight" not in shapes, name=str(meta.get("general.name", "gguf")),
            rope_scaling=_gguf_rope_scaling(meta, scaling, own),
            family=family,
        )
    except KeyError as err:
        raise ValueError(f"{source}: missing metadata '{arch}.{err.args[0]}' of a {arch} model") from None
    try:
        return GPTConfig(**{**fields, **BLOCKS, **blocks})
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def _gguf_rope_scaling(meta: dict[str, Any], kind: str, own: dict[str, Any]) -> RopeScaling | None:
    """A GGUF file's rotary scaling: Llama 3.1's factors per frequency, linear, or none."""
    if "rope_freqs" in meta:
        return RopeScaling("factors", factors=tuple(float(f) for f in meta["rope_freqs"]))
    return None if kind == "none" else RopeScaling("linear", float(own["rope.scaling.factor"]))


def _unpermute(weight: Tensor, heads: int) -> Tensor:
    """Undo llama.cpp's interleaving of rotary dimensions: rows (h, i, pair) → (h, pair, i)."""
    out, width = weight.shape
    return weight.reshape(heads, out // heads // 2, 2, width).transpose(1, 2).reshape(out, width)


def gguf_to_ours(tensors: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Put q/k rows back in the "halves" order (each checked first: the file's tensor, not a reshaped one,
    is what a wrong dtype or shape is told of), then stack as for Hugging Face."""
    parts = block_parts(config, GGUF_NAMES)
    shapes = piece_shapes(parts)
    heads = {GGUF_NAMES[role].format(i=i) + ".weight": count for i in range(config.n_layer)
             for role, count in (("q", config.n_head), ("k", config.kv_heads))}
    for name in heads.keys() & tensors.keys():
        tensors[name] = _unpermute(check_piece(name, tensors[name], shapes[name]), heads[name])
    return stack_parts(tensors, parts)


def gguf_halves_to_ours(tensors: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Stack a GGUF's q/k/v and gate/up under our names: all the reading an architecture needs whose q/k
    rows llama.cpp keeps in Hugging Face's order, rotating them as halves ("NEOX": qwen2, qwen3, olmo2)."""
    return stack_parts(tensors, block_parts(config, GGUF_NAMES))


def config_to_gguf(config: GPTConfig, arch: str = "llama", qkv_bias: bool = False,
                   window: bool = False) -> dict[str, GGUFValue]:
    """The `<arch>.…` metadata llama.cpp reads for a Llama-shaped model, under the keys its converter writes.
    Llama 3's rotary scaling travels as the `rope_freqs` tensor (the writer adds it), linear as two keys;
    what llama.cpp's `arch` lacks (biases beyond q/k/v's where `qkv_bias`, a sliding window unless `window`:
    the caller writes its own window keys) is refused rather than silently dropped."""
    if config.bias or config.qkv_bias != qkv_bias:
        raise ValueError(f"a {arch} model {'without' if qkv_bias else 'with'} q/k/v biases, or with other biases, "
                         f"has no GGUF form gptlab writes (llama.cpp's {arch} is not built so)")
    if config.sliding_window is not None and not window:
        raise ValueError(f"this model attends over a sliding window of {config.sliding_window}, which llama.cpp's "
                         f"{arch} does not; it has no GGUF form")
    meta: dict[str, GGUFValue] = {
        "context_length": config.context_length, "embedding_length": config.n_embd, "block_count": config.n_layer,
        "feed_forward_length": config.hidden_size, "attention.head_count": config.n_head,
        "attention.head_count_kv": config.kv_heads, "attention.key_length": config.head_dim,
        "attention.value_length": config.head_dim, "rope.dimension_count": config.rotary_dims,
        "rope.freq_base": config.rope_theta, "attention.layer_norm_rms_epsilon": config.layer_norm_eps,
        "vocab_size": config.vocab_size,
    }
    if config.rope_scaling is not None and config.rope_scaling.kind == "linear":
        meta.update({"rope.scaling.type": "linear", "rope.scaling.factor": config.rope_scaling.factor})
    return {f"{arch}.{key}": value for key, value in meta.items()}


def _permute(weight: Tensor, heads: int) -> Tensor:
    """llama.cpp's interleaving of rotary dimensions, the inverse of `_unpermute`: rows (h, pair, i) → (h, i, pair)."""
    out, width = weight.shape
    return weight.reshape(heads, 2, out // heads // 2, width).transpose(1, 2).reshape(out, width).contiguous()


def ours_to_gguf(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """llama.cpp's tensors: q/k/v and gate/up split, q/k rows interleaved as its Llama rotates them."""
    tensors = ours_to_gguf_halves(state, config)
    for i in range(config.n_layer):
        for role, heads in (("q", config.n_head), ("k", config.kv_heads)):
            name = GGUF_NAMES[role].format(i=i) + ".weight"
            tensors[name] = _permute(tensors[name], heads)
    return tensors


def ours_to_gguf_halves(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """llama.cpp's tensors for an architecture it rotates as halves (qwen2, qwen3, olmo2): split and renamed."""
    return split_parts(state, block_parts(config, GGUF_NAMES))


FAMILY = Family(
    name="llama",
    holds=holds,
    vocabulary="file",
    hf=HFFormat(("llama",), config_from_hf, config_to_hf, hf_to_ours, ours_to_hf),
    gguf=GGUFFormat(("llama",), config_from_gguf, gguf_to_ours, config_to_gguf, ours_to_gguf),
    presets=PRESETS,
    pre_tokenizers=(SMOLLM_SPLIT, LLAMA3_SPLIT),
)
