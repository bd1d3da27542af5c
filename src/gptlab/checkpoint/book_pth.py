"""State dicts of the book's `GPTModel` ("Build a Large Language Model (From Scratch)", ch. 4-7) as `.pth` files.

Its layout: `tok_emb`, `pos_emb`, `trf_blocks.{i}.att.W_query/W_key/W_value` (bias only with
qkv_bias), `att.out_proj`, `ff.layers.0` / `ff.layers.2`, `norm1` / `norm2` / `final_norm` with
`scale` / `shift`, an untied `out_head` (no bias; a chapter-6 classifier's has one, with a row per
class), and causal-mask buffers `att.mask`. Its nn.Linear weights are (out, in) like ours, so
q/k/v concatenate into `c_attn` as they are. Read with `weights_only=True`: no pickled code runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gptlab.checkpoint.weights import build_model
from gptlab.config import GPTConfig
from gptlab.model import GPT
from gptlab.models import PRESETS
from gptlab.models.family import check_piece

TOP_KEYS = {"tok_emb.weight": "wte.weight", "pos_emb.weight": "wpe.weight", "final_norm.scale": "ln_f.weight",
            "final_norm.shift": "ln_f.bias", "out_head.weight": "lm_head.weight", "out_head.bias": "lm_head.bias"}
BLOCK_KEYS = {"att.out_proj.weight": "attn.c_proj.weight", "att.out_proj.bias": "attn.c_proj.bias",
              "ff.layers.0.weight": "mlp.c_fc.weight", "ff.layers.0.bias": "mlp.c_fc.bias",
              "ff.layers.2.weight": "mlp.c_proj.weight", "ff.layers.2.bias": "mlp.c_proj.bias",
              "norm1.scale": "ln_1.weight", "norm1.shift": "ln_1.bias",
              "norm2.scale": "ln_2.weight", "norm2.shift": "ln_2.bias"}
QKV = ("W_query", "W_key", "W_value")
_BLOCK = re.compile(r"trf_blocks\.(\d+)\.(.+)")
_QKV = re.compile(r"att\.(W_query|W_key|W_value)\.(weight|bias)")
LAYOUT = ("tok_emb.weight, pos_emb.weight, trf_blocks.{i}.att.W_query/W_key/W_value/out_proj, "
          "trf_blocks.{i}.ff.layers.0/2, trf_blocks.{i}.norm1/norm2.scale/shift, final_norm, out_head.weight")
# The book's --model_size names -> gptlab presets; the short names (before " (") work too.
BOOK_CONFIGS = {"gpt2-small (124M)": "gpt2", "gpt2-medium (355M)": "gpt2-medium",
                "gpt2-large (774M)": "gpt2-large", "gpt2-xl (1558M)": "gpt2-xl"}


def load_book_pth(path: str | Path, config: str | None = None, n_head: int | None = None,
                  dtype: torch.dtype | None = torch.float32) -> GPT:
    """Our GPT from a `.pth` state dict of the book's GPTModel (a language model or a classifier).

    Every shape is read from the weights; only the number of heads is not in them. It comes from
    `n_head`, else from `config` (the book's names, e.g. "gpt2-medium (355M)", or a gptlab preset,
    checked against the weights), else from the GPT-2 size with the weights' width.
    """
    path = Path(path)
    state = book_to_gptlab(read_pth(path), str(path))
    return build_model(book_config(state, config, n_head, str(path)), state, str(path), dtype)


def read_pth(path: Path) -> dict[str, Tensor]:
    """The tensors of a `.pth` file: a state dict, or the book's {"model_state_dict": ...} bundle."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        data: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and weights_only refusals all land here
        raise ValueError(f"{path}: not a readable PyTorch weights file ({err})") from err
    if isinstance(data, dict) and isinstance(data.get("model_state_dict"), dict):
        data = data["model_state_dict"]  # the book's model_and_optimizer.pth
    if not isinstance(data, dict) or not all(isinstance(v, Tensor) for v in data.values()):
        raise ValueError(f"{path}: expected a state dict (names -> tensors) of the book's GPTModel")
    return data


