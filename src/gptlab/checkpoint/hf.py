"""Hugging Face GPT-2 folders and hub names: import into our GPT, export back.

Our parameter names are GPT-2's, so import is: drop the `transformer.` prefix, skip the
attention-mask buffers, transpose the four Conv1D weights (stored as (in, out)), check shapes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from gptlab.checkpoint.weights import build_model, read_json, read_safetensors, state_to_save, tied_keys
from gptlab.config import GPTConfig
from gptlab.model import GPT, PROJECTION_WEIGHTS

BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers in old HF files
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def config_from_hf(hf: dict[str, Any], source: str) -> GPTConfig:
    """Our config from a Hugging Face GPT-2 config.json; other architectures are refused."""
    if hf.get("model_type") != "gpt2":
        raise ValueError(
            f"{source}: model_type {hf.get('model_type')!r} is not supported; gptlab imports GPT-2 "
            "(model_type \"gpt2\") from Hugging Face folders"
        )
    activation = hf.get("activation_function", "gelu_new")
    if activation not in TANH_GELUS:
        raise ValueError(f"{source}: activation_function {activation!r} is not GPT-2's tanh GELU")
    try:
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            context_length=hf["n_positions"],
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_embd=hf["n_embd"],
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            tie_embeddings=hf.get("tie_word_embeddings", True),
            name=hf.get("_name_or_path") or "hf-gpt2",
        )
    except KeyError as err:
        raise ValueError(f"{source}: missing field {err} in the GPT-2 config") from None


def config_to_hf(config: GPTConfig) -> dict[str, Any]:
    """A config.json that `transformers.GPT2LMHeadModel.from_pretrained` reads."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_ctx": config.context_length,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "torch_dtype": "float32",
    }


def read_hf_weights(folder: Path) -> dict[str, Tensor]:
    """Every tensor of a HF folder: one safetensors file, a sharded index, or a legacy .bin."""
    if (folder / "model.safetensors").is_file():
        return read_safetensors(folder / "model.safetensors")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index).get("weight_map", {}).values()))
        return {k: v for shard in shards for k, v in read_safetensors(folder / shard).items()}
    legacy = folder / "pytorch_model.bin"
    if legacy.is_file():
        try:  # weights_only: never run pickled code from a downloaded file
            return torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"{legacy}: not a readable PyTorch weights file ({err})") from err
    raise FileNotFoundError(f"{folder}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def hf_to_gptlab(hf_state: dict[str, Tensor], config: GPTConfig) -> dict[str, Tensor]:
    """Rename (drop `transformer.`) and transpose Conv1D weights (as views); drop tied and buffer keys."""
    state = {}
    for key, tensor in hf_state.items():
        name = key.removeprefix("transformer.")
        if name.endswith(BUFFER_SUFFIXES) or name in tied_keys(config):
            continue
        state[name] = tensor.t() if name.endswith(PROJECTION_WEIGHTS) else tensor  # a view, no copy
    return state


def load_hf_folder(folder: str | Path, dtype: torch.dtype | None = torch.float32) -> GPT:
    """Our GPT from a Hugging Face GPT-2 folder (`config.json` + weights)."""
    folder = Path(folder)
    config = config_from_hf(read_json(folder / "config.json"), str(folder / "config.json"))
    state = hf_to_gptlab(read_hf_weights(folder), config)
    return build_model(config, state, str(folder), dtype)


def download_from_hub(repo_id: str) -> Path:
    """Fetch config + weights of a hub model (cached by huggingface_hub); clear error offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["config.json", "model.safetensors"]))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise FileNotFoundError(
            f"could not get {repo_id!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            "Offline? Download it on a connected machine and pass its folder instead."
        ) from err


def export_hf_folder(model: GPT, folder: str | Path, tokenizer_files: dict[str, Path] | None = None) -> Path:
    """Write our GPT as a Hugging Face GPT-2 folder that `transformers` loads as is.

    `tokenizer_files` maps HF names (`vocab.json`, `merges.txt`) to files to copy beside it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    for name, tensor in state_to_save(model).items():
        state[f"transformer.{name}" if not name.startswith("lm_head") else name] = (
            tensor.t().contiguous() if name.endswith(PROJECTION_WEIGHTS) else tensor
        )
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config_to_hf(model.config), indent=2) + "\n")
    for hf_name, path in (tokenizer_files or {}).items():
        shutil.copyfile(path, folder / hf_name)
    return folder
