"""OLMo 2 (Allen AI, 2024): a Llama that normalizes each branch's output instead of its input.

Each block adds `x + norm(attn(x))` and `x + norm(mlp(x))` (no norm before either branch), and
RMS-normalizes the queries and keys over all heads at once, before the heads are split and rotated.
No biases; the head is untied from the embedding. Names are Llama's, except that OLMo 2's
`post_attention_layernorm` normalizes the attention's output where Llama's normalizes the MLP's input.

llama.cpp writes OLMo 3 (OLMo 2 with a sliding window in 3 blocks of 4) as "olmo2" too; a GGUF file
that keeps a window reads with it.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

from gptlab.config import GPTConfig
from gptlab.models import llama
from gptlab.models.family import Family, GGUFFormat, GGUFValue, HFFormat, window_from_gguf

BLOCKS = dict(norm_position="post", qk_norm="full")  # what OLMo 2 changes in a Llama
PRESETS: dict[str, dict[str, Any]] = {
    "olmo2-tiny": dict(vocab_size=50257, context_length=256, n_layer=2, n_head=4, n_embd=64, mlp_hidden=128,
                       rope_theta=500000.0, layer_norm_eps=1e-6, tie_embeddings=False,
                       **llama.BLOCKS, **BLOCKS),  # for tests and pretraining on CPU, with GPT-2's vocabulary
    "olmo-2-1b": dict(vocab_size=100352, context_length=4096, n_layer=16, n_head=16, n_embd=2048, mlp_hidden=8192,
                      rope_theta=500000.0, layer_norm_eps=1e-6, tie_embeddings=False,
                      **llama.BLOCKS, **BLOCKS),  # OLMo-2-0425-1B
}
# OLMo 2's vocabulary (dolma2) is OpenAI's cl100k, cut as Llama 3's. llama.cpp's converter knows a vocabulary by
# the ids it gives a test text, here DBRX's (cl100k too), so OLMo 2 GGUF files name this cut "dbrx".
OLMO2_SPLIT = replace(llama.LLAMA3_SPLIT, name="dbrx")
HF_NAMES = {**llama.HF_NAMES, "attn_out_norm": "model.layers.{i}.post_attention_layernorm",
            "mlp_out_norm": "model.layers.{i}.post_feedforward_layernorm"}


def config_from_hf(hf: dict[str, Any], source: str) -> GPTConfig:
    """Our config from an `Olmo2ForCausalLM` config.json."""
    return llama.config_from_hf(hf, source, "olmo2", **BLOCKS)


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A config.json that `transformers.Olmo2ForCausalLM` reads; OLMo 2 attends over every key."""
    if config.sliding_window is not None:
        raise ValueError("this OLMo model attends over a sliding window (OLMo 3, read from a GGUF file); gptlab "
                         "exports OLMo 2 only, which has none")
    return {"architectures": ["Olmo2ForCausalLM"], "model_type": "olmo2", **llama.hf_fields(config)}


def config_from_gguf(meta: dict[str, Any], shapes: dict[str, tuple[int, ...]], source: str) -> GPTConfig:
    """Our config from an olmo2 GGUF file (OLMo 2, or OLMo 3 with its sliding window)."""
    return llama.config_from_gguf(meta, shapes, source, "olmo2", "olmo2", **BLOCKS,
                                  **window_from_gguf(meta, "olmo2", source))


def config_to_gguf(config: GPTConfig) -> dict[str, GGUFValue]:
    """The `olmo2.…` metadata llama.cpp reads: Llama's keys (its post-norms and QK-norm are the tensors')."""
    return llama.config_to_gguf(config, "olmo2")


FAMILY = Family(
    name="olmo2",
    vocabulary="file",
    hf=HFFormat(("olmo2",), config_from_hf, config_to_hf, partial(llama.hf_to_ours, names=HF_NAMES),
                partial(llama.ours_to_hf, names=HF_NAMES)),
    # llama.cpp keeps OLMo 2's q/k rows as Hugging Face has them (it rotates halves, "NEOX")
    gguf=GGUFFormat(("olmo2",), config_from_gguf, llama.gguf_halves_to_ours, config_to_gguf,
                    llama.ours_to_gguf_halves),
    presets=PRESETS,
    pre_tokenizers=(OLMO2_SPLIT,),
)
