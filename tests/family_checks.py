"""What every model family must pass against `transformers`: a tiny random model saved by transformers
loads with equal float32 logits, decodes the same with and without the KV cache, greedy-generates the
same tokens through `gptlab generate --json`, and exports to a folder transformers loads back equal.

Each family's test file builds a tiny transformers config (`PretrainedConfig`) and calls these.
Prompts are longer than any sliding window a config sets, so windowed blocks are tested as windowed.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import torch

from gptlab.checkpoint.hf import export_hf_folder
from gptlab.generation import GenerationSettings, generate
from gptlab.loading import LoadedModel, load_model

PROMPT_LENGTH = 40  # tokens: above the tiny configs' sliding windows (8-16)
NEW_TOKENS = 12


def save_tiny(folder: Path, hf_config, tokenizer_json: Path, seed: int = 0) -> Path:
    """A transformers model of `hf_config` with seeded random weights large enough to make logits differ
    (std 0.1; every norm weight drawn too, so a norm read wrongly shows), saved with `save_pretrained`
    beside `tokenizer_json`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or "layernorm" in name:
                param.uniform_(0.5, 1.5) if param.dim() == 1 and "bias" not in name else param.normal_(0.0, 0.1)
            else:
                param.normal_(0.0, 0.1)
    model.save_pretrained(folder)
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    return folder


def transformers_model(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()


def prompt_ids(vocab_size: int, length: int = PROMPT_LENGTH, seed: int = 1) -> list[int]:
    return torch.randint(0, vocab_size, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def max_logit_difference(loaded: LoadedModel, folder: Path, ids: list[int]) -> float:
    """Largest |ours - transformers'| over the float32 logits of every position of `ids`."""
    theirs = transformers_model(folder)
    with torch.no_grad():
        ours = loaded.model(torch.tensor([ids]))
        return (ours - theirs(torch.tensor([ids])).logits[..., : ours.shape[-1]]).abs().max().item()


def transformers_greedy(folder: Path, ids: list[int], new_tokens: int = NEW_TOKENS) -> list[int]:
    with torch.no_grad():
        out = transformers_model(folder).generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                                                  eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def check_family(folder: Path, tmp_path: Path, family: str) -> LoadedModel:
    """Logits, cached == uncached decoding, greedy tokens through `gptlab generate` and the export round trip
    of the model in `folder`."""
    loaded = load_model(str(folder))
    assert loaded.model.config.family == family
    ids = prompt_ids(loaded.model.config.vocab_size)
    assert max_logit_difference(loaded, folder, ids) < 1e-4
    greedy = GenerationSettings(max_new_tokens=NEW_TOKENS, temperature=0)
    cached = list(generate(loaded.model, ids, greedy))
    assert cached == list(generate(loaded.model, ids, GenerationSettings(max_new_tokens=NEW_TOKENS, temperature=0,
                                                                         kv_cache=False)))
    assert cached == transformers_greedy(folder, ids)
    exported = export_hf_folder(loaded.model, tmp_path / "exported", loaded.tokenizer)
    assert json.loads((exported / "config.json").read_text())["model_type"] == json.loads(
        (folder / "config.json").read_text())["model_type"]
    assert max_logit_difference(loaded, exported, ids) < 1e-4
    check_cli_greedy(folder)
    return loaded


def check_cli_greedy(folder: Path, prompt: str = "The capital of France is") -> None:
    """`gptlab generate --temperature 0 --json` (the CLI's own entry point, in this process: a new process per
    family would spend seconds importing) gives transformers' greedy tokens for the prompt."""
    from tokenizers import Tokenizer

    from gptlab.cli import main

    printed = io.StringIO()
    with torch.enable_grad(), contextlib.redirect_stdout(printed):  # the CLI turns gradients off for its process
        code = main(["generate", "--model", str(folder), "--prompt", prompt, "--temperature", "0",
                     "--max-new-tokens", str(NEW_TOKENS), "--json"])
    assert code == 0
    ids = Tokenizer.from_file(str(folder / "tokenizer.json")).encode(prompt, add_special_tokens=False).ids
    assert json.loads(printed.getvalue())["completion_ids"] == transformers_greedy(folder, ids)
