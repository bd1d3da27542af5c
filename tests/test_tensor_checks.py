"""A file tensor that cannot be the weight its name says (not floating point, or not the shape the config
gives it) is refused under the file's own name, before any reader fuses, transposes or reshapes it: an
int64 q_proj beside float k/v must not become floats in the fused c_attn. Each reader, each fused layout."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gguf_files import llama_cpp_metadata, llama_cpp_names, write_gguf
from gptlab.checkpoint import openai_gpt2
from gptlab.checkpoint.hf import export_hf_folder
from gptlab.cli import main
from gptlab.loading import load_model
from gptlab.model import GPT
from gptlab.models import preset_config
from gptlab.models.gpt2 import GPT2_SPLIT
from gptlab.tokenizer.gpt2 import bytes_to_unicode
from openai_files import openai_folder

VOCAB = 257  # the byte tokenizer's: every preset below is cut to it


def byte_tokenizer_json(path: Path) -> Path:
    """A byte-level BPE tokenizer.json of the 256 bytes and one merge (" t"): about the smallest vocabulary a
    Hugging Face folder or a GGUF file can carry, read in no time."""
    vocab = {char: byte for byte, char in bytes_to_unicode().items()} | {"Ġt": 256}
    spec = {"version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": GPT2_SPLIT.hf,
            "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                                                "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                      "merges": ["Ġ t"]}}
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def hf_folder(tmp_path: Path, preset: str, change: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """A preset's random model exported as a Hugging Face folder, its tensors then changed by `change`."""
    torch.manual_seed(0)
    vocab = {} if preset == "gpt-tiny" else {"vocab_size": VOCAB}  # GPT-2's folders read GPT-2's own BPE
    folder = export_hf_folder(GPT(preset_config(preset, **vocab)), tmp_path / preset)
    if vocab:
        byte_tokenizer_json(folder / "tokenizer.json")
    state = load_file(str(folder / "model.safetensors"))
    change(state)
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(folder / "model.safetensors"))
    return folder


def to_int64(name: str) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(state: dict[str, torch.Tensor]) -> None:
        state[name] = (state[name] * 100).long()
    return change


def drop_row(name: str) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(state: dict[str, torch.Tensor]) -> None:
        state[name] = state[name][:-1]
    return change


def fuse_experts(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[dict[str, torch.Tensor]], None]:
    """transformers 5's layout of Qwen3-MoE experts (per block: gate_up_proj (E, 2I, H), down_proj (E, H, I)),
    then `change`."""
    def fused(state: dict[str, torch.Tensor]) -> None:
        for i in range(2):
            expert = "model.layers.{i}.mlp.experts.{e}.{proj}.weight"
            pieces = {proj: [state.pop(expert.format(i=i, e=e, proj=proj)) for e in range(4)]
                      for proj in ("gate_proj", "up_proj", "down_proj")}
            state[f"model.layers.{i}.mlp.experts.gate_up_proj"] = torch.stack(
                [torch.cat([gate, up]) for gate, up in zip(pieces["gate_proj"], pieces["up_proj"])])
            state[f"model.layers.{i}.mlp.experts.down_proj"] = torch.stack(pieces["down_proj"])
        change(state)
    return fused


HF_CASES = [  # (preset, change, the error after the file's path)
    ("llama-tiny", to_int64("model.layers.0.self_attn.q_proj.weight"),
     "model.layers.0.self_attn.q_proj.weight has dtype int64, expected a floating-point tensor"),
    ("llama-tiny", drop_row("model.layers.1.mlp.up_proj.weight"),
     "model.layers.1.mlp.up_proj.weight has shape (127, 64), expected (128, 64)"),
    ("phi3-tiny", to_int64("model.layers.0.self_attn.qkv_proj.weight"),
     "model.layers.0.self_attn.qkv_proj.weight has dtype int64"),
    ("phi3-tiny", drop_row("model.layers.0.mlp.gate_up_proj.weight"),
     "model.layers.0.mlp.gate_up_proj.weight has shape (255, 64), expected (256, 64)"),
    ("qwen3-moe-tiny", to_int64("model.layers.1.mlp.experts.3.up_proj.weight"),
     "model.layers.1.mlp.experts.3.up_proj.weight has dtype int64"),
    ("qwen3-moe-tiny", fuse_experts(to_int64("model.layers.0.mlp.experts.gate_up_proj")),
     "model.layers.0.mlp.experts.gate_up_proj has dtype int64"),
    ("qwen3-moe-tiny", fuse_experts(drop_row("model.layers.1.mlp.experts.down_proj")),
     "model.layers.1.mlp.experts.down_proj has shape (3, 64, 32), expected (4, 64, 32)"),
    ("gemma3-tiny", to_int64("model.layers.0.input_layernorm.weight"),  # before Gemma's 1 + w makes it float
     "model.layers.0.input_layernorm.weight has dtype int64"),
    ("pythia-tiny", to_int64("gpt_neox.layers.1.attention.query_key_value.bias"),
     "gpt_neox.layers.1.attention.query_key_value.bias has dtype int64"),
    ("gpt-tiny", drop_row("transformer.h.0.attn.c_attn.weight"),  # Conv1D: the file's (in, out), not ours
     "transformer.h.0.attn.c_attn.weight has shape (15, 48), expected (16, 48)"),
]


