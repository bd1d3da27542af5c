"""Gemma 3 (Google, 2025), text only: a Llama-shaped decoder with Gemma's own habits.

- token embeddings are multiplied by sqrt(width) (rounded to the weights' dtype, as Gemma does);
- every RMSNorm scales by (1 + w): we keep 1 + w, so import adds 1 and export subtracts it
  (llama.cpp's GGUF files keep 1 + w already);
- norms both before and after each branch (input / post-attention, pre / post-feedforward);
- an RMSNorm over each head of the queries and keys (QK-norm), a GeGLU MLP, no biases;
- a head width of its own (gemma-3-270m: 4 heads of 256 in a 640-wide stream), and scores scaled by
  query_pre_attn_scalar ** -0.5 rather than by 1 / sqrt(head width);
- five blocks in six attend over a sliding window with a rotary base of their own (10,000); every
  sixth is global, with rope_theta (1,000,000), linearly stretched in the larger models.

Gemma 3 4B/12B/27B ship as `gemma3` folders (`Gemma3ForConditionalGeneration`): a SigLIP vision tower and
its projector beside this text model. gptlab reads their text part alone, dropping the vision tensors, so
such a model exports as a `gemma3_text` folder: the text model, which no longer takes images.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from gptlab.config import GPTConfig
from gptlab.models import llama
from gptlab.models.family import (
    Family,
    GGUFFormat,
    GGUFValue,
    HFFormat,
    block_parts,
    check_piece,
    piece_shapes,
    window_from_hf,
    window_to_hf,
)

if TYPE_CHECKING:
    from torch import Tensor

BLOCKS = dict(llama.BLOCKS, mlp="geglu", norm_position="both", qk_norm="head")  # what makes a Gemma 3
PATTERN = 6  # every sixth block is global, the others windowed (transformers' default; llama.cpp's rule)
LOCAL_THETA = 10000.0  # the windowed blocks' rotary base, where a file does not say


def windowed_blocks(n_layer: int, pattern: int = PATTERN) -> list[int]:
    """The blocks that attend over the window when every `pattern`-th block is global."""
    return [i for i in range(n_layer) if (i + 1) % pattern]


PRESETS: dict[str, dict[str, Any]] = {
    # for tests and pretraining on CPU, with GPT-2's vocabulary: blocks 0 and 1 windowed, block 2 global
    "gemma3-tiny": dict(vocab_size=50257, context_length=256, n_layer=3, n_head=4, n_kv_head=1, n_embd=64,
                        head_size=32, mlp_hidden=128, sliding_window=32, sliding_layers=(0, 1), rope_theta=1e6,
                        local_rope_theta=LOCAL_THETA, attn_scale=32**-0.5, embedding_scale=64**0.5,
                        layer_norm_eps=1e-6, **BLOCKS),
    "gemma-3-270m": dict(vocab_size=262144, context_length=32768, n_layer=18, n_head=4, n_kv_head=1, n_embd=640,
                         head_size=256, mlp_hidden=2048, sliding_window=512, sliding_layers=tuple(windowed_blocks(18)),
                         rope_theta=1e6, local_rope_theta=LOCAL_THETA, attn_scale=256**-0.5, embedding_scale=640**0.5,
                         layer_norm_eps=1e-6, **BLOCKS),
}
# transformers' defaults for fields a Gemma 3 config.json may leave out (saved configs omit tied embeddings)
HF_DEFAULTS = {"head_dim": 256, "tie_word_embeddings": True, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-6,
               "max_position_embeddings": 131072, "sliding_window": 4096}
# Llama's names, with Gemma's four norms per block: ln_2 is the pre-feedforward norm here
HF_NAMES = {**llama.HF_NAMES, "ln_2": "model.layers.{i}.pre_feedforward_layernorm",
            "attn_out_norm": "model.layers.{i}.post_attention_layernorm",
            "mlp_out_norm": "model.layers.{i}.post_feedforward_layernorm"}
ACTIVATION = "gelu_pytorch_tanh"
# a `gemma3` folder's nested text_config leaves out what equals Gemma3TextConfig's defaults (hub files do)
TEXT_CONFIG_DEFAULTS = {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
                        "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4}
# a `gemma3` folder's text tensors, as saved (transformers 4.x, and 5.x's save_pretrained) and as
# transformers 5 names them in memory, with the prefix a text model's file has instead
TEXT_PREFIXES = {"language_model.model.": "model.", "language_model.lm_head.": "lm_head.",
                 "model.language_model.": "model."}
VISION_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")


def config_from_hf(hf: dict[str, Any], source: str) -> GPTConfig:
    """Our config from a `Gemma3ForCausalLM` config.json (transformers 4.5x or 5.x spelling), or from the
    text_config of a `Gemma3ForConditionalGeneration` one (whose top-level tie_word_embeddings ties its head)."""
    if hf.get("model_type") == "gemma3":
        tied = {"tie_word_embeddings": hf["tie_word_embeddings"]} if "tie_word_embeddings" in hf else {}
        hf = {**TEXT_CONFIG_DEFAULTS, **(hf.get("text_config") or {}), **tied}
    _refuse_what_we_lack(hf, source)
    hf = {**HF_DEFAULTS, **hf}
    global_rope, local_theta = _ropes(hf, source)
    n_layer = hf.get("num_hidden_layers", 0)
    pattern = hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", PATTERN))
    as_llama = {key: value for key, value in hf.items() if key != "hidden_act"}  # Gemma's is hidden_activation
    return llama.config_from_hf(
        {**as_llama, "rope_parameters": global_rope, "rope_scaling": None}, source, "gemma3", **BLOCKS,
        **window_from_hf(hf, n_layer, windowed_blocks(n_layer, pattern)), local_rope_theta=local_theta,
        attn_scale=float(hf["query_pre_attn_scalar"]) ** -0.5, embedding_scale=float(hf.get("hidden_size", 1)) ** 0.5,
        tie_embeddings=hf["tie_word_embeddings"],
    )


def _ropes(hf: dict[str, Any], source: str) -> tuple[dict[str, Any], float]:
    """The global blocks' rotary settings (as `rope_parameters`, which Llama's reader takes) and the
    windowed blocks' base.

    transformers 5 keeps one entry per kind of block in `rope_parameters`; 4.x wrote `rope_theta`,
    `rope_scaling` (global blocks) and `rope_local_base_freq`.
    """
    params = hf.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full, local = params.get("full_attention") or {}, params.get("sliding_attention") or {}
    else:
        full = {"rope_theta": hf.get("rope_theta", 1e6), **(hf.get("rope_scaling") or {})}
        local = {"rope_theta": hf.get("rope_local_base_freq", LOCAL_THETA)}
    if local.get("rope_type", local.get("type", "default")) != "default":
        raise ValueError(f"{source}: scaled rotary embeddings on the sliding-window blocks are not supported; "
                         "gptlab scales only the global blocks' (rope_parameters['full_attention'])")
    return {"rope_theta": 1e6, **full}, float(local.get("rope_theta", LOCAL_THETA))


def _refuse_what_we_lack(hf: dict[str, Any], source: str) -> None:
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if hf.get(key) is not None:
            raise ValueError(f"{source}: {key} {hf[key]} is not supported; gptlab's Gemma 3 has no logit "
                             "soft-capping (Gemma 3 models leave it null)")
    if (hf.get("hidden_activation") or ACTIVATION) != ACTIVATION:
        raise ValueError(f"{source}: hidden_activation {hf['hidden_activation']!r} is not supported; "
                         f"Gemma 3's MLP uses {ACTIVATION}")
    if hf.get("use_bidirectional_attention"):
        raise ValueError(f"{source}: use_bidirectional_attention is not supported; gptlab's attention is causal")


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A config.json that `transformers.Gemma3ForCausalLM` reads (4.5x and 5.x spellings of the rotary bases)."""
    if not math.isclose(config.embedding_scale, config.n_embd**0.5):
        raise ValueError(f"Gemma 3 scales token embeddings by sqrt(n_embd) = {config.n_embd**0.5:g}; this model "
                         f"scales them by {config.embedding_scale:g}, which Gemma3ForCausalLM cannot say")
    fields = {key: value for key, value in llama.hf_fields(config).items() if key not in ("hidden_act", "mlp_bias")}
    scalar = config.head_dim if config.attn_scale is None else config.attn_scale**-2
    scalar = round(scalar) if math.isclose(scalar, round(scalar)) else scalar  # transformers 5 types it int
    return {"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", **fields,
            "hidden_activation": ACTIVATION, "query_pre_attn_scalar": scalar,
            "rope_local_base_freq": config.local_rope_theta or config.rope_theta,
            "attn_logit_softcapping": None, "final_logit_softcapping": None, **window_to_hf(config)}


