"""OpenAI's original GPT-2 folders (`gpt2/124M/` as the book's `gpt_download.py` leaves them), no TensorFlow.

A folder holds `hparams.json`, a TensorFlow checkpoint (`model.ckpt.index` + data file, or the
prefix its `checkpoint` file names) and its own tokenizer files `encoder.json` + `vocab.bpe`.
OpenAI's variables are GPT-2's: `model/h{i}/attn/c_attn/w` is HF's `h.{i}.attn.c_attn.weight`,
with conv1d weights [1, in, out], i.e. HF's Conv1D (in, out) plus a leading 1; the head is tied.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gptlab.checkpoint.crc32c import using_fast_crc32c
from gptlab.checkpoint.tf_bundle import read_bundle
from gptlab.checkpoint.weights import build_model, expected_shapes, read_json
from gptlab.config import GPTConfig
from gptlab.model import GPT
from gptlab.models.family import check_piece
from gptlab.models.gpt2 import hf_to_ours
from gptlab.tokenizer import GPT2Tokenizer

log = logging.getLogger(__name__)

HPARAMS = ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")
TOP_NAMES = {"model/wte": "wte.weight", "model/wpe": "wpe.weight", "model/ln_f/g": "ln_f.weight",
             "model/ln_f/b": "ln_f.bias"}
# inside model/h{i}/ -> inside h.{i}.
BLOCK_NAMES = {"ln_1/g": "ln_1.weight", "ln_1/b": "ln_1.bias", "ln_2/g": "ln_2.weight", "ln_2/b": "ln_2.bias",
               "attn/c_attn/w": "attn.c_attn.weight", "attn/c_attn/b": "attn.c_attn.bias",
               "attn/c_proj/w": "attn.c_proj.weight", "attn/c_proj/b": "attn.c_proj.bias",
               "mlp/c_fc/w": "mlp.c_fc.weight", "mlp/c_fc/b": "mlp.c_fc.bias",
               "mlp/c_proj/w": "mlp.c_proj.weight", "mlp/c_proj/b": "mlp.c_proj.bias"}
_BLOCK = re.compile(r"model/h(\d+)/(.+)")
DEFAULT_PREFIX = "model.ckpt"


def is_openai_folder(folder: Path) -> bool:
    """A folder with `hparams.json` and a TensorFlow checkpoint is an OpenAI GPT-2 folder."""
    return (folder / "hparams.json").is_file() and (
        (folder / f"{DEFAULT_PREFIX}.index").is_file() or (folder / "checkpoint").is_file()
    )


def load_openai_folder(folder: str | Path, dtype: torch.dtype | None = torch.float32,
                       verify: bool | None = None) -> tuple[GPT, GPT2Tokenizer]:
    """Our GPT and the folder's own tokenizer from an OpenAI GPT-2 folder.

    The weights stay memory-mapped from the data file when `dtype` is float32 (no second copy).
    `verify` checks every tensor's crc32c; by default only when `google-crc32c` makes that
    instant: the pure-Python check would add about 50 s to every load of 124M.
    """
    folder = Path(folder)
    hparams = read_json(folder / "hparams.json")
    tokenizer = _folder_tokenizer(folder)
    prefix = checkpoint_prefix(folder)
    if verify is None:
        verify = using_fast_crc32c()
        if not verify:
            log.info("not checking the crc32c of %s (pip install google-crc32c to check it at every load)", prefix)
    arrays = read_bundle(prefix, verify)
    source = f"{prefix}.index"
    check_hparams(hparams, {name: array.shape for name, array in arrays.items()}, folder / "hparams.json", source)
    config = config_from_hparams(hparams, folder)
    state = hf_to_ours(openai_to_hf(arrays, config, source), config)
    return build_model(config, state, source, dtype), tokenizer


def checkpoint_prefix(folder: Path) -> Path:
    """The checkpoint the folder's `checkpoint` file names (e.g. a fine-tune's `model-1000`),
    else `model.ckpt`, as TensorFlow's `latest_checkpoint` would pick."""
    pointer = folder / "checkpoint"
    if pointer.is_file():
        match = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', pointer.read_text(encoding="utf-8"), re.M)
        named = folder / Path(match[1]).name if match else None  # TensorFlow may have written an absolute path
        if named is not None and Path(f"{named}.index").is_file():
            return named
    return folder / DEFAULT_PREFIX


