"""A Hugging Face Llama folder (SmolLM2 as `transformers` saves it) is a `--model` like any other."""

from __future__ import annotations

import json

import torch

from e2e.commands import gptlab
from hf_models import hf_greedy

PROMPT = "The capital of France is"


def test_generate_json_on_a_hf_llama_folder_matches_transformers_greedy(hf_smollm2):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    out = gptlab("generate", "--model", str(hf_smollm2), "--prompt", PROMPT, "--temperature", "0",
                 "--max-new-tokens", "8", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    ids = Tokenizer.from_file(str(hf_smollm2 / "tokenizer.json")).encode(PROMPT, add_special_tokens=False).ids
    theirs = AutoModelForCausalLM.from_pretrained(hf_smollm2, dtype=torch.float32).eval()
    assert result["completion_ids"] == hf_greedy(theirs, ids, 8)
    assert "Paris" in result["completion"]