def book_to_gptlab(state: dict[str, Tensor], source: str) -> dict[str, Tensor]:
    """Rename the book's keys to ours and join q/k/v into c_attn; unknown keys are one error."""
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}  # (layer, weight|bias) -> {W_query: ...}
    unknown = []
    for key, tensor in state.items():
        block = _BLOCK.fullmatch(key)
        part = block[2] if block else ""
        if key in TOP_KEYS:
            out[TOP_KEYS[key]] = tensor
        elif part in BLOCK_KEYS:
            out[f"h.{block[1]}.{BLOCK_KEYS[part]}"] = tensor
        elif match := _QKV.fullmatch(part):
            qkv.setdefault((block[1], match[2]), {})[match[1]] = tensor
        elif part != "att.mask":  # the causal-mask buffer is rebuilt, not loaded
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise ValueError(f"{source}: unknown key(s) {shown}; expected the book's GPTModel layout: {LAYOUT}")
    for (layer, kind), parts in qkv.items():
        missing = [f"trf_blocks.{layer}.att.{name}.{kind}" for name in QKV if name not in parts]
        if missing:
            raise ValueError(f"{source}: missing key(s) {', '.join(missing)} of the book's GPTModel layout")
        width = state["tok_emb.weight"].shape[-1] if "tok_emb.weight" in state else parts["W_query"].shape[0]
        shape = (width, width) if kind == "weight" else (width,)
        try:  # each checked before the concatenation, which would make floats of an integer W_query
            pieces = [check_piece(f"trf_blocks.{layer}.att.{name}.{kind}", parts[name], shape) for name in QKV]
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
        out[f"h.{layer}.attn.c_attn.{kind}"] = torch.cat(pieces, dim=0)  # (3C, C) or (3C,)
    return out


def book_config(state: dict[str, Tensor], config: str | None, n_head: int | None, source: str) -> GPTConfig:
    """The GPTConfig the weights describe; heads from `n_head`, the named config, or the GPT-2 sizes."""
    for key in ("wte.weight", "wpe.weight", "lm_head.weight"):
        if key not in state:
            raise ValueError(f"{source}: missing the book's {_book_key(key)} (layout: {LAYOUT})")
    vocab_size, n_embd = state["wte.weight"].shape
    n_layer = len({key.split(".")[1] for key in state if key.startswith("h.")})
    heads = n_head or _heads(config, n_layer, n_embd, source)
    classifier = "lm_head.bias" in state  # the chapter-6 head: nn.Linear(emb_dim, num_classes) with a bias
    try:
        return GPTConfig(
            vocab_size=vocab_size, context_length=state["wpe.weight"].shape[0], n_layer=n_layer, n_head=heads,
            n_embd=n_embd, qkv_bias="h.0.attn.c_attn.bias" in state, tie_embeddings=False,
            num_classes=state["lm_head.weight"].shape[0] if classifier else None, name=f"book-{config or 'gpt'}",
        )
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def _heads(config: str | None, n_layer: int, n_embd: int, source: str) -> int:
    """Attention heads: from the named config (checked against the weights) or the GPT-2 size of this width."""
    gpt2_sizes = {PRESETS[name]["n_embd"]: name for name in BOOK_CONFIGS.values()}
    if config is None:
        if n_embd not in gpt2_sizes:
            raise ValueError(
                f"{source}: the weights do not say how many attention heads the model has, and width {n_embd} is "
                "not a GPT-2 size (768, 1024, 1280, 1600); pass n_head"
            )
        return PRESETS[gpt2_sizes[n_embd]]["n_head"]
    preset = _preset(config)
    shape = PRESETS[preset]
    if (shape["n_layer"], shape["n_embd"]) != (n_layer, n_embd):
        raise ValueError(
            f"{source}: config {config!r} has {shape['n_layer']} layers of width {shape['n_embd']}, but the weights "
            f"have {n_layer} of width {n_embd}"
        )
    return shape["n_head"]


def _preset(config: str) -> str:
    short = {name.split(" (")[0]: preset for name, preset in BOOK_CONFIGS.items()}
    preset = BOOK_CONFIGS.get(config) or short.get(config) or (config if config in BOOK_CONFIGS.values() else None)
    if preset is None:
        raise ValueError(f"unknown config {config!r}; choose one of: {', '.join([*BOOK_CONFIGS, *short])}")
    return preset


def _book_key(ours: str) -> str:
    return next(book for book, name in TOP_KEYS.items() if name == ours)