def hf_to_ours(hf_state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Keep a `gemma3` folder's text tensors under a text model's names, add 1 to every norm weight (in
    float32: 1 + w needs more digits than w), then stack as Llama does (taking the tensors out of
    `hf_state`, so each is freed once stacked)."""
    _text_part(hf_state)
    shapes = piece_shapes(block_parts(config, HF_NAMES))
    for name in [n for n in hf_state if n.endswith("norm.weight") and n in shapes]:  # checked before the float()
        hf_state[name] = check_piece(name, hf_state[name], shapes[name]).float() + 1
    return llama.hf_to_ours(hf_state, config, HF_NAMES)


def _text_part(hf_state: dict[str, Tensor]) -> None:
    """Drop the vision tower and projector, and strip the text model's prefix, in place."""
    for name in list(hf_state):
        if name.startswith(VISION_PREFIXES):
            del hf_state[name]
        prefix = next((p for p in TEXT_PREFIXES if name.startswith(p)), None)
        if prefix is not None:
            hf_state[TEXT_PREFIXES[prefix] + name.removeprefix(prefix)] = hf_state.pop(name)


def ours_to_hf(state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Split as Llama does, then take the 1 back off every norm weight."""
    hf_state = llama.ours_to_hf(state, config, HF_NAMES)
    return {name: t - 1 if name.endswith("norm.weight") else t for name, t in hf_state.items()}


def config_from_gguf(meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str) -> GPTConfig:
    """Our config from a gemma3 GGUF file, read as llama.cpp reads it: the window in five blocks of six,
    their rotary base 10,000 (neither is in the file), scores scaled by 1 / sqrt(head width), or by
    1 / sqrt(n_embd / n_head) in the 62-block 27B model (its query_pre_attn_scalar, the only one that differs)."""
    if meta.get("gemma3.final_logit_softcapping"):
        raise ValueError(f"{source}: final_logit_softcapping is not supported; gptlab's Gemma 3 has no soft-capping")
    n_layer = int(meta.get("gemma3.block_count", 0))
    n_embd, n_head = int(meta.get("gemma3.embedding_length", 1)), int(meta.get("gemma3.attention.head_count", 1))
    window = int(meta.get("gemma3.attention.sliding_window", 0)) or None
    return llama.config_from_gguf(
        meta, shapes, source, "gemma3", "gemma3", **BLOCKS,
        **window_from_hf({"sliding_window": window}, n_layer, windowed_blocks(n_layer)),
        local_rope_theta=LOCAL_THETA,
        attn_scale=(n_embd // n_head) ** -0.5 if n_layer == 62 else None, embedding_scale=n_embd**0.5,
    )


def config_to_gguf(config: GPTConfig) -> dict[str, GGUFValue]:
    """The `gemma3.…` metadata llama.cpp's converter writes: Llama's keys and the window. llama.cpp assumes the
    rest as `config_from_gguf` reads it (which blocks are windowed, their rotary base, the attention and
    embedding scales): a model that differs is refused rather than written to run differently."""
    n_layer, head_dim = config.n_layer, config.head_dim
    assumed = window_from_hf({"sliding_window": config.sliding_window}, n_layer, windowed_blocks(n_layer))
    scale = (config.n_embd // config.n_head) ** -0.5 if n_layer == 62 else head_dim**-0.5
    checks = (
        ("which blocks attend over the window (five in six)", config.sliding_window is not None
         and (config.sliding_window, config.sliding_layers) == (assumed["sliding_window"], assumed["sliding_layers"])),
        (f"the windowed blocks' rotary base ({LOCAL_THETA:g})",
         config.sliding_window is None or config.local_rope_theta == LOCAL_THETA),
        ("the attention scale (1 / sqrt(head width))", math.isclose(config.attn_scale or head_dim**-0.5, scale)),
        ("the embedding scale (sqrt(n_embd))", math.isclose(config.embedding_scale, config.n_embd**0.5)),
    )
    differs = [what for what, same in checks if not same]
    if differs:
        raise ValueError(f"this Gemma 3 model differs from what llama.cpp's gemma3 assumes in {', '.join(differs)}; "
                         "it has no GGUF form")
    return {**llama.config_to_gguf(config, "gemma3", window=True),
            "gemma3.attention.sliding_window": config.sliding_window or 0}


FAMILY = Family(
    name="gemma3",
    vocabulary="file",
    hf=HFFormat(("gemma3_text", "gemma3"), config_from_hf, config_to_hf, hf_to_ours, ours_to_hf),
    # llama.cpp keeps Gemma's q/k rows in "halves" order and its norms as 1 + w, as we do
    gguf=GGUFFormat(("gemma3",), config_from_gguf, llama.gguf_halves_to_ours, config_to_gguf,
                    llama.ours_to_gguf_halves),
    presets=PRESETS,
)
