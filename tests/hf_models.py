"""Random-weight Hugging Face GPT-2 models saved to disk: the reference for weight import."""

from __future__ import annotations

import json
from pathlib import Path

import torch

PROMPTS = ["Hello, my name is", "The quick brown fox jumps over", "In 1908, Edith Wharton wrote"]
WIDTHS = {  # (n_embd, n_head) of each published size
    "gpt2": (768, 12),
    "gpt2-medium": (1024, 16),
    "gpt2-large": (1280, 20),
    "gpt2-xl": (1600, 25),
}


def tokenizer_texts(records: int = 300) -> list[str]:
    """The Verdict, instruction records and edge cases (digit runs, spaces before digits, unicode)."""
    from gptlab.files import fetch

    rows = json.loads(fetch("instruction-data").read_text(encoding="utf-8"))[:records]
    return [fetch("the-verdict").read_text(encoding="utf-8"),
            *(r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in rows),
            "a  1", "x\n\n  99 bottles", "  42", "3.14159 and 2,718", "naïve café, 東京 ½ ²", "tabs\t\t7\tend",
            "don't I'll"]


def save_random_hf_gpt2(folder: Path, n_layer: int, n_embd: int, n_head: int, seed: int = 0,
                        vocab_size: int = 50257, n_positions: int = 1024) -> Path:
    """Save a `transformers.GPT2LMHeadModel` with seeded random weights via `save_pretrained`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd,
                        n_layer=n_layer, n_head=n_head)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)
    return folder


def load_hf(folder: Path):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(folder, attn_implementation="eager").eval()


def hf_greedy(model, ids: list[int], max_new_tokens: int) -> list[int]:
    """Token ids that `transformers` greedy `generate` appends to `ids`."""
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=None, pad_token_id=50256)
    return out[0, len(ids):].tolist()


def smollm2_hf_tokenizer():
    """`transformers`' reading of the built-in SmolLM2 GGUF's tokenizer, with SmolLM2's published
    pre-tokenizer (each digit alone, then GPT-2's byte-level split). transformers' GGUF reader leaves
    the digit rule out, which changes how a run of spaces before a digit splits."""
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    from gptlab.files import builtin_model_path

    path = builtin_model_path("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tokenizer


def save_smollm2_hf_folder(folder: Path) -> Path:
    """SmolLM2 as `transformers` saves it (`save_pretrained`: config.json, model.safetensors,
    tokenizer.json), from transformers' own reading of the built-in GGUF file."""
    from transformers import AutoModelForCausalLM

    from gptlab.files import builtin_model_path

    path = builtin_model_path("smollm2")
    dequantized = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = dequantized.config
    del config.quantization_config  # a plain float32 model now, which transformers agrees to save
    model = type(dequantized)(config)
    model.load_state_dict(dequantized.state_dict())
    model.save_pretrained(folder)
    smollm2_hf_tokenizer().save_pretrained(folder)
    return folder


def save_random_hf_llama(folder: Path, tokenizer_json: Path, seed: int = 0, tied: bool = False,
                         max_shard_size: str | None = None) -> Path:
    """A two-layer `transformers.LlamaForCausalLM` (GQA, SmolLM2's vocabulary) with seeded random
    weights, saved with `save_pretrained` (sharded when `max_shard_size` is given) beside `tokenizer_json`."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rope_theta=50000.0, rms_norm_eps=1e-5, tie_word_embeddings=tied)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    return folder


def save_padded_hf_llama(folder: Path, padding: int = 64, context: int = 1024) -> Path:
    """A tiny random `LlamaForCausalLM` whose embedding has `padding` rows more than its tokenizer has
    tokens (256 bytes, no end-of-text), as Qwen2.5, Phi-3 and Pythia pad theirs, rigged so those rows
    would win nearly every pick: every token's embedding is 30 along dim 0, so the final hidden state
    points along it, and only the padded rows' head weights do."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from gptlab.tokenizer.patterns import PATTERNS
    from gptlab.tokenizer.scratch import BPEVocabulary

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256 + padding, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                         bos_token_id=None, eos_token_id=None, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 30.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[256:, 0] = 2.0
    model.save_pretrained(folder)
    for name, text in BPEVocabulary("bytes", PATTERNS["gpt2"], [], []).hf_files().items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder
