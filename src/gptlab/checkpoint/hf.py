"""Hugging Face folders and hub names: import into our GPT, export back, for every family.

A folder is `config.json` + weights (one safetensors file, a sharded index, or a legacy .bin) +
its tokenizer. Its `model_type` picks the family (`gptlab.models`), which knows the config fields,
the weight names (transposed, fused or split) and where the tokenizer is.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePath

import torch
from torch import Tensor

from gptlab.checkpoint.weights import build_model, read_safetensors, state_to_save, write_safetensors
from gptlab.files import read_json
from gptlab.model import GPT
from gptlab.models import Family, family_for_hf, family_of
from gptlab.tokenizer import GPT2Tokenizer, Tokenizer, hf_files, hf_tokenizer
from gptlab.tokenizer.chat_template import ChatTemplate

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
HUB_FILES = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors",
             "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "chat_template.jinja",
             "generation_config.json"]


def weights_file(folder: Path) -> Path:
    """Where a HF folder keeps its weights: one safetensors file, a shard index, or a legacy .bin."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"{folder}: no weights found (looked for {', '.join(WEIGHT_FILES)})")


def read_hf_weights(folder: Path) -> dict[str, Tensor]:
    """Every tensor of a HF folder: one safetensors file, a sharded index, or a legacy .bin."""
    path = weights_file(folder)
    if path.name == "model.safetensors":
        return read_safetensors(path)
    if path.name == "model.safetensors.index.json":
        return {k: v for shard in _shards(path) for k, v in read_safetensors(shard).items()}
    try:  # weights_only: never run pickled code from a downloaded file
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: not a readable PyTorch weights file ({err})") from err


def _shards(index: Path) -> list[Path]:
    """The files a shard index names, each confined to the index's folder: a downloaded index must not
    make gptlab open `../../etc/...` or any other file outside the model."""
    weight_map = read_json(index).get("weight_map", {})
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise ValueError(f"{index}: \"weight_map\" must map tensor names to shard file names")
    shards = []
    for name in sorted(set(weight_map.values())):
        # By name, not by resolving links: the hub's cache links every file of a folder to a blob elsewhere.
        if PurePath(name).is_absolute() or ".." in PurePath(name).parts:
            raise ValueError(f"{index}: shard {name!r} lies outside the model folder {index.parent}; an index may "
                             "only name files inside it: fix or re-download the model")
        shards.append(index.parent / name)
    return shards


def load_hf_folder(folder: str | Path, dtype: torch.dtype | None = torch.float32) -> tuple[GPT, Tokenizer]:
    """Our GPT and the folder's own tokenizer from a Hugging Face folder of a family gptlab knows."""
    folder = Path(folder)
    hf = read_json(folder / "config.json")
    family = family_for_hf(hf, str(folder / "config.json"))
    config = family.hf.read_config(hf, str(folder / "config.json"))
    tokenizer = folder_tokenizer(folder, family)  # before the weights: a missing tokenizer fails fast
    state = read_hf_weights(folder)
    try:
        state = family.hf.to_ours(state, config)
    except ValueError as err:  # a tensor that cannot be what its name says, named as the file names it
        raise ValueError(f"{weights_file(folder)}: {err}") from None
    return build_model(config, state, str(folder), dtype), tokenizer


def folder_tokenizer(folder: Path, family: Family) -> Tokenizer:
    """GPT-2's BPE (the folder's vocab.json + merges.txt, else its tokenizer.json, as a GPT-2 trained with a
    vocabulary of its own exports it, else the published files) or the folder's tokenizer.json."""
    path = folder / "tokenizer.json"
    if family.vocabulary == "gpt2":
        encoder, merges = folder / "vocab.json", folder / "merges.txt"
        if encoder.is_file() and merges.is_file():
            return GPT2Tokenizer(encoder, merges)
        return hf_tokenizer(path) if path.is_file() else GPT2Tokenizer()
    if not path.is_file():
        raise ValueError(f"{path}: missing; a {family.name}-family Hugging Face folder needs the tokenizer saved "
                         "beside the model (tokenizer.save_pretrained(folder) writes it)")
    return hf_tokenizer(path)


def download_from_hub(repo_id: str) -> Path:
    """Fetch config, weights and tokenizer of a hub model (cached by huggingface_hub); clear error offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise FileNotFoundError(
            f"could not get {repo_id!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            "Offline? Download it on a connected machine and pass its folder instead."
        ) from err


def export_hf_folder(model: GPT, folder: str | Path, tokenizer: Tokenizer | None = None,
                     template: ChatTemplate | None = None) -> Path:
    """Write our GPT as a Hugging Face folder of its family (GPT2LMHeadModel, LlamaForCausalLM) that
    `transformers` loads as is, with `tokenizer`'s files beside it when it has a Hugging Face form, and
    the model's chat `template` when it has one."""
    folder, config = Path(folder), model.config
    family = family_of(config)
    if family is None:
        raise ValueError(f"{folder}: no model family holds positions={config.positions}, norm={config.norm}, "
                         f"mlp={config.mlp} (a mix of GPT-2 and Llama blocks), so it has no Hugging Face form")
    if config.num_classes is not None:
        raise ValueError(f"{folder}: a classifier ({config.num_classes} classes) has no Hugging Face causal-LM form")
    hf = family.hf.write_config(config)
    if tokenizer is not None and tokenizer.eos_id is not None:
        hf["eos_token_id"] = tokenizer.eos_id
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(family.hf.to_hf(state_to_save(model), config), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(hf, indent=2) + "\n", encoding="utf-8")
    files = hf_files(tokenizer) if tokenizer is not None else {}
    files.update(template.hf_files(files.get("tokenizer_config.json")) if template is not None else {})
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder
