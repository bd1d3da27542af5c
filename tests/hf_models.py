"""Random-weight Hugging Face GPT-2 models saved to disk: the reference for weight import."""

from __future__ import annotations

from pathlib import Path

import torch

PROMPTS = ["Hello, my name is", "The quick brown fox jumps over", "In 1908, Edith Wharton wrote"]
WIDTHS = {  # (n_embd, n_head) of each published size
    "gpt2": (768, 12),
    "gpt2-medium": (1024, 16),
    "gpt2-large": (1280, 20),
    "gpt2-xl": (1600, 25),
}


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
