"""A bfloat16 Hugging Face folder loads in bfloat16 in about its own size: no float32 copy on the way, no
second copy of the tensors the model fuses (q/k/v, gate/up), no memory map held beside the model
(BENCHMARKS.md, "Loading a 1B model", measures the same at Llama-3.2-1B's size)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gptlab.checkpoint.hf import export_hf_folder
from gptlab.config import GPTConfig
from gptlab.model import GPT
from gptlab.models import llama
from gptlab.tokenizer.patterns import PATTERNS
from gptlab.tokenizer.scratch import BPEVocabulary

# Peak RSS (VmHWM) of a fresh process: after loading a tiny folder (so that every module a load imports is
# imported), then after loading the folder under test.
PEAK_SCRIPT = """
import json, re, sys
import torch
from gptlab.loading import load_model

peak = lambda: int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read())[1]) * 1024
load_model(sys.argv[1], dtype=torch.bfloat16)
before = peak()
model = load_model(sys.argv[2], dtype=torch.bfloat16).model
print(json.dumps({"growth": peak() - before, "dtypes": sorted({str(p.dtype) for p in model.parameters()})}))
"""


def save_bf16_llama(folder: Path, vocab_size: int, n_layer: int, n_embd: int, mlp_hidden: int) -> int:
    """A random Llama (GQA, tied embeddings) made and saved in bfloat16, as Llama 3.2 ships, with a
    256-token tokenizer beside it; returns the bytes of its weights."""
    config = GPTConfig(vocab_size=vocab_size, context_length=256, n_layer=n_layer, n_head=n_embd // 64,
                       n_kv_head=n_embd // 256, n_embd=n_embd, mlp_hidden=mlp_hidden, tie_embeddings=True,
                       **llama.BLOCKS)
    with torch.device("meta"):
        model = GPT(config)
    model = model.to(torch.bfloat16).to_empty(device="cpu")  # never float32, even here
    model.tie_weights()
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02)
    export_hf_folder(model, folder)
    for name, text in BPEVocabulary("bytes", PATTERNS["gpt2"], [], []).hf_files().items():
        (folder / name).write_text(text, encoding="utf-8")
    return sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the peak RSS from /proc (Linux)")
def test_bf16_folder_loads_in_bf16_at_about_its_own_size(tmp_path):
    save_bf16_llama(tmp_path / "warm-up", vocab_size=512, n_layer=1, n_embd=256, mlp_hidden=512)
    weights = save_bf16_llama(tmp_path / "llama", vocab_size=8192, n_layer=6, n_embd=1024, mlp_hidden=4096)
    assert weights > 180e6  # ~100M parameters, 60% of them in fused projections (q/k/v, gate/up)
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / "warm-up"), str(tmp_path / "llama")],
                          env=os.environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    peak = json.loads(done.stdout.strip().splitlines()[-1])
    assert peak["dtypes"] == ["torch.bfloat16"]
    assert peak["growth"] <= 1.3 * weights, f"loading grew the peak RSS by {peak['growth'] / weights:.2f}x the weights"