@pytest.mark.parametrize("preset, change, message", HF_CASES, ids=[" ".join(case[2].split()[:3]) for case in HF_CASES])
def test_a_hugging_face_folder_names_the_tensor(tmp_path, preset, change, message):
    folder = hf_folder(tmp_path, preset, change)
    with pytest.raises(ValueError, match=f"^{re.escape(str(folder / 'model.safetensors'))}: {re.escape(message)}"):
        load_model(str(folder))


def test_the_cli_says_it_in_one_line(tmp_path, capsys):
    folder = hf_folder(tmp_path, "llama-tiny", to_int64("model.layers.0.self_attn.q_proj.weight"))
    assert main(["info", str(folder)]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith(f"error: {folder / 'model.safetensors'}: model.layers.0.self_attn.q_proj.weight has "
                           "dtype int64, expected a floating-point tensor"), last


def gguf_file(tmp_path: Path, preset: str, arch: str, change: Callable[[dict[str, torch.Tensor]], None],
              metadata: dict[str, int]) -> Path:
    """A preset's random model written as llama.cpp names its tensors (experts stacked), then changed."""
    folder = hf_folder(tmp_path, preset, lambda state: None)
    state = load_file(str(folder / "model.safetensors"))
    experts = metadata.get("expert_count", 0)
    for i in range(2):
        for proj in ("gate_proj", "up_proj", "down_proj") if experts else ():
            pieces = [state.pop(f"model.layers.{i}.mlp.experts.{e}.{proj}.weight") for e in range(experts)]
            state[f"model.layers.{i}.mlp.experts.{proj}.weight"] = torch.stack(pieces)
    tensors = llama_cpp_names(state, arch, 2)
    change(tensors)
    meta = {**llama_cpp_metadata(folder), "vocab_size": VOCAB, **metadata}
    return write_gguf(tmp_path / f"{arch}.gguf", arch, meta, tensors, folder / "tokenizer.json", pre="gpt-2")


def to_int32(name: str) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[name] = (tensors[name] * 100).int()
    return change


@pytest.mark.parametrize("preset, arch, change, message, metadata", [
    ("llama-tiny", "llama", to_int32("blk.0.attn_q.weight"), "blk.0.attn_q.weight has dtype int32", {}),
    ("llama-tiny", "llama", drop_row("blk.1.attn_k.weight"),  # before llama.cpp's interleaving is undone
     "blk.1.attn_k.weight has shape (31, 64), expected (32, 64)", {}),
    ("qwen3-moe-tiny", "qwen3moe", drop_row("blk.0.ffn_gate_exps.weight"),
     "blk.0.ffn_gate_exps.weight has shape (3, 32, 64), expected (4, 32, 64)",
     {"expert_count": 4, "expert_used_count": 2, "expert_feed_forward_length": 32}),
], ids=["int32 attn_q", "attn_k short", "expert stack short"])
def test_a_gguf_file_names_the_tensor(tmp_path, preset, arch, change, message, metadata):
    path = gguf_file(tmp_path, preset, arch, change, metadata)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: {re.escape(message)}"):
        load_model(str(path))


def test_an_openai_checkpoint_names_the_variable(tmp_path, monkeypatch):
    """A TensorFlow bundle whose fused c_attn holds int32 (its dtype enum allows it): refused under
    OpenAI's name, before the leading 1 is dropped and the Conv1D transposed."""
    folder = openai_folder(tmp_path, "tiny11")
    read = openai_gpt2.read_bundle

    def int_c_attn(prefix: Path, verify: bool = True) -> dict[str, np.ndarray]:
        arrays = read(prefix, verify)
        arrays["model/h1/attn/c_attn/w"] = (arrays["model/h1/attn/c_attn/w"] * 100).astype(np.int32)
        return arrays

    monkeypatch.setattr(openai_gpt2, "read_bundle", int_c_attn)
    with pytest.raises(ValueError, match=r"model\.ckpt\.index: model/h1/attn/c_attn/w has dtype int32, expected a "
                                         "floating-point tensor"):
        load_model(str(folder))


@pytest.mark.parametrize("name, change, message", [
    ("trf_blocks.0.att.W_query.weight", lambda t: (t * 100).long(), "has dtype int64"),
    ("trf_blocks.1.att.W_key.bias", lambda t: t[:-1], "has shape (15,), expected (16,)"),
])
def test_the_books_pth_names_the_tensor(tmp_path, name, change, message):
    from book_gpt import book_model

    state = book_model().state_dict()
    state[name] = change(state[name])
    path = tmp_path / "model.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: {re.escape(name)} {re.escape(message)}"):
        load_model(str(path))
