"""GPT-2 (OpenAI, 2019): its presets, its Hugging Face and GGUF names, its tokenizer's cut.

Our parameter names are GPT-2's, so Hugging Face import is: drop the `transformer.` prefix, skip
the attention-mask buffers, transpose the four Conv1D weights (stored as (in, out)), check shapes.
llama.cpp's "gpt2" keeps the projections as our `nn.Linear` does, q/k/v fused (`attn_qkv`), and an
`output` tensor even where the head is tied (its converter writes the embedding twice).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gptlab.config import GPTConfig
from gptlab.models.family import (
    Family,
    GGUFFormat,
    GGUFValue,
    HFFormat,
    PreTokenizer,
    block_parts,
    split_parts,
    stack_parts,
)

if TYPE_CHECKING:
    from torch import Tensor

# The four projection weights per block, which GPT-2's files store transposed (Conv1D: (in, out)).
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
PRESETS: dict[str, dict[str, Any]] = {
    # OpenAI GPT-2 sizes (parameter counts with tied embeddings).
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 355M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    # Small CPU-friendly presets with the GPT-2 vocabulary.
    "gpt-tiny": dict(n_layer=2, n_head=2, n_embd=16, context_length=128),  # ~0.8M, for tests
    "gpt-small": dict(n_layer=6, n_head=6, n_embd=384, context_length=256),  # ~30M
}

# The split GPT-2 applies before BPE: contractions, letter runs, digit runs, punctuation runs, spaces.
GPT2_SPLIT = PreTokenizer(
    "gpt-2", r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
)
BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers in old HF files
# Our names are GPT-2's: each role's tensor in a Hugging Face file (after a `transformer.` some files add).
HF_NAMES = {"wte": "wte", "wpe": "wpe", "ln_f": "ln_f", "lm_head": "lm_head", "ln_1": "h.{i}.ln_1",
            "ln_2": "h.{i}.ln_2", "qkv": "h.{i}.attn.c_attn", "o": "h.{i}.attn.c_proj", "fc": "h.{i}.mlp.c_fc",
            "down": "h.{i}.mlp.c_proj"}
GGUF_NAMES = {"wte": "token_embd", "wpe": "position_embd", "ln_f": "output_norm", "lm_head": "output",
              "ln_1": "blk.{i}.attn_norm", "ln_2": "blk.{i}.ffn_norm", "qkv": "blk.{i}.attn_qkv",
              "o": "blk.{i}.attn_output", "fc": "blk.{i}.ffn_up", "down": "blk.{i}.ffn_down"}
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


def holds(config: GPTConfig) -> bool:
    """Learned positions, LayerNorm and a GELU MLP: GPT-2's blocks."""
    return (config.positions, config.norm, config.mlp) == ("learned", "layernorm", "gelu")


def config_from_hf(hf: dict[str, Any], source: str) -> GPTConfig:
    """Our config from a Hugging Face GPT-2 config.json."""
    activation = hf.get("activation_function", "gelu_new")
    if activation not in TANH_GELUS:
        raise ValueError(f"{source}: activation_function {activation!r} is not GPT-2's tanh GELU")
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            context_length=hf["n_positions"],
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_embd=hf["n_embd"],
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            tie_embeddings=hf.get("tie_word_embeddings", True),
            name=hf.get("_name_or_path") or "hf-gpt2",
        )
    except KeyError as err:
        raise ValueError(f"{source}: missing field {err} in the GPT-2 config") from None


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A config.json that `transformers.GPT2LMHeadModel.from_pretrained` reads."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_ctx": config.context_length,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "torch_dtype": "float32",
    }


def hf_to_ours(hf_state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Check each tensor under its name and in its layout in the file, then rename (drop `transformer.`,
    which the hub's own gpt2 file lacks) and transpose Conv1D weights (as views); drop tied and buffer keys.
    Takes the tensors out of `hf_state`."""
    for name in [n for n in hf_state if n.endswith(BUFFER_SUFFIXES) or (n == "lm_head.weight" and config.head_is_tied)]:
        del hf_state[name]
    prefix = "transformer." if any(name.startswith("transformer.") for name in hf_state) else ""
    names = {role: name if role == "lm_head" else prefix + name for role, name in HF_NAMES.items()}
    parts = {ours: [(name, shape[::-1] if ours.endswith(CONV1D_WEIGHTS) else shape) for name, shape in pieces]
             for ours, pieces in block_parts(config, names).items()}  # as the file stores them: Conv1D (in, out)
    state = stack_parts(hf_state, parts)
    for name in [n for n in parts if n.endswith(CONV1D_WEIGHTS) and n in state]:
        state[name] = state[name].t()  # a view, no copy
    return state


def ours_to_hf(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Hugging Face's names (`transformer.` before all but the head) with Conv1D weights transposed."""
    return {
        (name if name.startswith("lm_head") else f"transformer.{name}"):
            tensor.t().contiguous() if name.endswith(CONV1D_WEIGHTS) else tensor
        for name, tensor in state.items()
    }


def config_from_gguf(meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str) -> GPTConfig:
    """Our config from a gpt2 GGUF file; the vocabulary is the embedding's rows (llama.cpp writes no size)."""
    if "token_embd.weight" not in shapes:
        raise ValueError(f"{source}: no tensor token_embd.weight; a gpt2 model keeps its token embedding there")
    try:
        return GPTConfig(
            vocab_size=shapes["token_embd.weight"][0], context_length=int(meta["gpt2.context_length"]),
            n_layer=int(meta["gpt2.block_count"]), n_head=int(meta["gpt2.attention.head_count"]),
            n_embd=int(meta["gpt2.embedding_length"]), mlp_hidden=int(meta["gpt2.feed_forward_length"]),
            layer_norm_eps=float(meta["gpt2.attention.layer_norm_epsilon"]),
            tie_embeddings="output.weight" not in shapes, name=str(meta.get("general.name", "gguf")),
        )
    except KeyError as err:
        raise ValueError(f"{source}: missing metadata {err} of a gpt2 model") from None


def config_to_gguf(config: GPTConfig) -> dict[str, GGUFValue]:
    """The `gpt2.…` metadata llama.cpp reads (its converter's keys)."""
    return {"gpt2.context_length": config.context_length, "gpt2.embedding_length": config.n_embd,
            "gpt2.feed_forward_length": config.hidden_size, "gpt2.block_count": config.n_layer,
            "gpt2.attention.head_count": config.n_head, "gpt2.attention.layer_norm_epsilon": config.layer_norm_eps}


def gguf_to_ours(tensors: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Our names for llama.cpp's; its layout is ours already."""
    return stack_parts(tensors, block_parts(config, GGUF_NAMES))


def ours_to_gguf(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """llama.cpp's names, with the `output` tensor its gpt2 converter always writes (the embedding, when tied)."""
    tensors = split_parts(state, block_parts(config, GGUF_NAMES))
    tensors.setdefault("output.weight", tensors["token_embd.weight"])
    return tensors


FAMILY = Family(
    name="gpt2",
    holds=holds,
    vocabulary="gpt2",
    hf=HFFormat(("gpt2",), config_from_hf, config_to_hf, hf_to_ours, ours_to_hf),
    gguf=GGUFFormat(("gpt2",), config_from_gguf, gguf_to_ours, config_to_gguf, ours_to_gguf),
    presets=PRESETS,
    pre_tokenizers=(GPT2_SPLIT,),
)
