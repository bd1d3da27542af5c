"""GGUF files written by llama.cpp's own `gguf` package from a tiny Hugging Face folder: the fixtures
for each family's GGUF reader. Each family's test gives the metadata and the tensors under llama.cpp's
names and layouts (as llama.cpp's convert_hf_to_gguf.py writes them); the tokenizer is the folder's
byte-level tokenizer.json, written as llama.cpp writes a "gpt2" vocabulary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch


def write_gguf(path: Path, architecture: str, metadata: dict[str, Any], tensors: dict[str, torch.Tensor],
               tokenizer_json: Path, pre: str = "smollm") -> Path:
    """A GGUF file of `architecture` with `metadata` (keys without the architecture prefix, e.g.
    "block_count"; Python ints are written uint32, floats float32, bools, strings), `tensors` as float32 (integer
    ones as they are, for the readers' refusals; our row-major shapes: the writer reverses them into ggml's order),
    and the tokenizer."""
    import gguf

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny")
    for key, value in metadata.items():
        full = f"{architecture}.{key}"
        if isinstance(value, bool):
            writer.add_bool(full, value)
        elif isinstance(value, int):
            writer.add_uint32(full, value)
        elif isinstance(value, float):
            writer.add_float32(full, value)
        elif isinstance(value, str):
            writer.add_string(full, value)
        else:
            writer.add_array(full, value)
    _add_tokenizer(writer, tokenizer_json, pre)
    for name, tensor in tensors.items():
        values = tensor.detach().float() if tensor.is_floating_point() else tensor.detach()
        writer.add_tensor(name, np.ascontiguousarray(values.numpy()))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add_tokenizer(writer: Any, tokenizer_json: Path, pre: str) -> None:
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab = {**data["model"]["vocab"], **{t["content"]: t["id"] for t in data.get("added_tokens", [])}}
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    special = {t["id"] for t in data.get("added_tokens", []) if t.get("special")}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3: control, 1: normal
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)


def llama_cpp_names(state: dict[str, torch.Tensor], architecture: str, n_layer: int) -> dict[str, torch.Tensor]:
    """A Hugging Face state dict under llama.cpp's tensor names for `architecture`, from the `gguf` package's
    own map (the one convert_hf_to_gguf.py renames with), tensors unchanged: right as they are for the
    architectures llama.cpp rotates as halves (qwen2, qwen3, olmo2), not for llama's interleaved q/k."""
    import gguf

    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == architecture)
    names = gguf.get_tensor_name_map(arch, n_layer)
    return {names.get_name(name, try_suffixes=(".weight", ".bias")): tensor for name, tensor in state.items()}


def llama_cpp_metadata(folder: Path) -> dict[str, Any]:
    """The `<arch>.…` keys convert_hf_to_gguf.py's TextModel writes from a folder's config.json for every
    architecture (without `vocab_size`, which only its llama writer adds); architectures add their own."""
    hf = json.loads((folder / "config.json").read_text())
    rope = hf.get("rope_parameters") or {}
    rope = rope.get("full_attention", rope)  # per-block-kind parameters (OLMo 3, Gemma 3)
    meta = {"block_count": hf["num_hidden_layers"], "context_length": hf["max_position_embeddings"],
            "embedding_length": hf["hidden_size"], "feed_forward_length": hf["intermediate_size"],
            "attention.head_count": hf["num_attention_heads"], "attention.head_count_kv": hf["num_key_value_heads"],
            "rope.freq_base": float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
            "attention.layer_norm_rms_epsilon": float(hf["rms_norm_eps"])}
    if hf.get("head_dim") is not None:
        meta["attention.key_length"] = meta["attention.value_length"] = hf["head_dim"]
    return meta


def small_vocabulary(tokenizer_json: Path, size: int, path: Path) -> Path:
    """The first `size` tokens of a byte-level tokenizer.json whose merges make tokens in id order (SmolLM2's),
    with the merges that make them: a fixture vocabulary that GGUFReader parses in a fraction of the time
    (it reads 49,152 strings one by one, about 5 s, twice per load)."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab, merges = data["model"]["vocab"], data["model"]["merges"]
    first_merged = len(vocab) - len(merges)
    data["model"]["vocab"] = {token: i for token, i in vocab.items() if i < size}
    data["model"]["merges"] = merges[: size - first_merged]
    data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["id"] < size]
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def hf_state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face folder saved as one model.safetensors."""
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))