def openai_to_hf(arrays: dict[str, np.ndarray], config: GPTConfig, source: str) -> dict[str, Tensor]:
    """OpenAI's variables under GPT-2/HF names, conv1d weights as (in, out); unknown names are an error, and
    each variable is checked first under its own name against the shape `config` gives it (`check_piece`)."""
    names = {tf_name: name for tf_name in arrays if (name := gptlab_name(tf_name)) is not None}
    unknown = [tf_name for tf_name in arrays if tf_name not in names]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise ValueError(
            f"{source}: unknown variable(s) {shown}; an OpenAI GPT-2 checkpoint holds model/wte, model/wpe, "
            "model/h{i}/{ln_1,attn/c_attn,attn/c_proj,ln_2,mlp/c_fc,mlp/c_proj}/..., model/ln_f/{g,b}"
        )
    shapes, state = expected_shapes(config), {}
    for tf_name, name in names.items():
        tensor, conv1d = torch.from_numpy(arrays[tf_name]), tf_name.endswith("/w")
        if name in shapes:  # else the shape check names the key no model of this config has
            ours = tuple(shapes[name])
            try:
                check_piece(tf_name, tensor, (1, *reversed(ours)) if conv1d else ours)  # conv1d: [1, in, out]
            except ValueError as err:
                raise ValueError(f"{source}: {err}") from None
        state[name] = tensor[0] if conv1d and tensor.dim() == 3 else tensor  # [1, in, out] -> (in, out)
    return state


def gptlab_name(tf_name: str) -> str | None:
    """GPT-2/HF parameter name of an OpenAI variable (`model/h3/mlp/c_fc/w` -> `h.3.mlp.c_fc.weight`)."""
    if tf_name in TOP_NAMES:
        return TOP_NAMES[tf_name]
    match = _BLOCK.fullmatch(tf_name)
    if match and match[2] in BLOCK_NAMES:
        return f"h.{int(match[1])}.{BLOCK_NAMES[match[2]]}"
    return None


def config_from_hparams(hparams: dict[str, Any], folder: Path) -> GPTConfig:
    """GPTConfig from OpenAI's hparams.json (GPT-2: LayerNorm eps 1e-5, tanh GELU, tied head)."""
    try:
        return GPTConfig(vocab_size=hparams["n_vocab"], context_length=hparams["n_ctx"], n_layer=hparams["n_layer"],
                         n_head=hparams["n_head"], n_embd=hparams["n_embd"], name=f"openai-gpt2-{folder.name}")
    except ValueError as err:
        raise ValueError(f"{folder / 'hparams.json'}: {err}") from None


def check_hparams(hparams: dict[str, Any], shapes: dict[str, tuple[int, ...]], path: Path, source: str) -> None:
    """One error naming every field of hparams.json that the tensors contradict."""
    missing = [key for key in HPARAMS if key not in hparams]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}; OpenAI's has {', '.join(HPARAMS)}")
    layers = {int(m[1]) for name in shapes if (m := _BLOCK.fullmatch(name))}
    found = {"n_layer": max(layers) + 1 if layers else 0}
    if len(shapes.get("model/wte", ())) == 2:
        found["n_vocab"], found["n_embd"] = shapes["model/wte"]
    if len(shapes.get("model/wpe", ())) == 2:
        found["n_ctx"] = shapes["model/wpe"][0]
    wrong = [f"{key} is {hparams[key]!r} but the tensors have {value}" for key, value in found.items()
             if hparams[key] != value]
    if wrong:
        raise ValueError(f"{path} does not match the checkpoint {source}: {'; '.join(wrong)}")


def _folder_tokenizer(folder: Path) -> GPT2Tokenizer:
    """The folder's own encoder.json + vocab.bpe: a GPT-2 folder is used with the files it came with."""
    for name in ("encoder.json", "vocab.bpe"):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder / name}: missing; an OpenAI GPT-2 folder carries its tokenizer (encoder.json and "
                "vocab.bpe). Copy them from where the checkpoint came from, or fetch the folder with gptlab download"
            )
    return GPT2Tokenizer(folder / "encoder.json", folder / "vocab.bpe")
