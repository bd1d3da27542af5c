"""Self-contained checkpoints: a tokenizer read from a model file travels inside the checkpoint, so the folder
loads after the source is gone; a LoRA checkpoint refuses, in one line, a base whose weights changed."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from gptlab.checkpoint.hf import export_hf_folder
from gptlab.checkpoint.native import load_checkpoint, save_checkpoint
from gptlab.cli import main
from gptlab.config import GPTConfig
from gptlab.loading import load_model
from gptlab.model import GPT
from gptlab.models import preset_config
from gptlab.models.llama import LLAMA3_SPLIT
from gptlab.tokenizer import BPETokenizer, BPEVocabulary, Tokenizer, gguf_tokenizer, hf_tokenizer, train_bpe
from openai_files import openai_folder
from sentencepiece_vocab import save_kind, save_llama_gguf, trained_vocabulary

TEXTS = ["I had always thought Jack Gisburn rather a cheap genius--though a good fellow enough.\n\n  Spaces, 123.",
         "<s> hi</s>", "<|user|>\n  Hi<|end|>", "<|endoftext|>naïve café ☕ 日本", "a      b ====== eee  e"]
RECORDS = [{"instruction": f"Say {w}.", "input": "", "output": f"{w} {w}"} for w in ("red", "blue", "green", "tea")]


def _verdict(data_dir: Path) -> str:
    return (data_dir / "the-verdict.txt").read_text(encoding="utf-8")


@functools.cache
def _vocabulary(data_dir: Path) -> BPEVocabulary:
    """300 tokens learned from The Verdict with Llama 3's cut (a Split pre-tokenizer in tokenizer.json)."""
    return train_bpe([_verdict(data_dir)[:8000]], 300, pattern=LLAMA3_SPLIT.pattern)


def _bytelevel(folder: Path, data_dir: Path) -> Tokenizer:
    """`_vocabulary` as a Hugging Face folder's byte-level tokenizer.json."""
    folder.mkdir()
    for name, text in _vocabulary(data_dir).hf_files().items():
        (folder / name).write_text(text, encoding="utf-8")
    return hf_tokenizer(folder / "tokenizer.json")


def _sentencepiece(folder: Path, data_dir: Path) -> Tokenizer:
    return hf_tokenizer(save_kind(trained_vocabulary(_verdict(data_dir)), "llama2", folder))


def _gguf_sentencepiece(folder: Path, data_dir: Path) -> Tokenizer:
    folder.mkdir()
    path = save_llama_gguf(trained_vocabulary(_verdict(data_dir)), folder / "vocabulary.gguf")
    return gguf_tokenizer({"type": "gguf", "path": str(path)})


def _edited_gpt2(folder: Path, data_dir: Path) -> Tokenizer:
    """An OpenAI folder whose encoder.json is GPT-2's in other bytes: recorded by path until now."""
    folder.mkdir()
    tiny = openai_folder(folder, "tiny11")
    encoder = json.loads((tiny / "encoder.json").read_text(encoding="utf-8"))
    (tiny / "encoder.json").write_text(json.dumps(encoder, indent=1), encoding="utf-8")
    tokenizer = load_model(str(tiny)).tokenizer
    assert "encoder" in tokenizer.to_dict()
    return tokenizer


SOURCES = {"hf byte-level": _bytelevel, "hf sentencepiece": _sentencepiece, "gguf sentencepiece": _gguf_sentencepiece,
           "openai gpt-2 files": _edited_gpt2}  # each reads files in a folder the test then deletes


@pytest.mark.parametrize("source", SOURCES)
def test_a_checkpoint_keeps_a_file_tokenizer_and_loads_without_the_file(tmp_path, data_dir, source):
    tokenizer = SOURCES[source](tmp_path / "source", data_dir)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=16, n_layer=1, n_head=1, n_embd=8))
    save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    shutil.rmtree(tmp_path / "source")
    recorded = json.loads((tmp_path / "ckpt" / "config.json").read_text())["tokenizer"]
    assert not any("/" in str(value) for value in recorded.values())  # files named inside the folder, no paths
    _, again, _ = load_checkpoint(tmp_path / "ckpt")
    for text in TEXTS:
        assert again.encode(text) == tokenizer.encode(text), text
        assert again.decode(tokenizer.encode(text)) == tokenizer.decode(tokenizer.encode(text))
    assert (again.name, again.vocab_size, again.eos_id) == (tokenizer.name, tokenizer.vocab_size, tokenizer.eos_id)
    assert getattr(again, "bos_id", None) == getattr(tokenizer, "bos_id", None)
    assert getattr(again, "adds_bos", False) == getattr(tokenizer, "adds_bos", False)


def _tiny_hf_llama(folder: Path, data_dir: Path) -> Path:
    """A random llama-tiny exported as a Hugging Face folder, with `_bytelevel`'s tokenizer.json."""
    tokenizer = _bytelevel(folder.parent / "tokenizer", data_dir)
    torch.manual_seed(0)
    model = GPT(preset_config("llama-tiny", vocab_size=tokenizer.vocab_size))
    export_hf_folder(model, folder, tokenizer)
    shutil.rmtree(folder.parent / "tokenizer")  # the folder's own copy is the source now
    return folder


def _finetune(data: Path, model: Path, out: Path, *extra: str) -> int:
    return main(["finetune", "instruct", "--data", str(data), "--model", str(model), "--out", str(out),
                 "--max-steps", "2", "--batch-size", "2", "--eval-every", "2", "--eval-batches", "1",
                 "--warmup-steps", "0", "--response-tokens", "0", "--train-fraction", "0.75", "--test-fraction", "0",
                 *extra])


def test_a_run_fine_tuned_from_a_hf_folder_loads_after_the_folder_is_deleted(tmp_path, data_dir, capsys):
    source = _tiny_hf_llama(tmp_path / "hf", data_dir)
    (tmp_path / "records.json").write_text(json.dumps(RECORDS * 2))
    ids = load_model(str(source)).tokenizer.encode(TEXTS[0])
    assert _finetune(tmp_path / "records.json", source, tmp_path / "run") == 0
    shutil.rmtree(source)
    assert load_model(str(tmp_path / "run")).tokenizer.encode(TEXTS[0]) == ids
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "run"), "--prompt", "Say red.", "--max-new-tokens", "3"]) == 0


def test_a_lora_run_refuses_a_base_that_changed_in_one_line(tmp_path, data_dir, capsys):
    base, run, tokenizer = tmp_path / "base", tmp_path / "lora", BPETokenizer(_vocabulary(data_dir))
    torch.manual_seed(0)
    save_checkpoint(GPT(preset_config("gpt-tiny", vocab_size=tokenizer.vocab_size)), tokenizer, base)
    trained_on = hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()
    (tmp_path / "records.json").write_text(json.dumps(RECORDS * 2))
    assert _finetune(tmp_path / "records.json", base, run, "--train-layers", "lora", "--lora-rank", "2") == 0
    recorded = json.loads((run / "checkpoints" / "last" / "config.json").read_text())["lora"]
    assert (recorded["base"], recorded["base_sha256"]) == (str(base.resolve()), trained_on)
    assert load_model(str(run)).model is not None  # the same base: loads and merges

    torch.manual_seed(1)  # the base folder now holds other weights (a new save over the old one)
    save_checkpoint(GPT(preset_config("gpt-tiny", vocab_size=tokenizer.vocab_size)), tokenizer, base)
    now = hashlib.sha256((base / "model.safetensors").read_bytes()).hexdigest()
    capsys.readouterr()
    assert main(["generate", "--model", str(run), "--prompt", "hi", "--max-new-tokens", "2"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"error: {run / 'checkpoints'}") and "Traceback" not in "\n".join(lines)
    assert f"the LoRA base {base.resolve()} now has weights with sha256 {now[:12]}…, but the adapters were " \
           f"trained on {trained_on[:12]}…" in lines[-1]
