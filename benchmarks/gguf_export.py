"""GGUF export checked by llama.cpp itself: gptlab writes SmolLM2 and GPT-2 124M as GGUF files, then
llama-cpp-python (the `bench` extra; it builds llama.cpp from source, minutes) loads each file and must
tokenize the prompt as gptlab does, continue it greedily with gptlab's 16 tokens (gptlab reading the same
file), and, for SmolLM2, answer a chat through the file's own template and stop on its end-of-turn token.

    .venv/bin/python benchmarks/gguf_export.py                # f32 files (exact parity is the claim)
    .venv/bin/python benchmarks/gguf_export.py --quant q8_0   # what llama.cpp users run

GPT-2 is a seeded random 124M (the offline data has GPT-2's tokenizer, not its weights): greedy picks among
near-equal logits, so a mismatch there says less than one on SmolLM2's real weights. Not a CI test: the
numbers go in BENCHMARKS.md with the command and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing
os.environ.setdefault("GPTLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))  # tokenizer files
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gptlab.api import ask  # noqa: E402
from gptlab.checkpoint.gguf_export import QUANTS, export_gguf  # noqa: E402
from gptlab.generation import GenerationSettings, generate  # noqa: E402
from gptlab.loading import LoadedModel, load_model  # noqa: E402
from gptlab.modelfile import exported_chat  # noqa: E402
from gptlab.tokenizer.base import document_ids  # noqa: E402

PROMPT = "The capital of France is Paris. The capital of Germany is"
QUESTION = "What is the capital of France?"
NEW_TOKENS = 16


def export(spec: str, path: Path, quant: str) -> Path:
    """What `gptlab convert SPEC PATH --to gguf --quant QUANT` writes (the same library calls)."""
    loaded = load_model(spec, seed=0)
    chat = exported_chat(loaded.meta, loaded.tokenizer)
    return export_gguf(loaded.model, path, loaded.tokenizer, chat.template, quant).path


def gptlab_greedy(loaded: LoadedModel, ids: list[int]) -> list[int]:
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, temperature=0.0, end_of_text=False)
    with torch.inference_mode():
        return list(generate(loaded.model, ids, settings))


def llama_greedy(llm, ids: list[int]) -> list[int]:
    out = []
    for token in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        out.append(token)
        if len(out) == NEW_TOKENS:
            break
    return out


def check(name: str, path: Path, chat: bool) -> bool:
    """One file through both readers; prints what matched."""
    from llama_cpp import Llama

    loaded = load_model(str(path))
    llm = Llama(str(path), n_ctx=512, n_threads=torch.get_num_threads(), verbose=False)
    ours_ids = document_ids(loaded.tokenizer, PROMPT)
    theirs_ids = llm.tokenize(PROMPT.encode(), add_bos=True, special=False)
    ours, theirs = gptlab_greedy(loaded, ours_ids), llama_greedy(llm, ours_ids)
    same = sum(a == b for a, b in zip(ours, theirs))
    print(f"{name}: {path.stat().st_size / 2**20:.0f} MiB; prompt ids equal: {ours_ids == theirs_ids}; "
          f"greedy {same}/{NEW_TOKENS} tokens equal")
    print(f"  gptlab:    {loaded.tokenizer.decode(ours)!r}")
    print(f"  llama.cpp: {loaded.tokenizer.decode(theirs)!r}")
    passed = ours_ids == theirs_ids and ours == theirs
    if chat:
        answer = llm.create_chat_completion([{"role": "user", "content": QUESTION}], max_tokens=64, temperature=0.0)
        choice = answer["choices"][0]
        ours_answer = ask(loaded, QUESTION, max_new_tokens=64, temperature=0.0)
        print(f"  chat via the embedded template: finish_reason={choice['finish_reason']!r}, "
              f"answer {choice['message']['content']!r}; gptlab's answer equal: "
              f"{choice['message']['content'].strip() == ours_answer.strip()}")
        passed = passed and choice["finish_reason"] == "stop" and bool(choice["message"]["content"].strip())
    return passed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quant", choices=QUANTS, default="f32", help="the files' weight type (default f32)")
    opt = p.parse_args()
    import llama_cpp

    now = datetime.datetime.now(datetime.UTC)
    print(f"{now:%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, llama-cpp-python {llama_cpp.__version__}, "
          f"--quant {opt.quant}")
    with tempfile.TemporaryDirectory() as tmp:
        results = [check("smollm2", export("smollm2", Path(tmp) / "smollm2.gguf", opt.quant), chat=True),
                   check("gpt2 124M (random, seed 0)", export("gpt2", Path(tmp) / "gpt2.gguf", opt.quant), chat=False)]
    print("all matched" if all(results) else "MISMATCH (see above)")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
