"""What a model family is: the record each file of `gptlab.models` fills in, and that the generic
readers and writers (`gptlab.checkpoint`, `gptlab.tokenizer`) ask instead of knowing families.

Plain data and pure functions on configs and tensors: this package imports only `config` and
`model`, so the tokenizer and checkpoint layers above it can consult every family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from gptlab.config import GPTConfig

OFFSETS_ONLY = ("trim_offsets",)  # tokenizer.json settings that move character offsets, never ids


@dataclass(frozen=True)
class PreTokenizer:
    """How text is cut into pieces before BPE, under each name model files give that cut."""

    name: str  # llama.cpp's name, as a GGUF file writes it in `tokenizer.ggml.pre`
    pattern: str  # the cut as one regex, the way tiktoken runs it
    hf: dict[str, Any]  # the cut as Hugging Face `tokenizers` writes it (tokenizer.json "pre_tokenizer")

    def matches(self, found: str | dict[str, Any] | None) -> bool:
        """Whether a file's pre-tokenizer (a GGUF name or a tokenizer.json spec) is this cut."""
        if isinstance(found, str):
            return found == self.name
        return found is not None and _ids_only(found) == _ids_only(self.hf)


def _ids_only(spec: Any) -> Any:
    """A tokenizer.json spec without the settings that cannot change token ids."""
    if isinstance(spec, dict):
        return {k: _ids_only(v) for k, v in spec.items() if k not in OFFSETS_ONLY}
    if isinstance(spec, list):
        return [_ids_only(v) for v in spec]
    return spec


@dataclass(frozen=True)
class ChatDefaults:
    """How a family's chat models expect to be prompted when neither the user nor a checkpoint says."""

    prompt_style: str | None = None  # name of a prompt style (e.g. "chatml"); None: no chat format of its own
    default_system: str | None = None  # the system message its chat template inserts when none is given


@dataclass(frozen=True)
class HFFormat:
    """How the family reads and writes Hugging Face folders (`config.json` + safetensors)."""

    model_types: tuple[str, ...]  # config.json "model_type" values it reads
    read_config: Callable[[dict[str, Any], str], GPTConfig]  # (config.json, its path for errors) → our config
    write_config: Callable[[GPTConfig], dict[str, Any]]  # our config → a config.json transformers reads
    to_ours: Callable[[dict[str, Tensor], GPTConfig], dict[str, Tensor]]  # rename, transpose, fuse
    to_hf: Callable[[dict[str, Tensor], GPTConfig], dict[str, Tensor]]  # the inverse, for export


@dataclass(frozen=True)
class GGUFFormat:
    """How the family reads llama.cpp's GGUF files."""

    architectures: tuple[str, ...]  # `general.architecture` values it reads
    read_config: Callable[[dict[str, Any], set[str], str], GPTConfig]  # (metadata, tensor names, path) → config
    to_ours: Callable[[dict[str, Tensor], GPTConfig], dict[str, Tensor]]  # rename, unpermute, fuse


@dataclass(frozen=True)
class Family:
    """Everything gptlab knows about one model family; one file of `gptlab.models` per family."""

    name: str
    holds: Callable[[GPTConfig], bool]  # whether a config has this family's architecture
    # "gpt2": GPT-2's published BPE; "file": the model file's own (a tokenizer.json, a GGUF vocabulary)
    vocabulary: Literal["gpt2", "file"]
    hf: HFFormat
    gguf: GGUFFormat | None = None
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → GPTConfig fields
    pre_tokenizers: tuple[PreTokenizer, ...] = ()  # cuts before BPE that this family brings
    chat: ChatDefaults = ChatDefaults()


Parts = dict[str, list[tuple[str, int]]]
"""Our tensor name → the file's tensors (name, rows) that are stacked along rows to make it."""


def stack_parts(file_state: dict[str, Tensor], parts: Parts) -> dict[str, Tensor]:
    """Our tensors from a file's; tensors no part claims keep their names, so the shape check names them."""
    state, used = {}, set()
    for ours, pieces in parts.items():
        names = [name for name, _ in pieces]
        if all(name in file_state for name in names):
            state[ours] = file_state[names[0]] if len(names) == 1 else torch.cat([file_state[n] for n in names])
            used.update(names)
    state.update({name: tensor for name, tensor in file_state.items() if name not in used})
    return state


def split_parts(state: dict[str, Tensor], parts: Parts) -> dict[str, Tensor]:
    """The file's tensors from ours: the inverse of `stack_parts`, each part contiguous for saving."""
    out = {}
    for ours, pieces in parts.items():
        for (name, _), piece in zip(pieces, state[ours].split([rows for _, rows in pieces])):
            out[name] = piece.contiguous()
    return out
