"""GGUF files (llama.cpp's format), dequantized into our GPT; the file's family maps the names.

Read with the `gguf` package; quantized tensors (Q4_1, Q8_0, ...) become float32. Which family
reads the file, how its metadata becomes a `GPTConfig` and how its tensor names become ours
(llama.cpp's interleaved q/k rows included) is the family's business (`gptlab.models`).
The tokenizer and the chat template come from the file too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gptlab.checkpoint.weights import build_model
from gptlab.model import GPT
from gptlab.models import family_for_gguf
from gptlab.tokenizer import Tokenizer
from gptlab.tokenizer.bytelevel import gguf_tokenizer
from gptlab.tokenizer.chat_template import ChatTemplate, gguf_chat_template

# Tensors llama.cpp stores that are settings, not weights: handed to the family's config reader by this name.
SETTING_TENSORS = {"rope_freqs.weight": "rope_freqs"}  # Llama 3.1's rotary factors, one per frequency


def load_gguf(path: str | Path, dtype: torch.dtype | None = torch.float32,
              source: dict[str, Any] | None = None) -> tuple[GPT, Tokenizer, ChatTemplate | None]:
    """Our GPT, the file's tokenizer and its chat template (None without one) from a GGUF file of a
    family gptlab knows."""
    from gguf import GGUFReader

    path = Path(path)
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable GGUF file ({err}); it may be truncated (an interrupted download "
                         "or copy) or in another format") from err
    meta = {key: field.contents() for key, field in reader.fields.items() if not key.startswith("tokenizer.ggml.")}
    family = family_for_gguf(meta.get("general.architecture"), str(path))
    assert family.gguf is not None  # family_for_gguf returns only families that read GGUF
    settings = {t.name: t for t in reader.tensors if t.name in SETTING_TENSORS}  # settings, stored as tensors
    meta.update({SETTING_TENSORS[name]: tuple(_dequantized(t).tolist()) for name, t in settings.items()})
    config = family.gguf.read_config(meta, {t.name: _shape(t) for t in reader.tensors if t.name not in settings},
                                     str(path))
    fields = reader.fields
    tokenizer = gguf_tokenizer(source or {"type": "gguf", "path": str(path.resolve())}, fields)
    template = gguf_chat_template(lambda key: fields[key].contents() if key in fields else None, str(path), tokenizer)
    tensors = {t.name: _dequantized(t) for t in reader.tensors if t.name not in settings}
    try:
        state = family.gguf.to_ours(tensors, config)
    except ValueError as err:  # a tensor that cannot be what its name says, named as the file names it
        raise ValueError(f"{path}: {err}") from None
    return build_model(config, state, str(path), dtype), tokenizer, template


def _dequantized(tensor: Any) -> Tensor:
    """A GGUF tensor as float32; integer tensors (I8 ... I64) keep their type, for the family's check to refuse."""
    from gguf import GGMLQuantizationType as Type
    from gguf.quants import dequantize

    if tensor.tensor_type in (Type.I8, Type.I16, Type.I32, Type.I64):
        return torch.from_numpy(np.array(tensor.data).reshape(_shape(tensor)))
    if tensor.tensor_type in (Type.F32, Type.F16, Type.F64):
        values = np.asarray(tensor.data, dtype=np.float32)
    else:
        values = dequantize(tensor.data, tensor.tensor_type)
    return torch.from_numpy(np.array(values.reshape(_shape(tensor)), dtype=np.float32))  # a writable copy


def _shape(tensor: Any) -> tuple[int, ...]:
    """A GGUF tensor's shape in torch's order (ggml lists dimensions innermost first)."""
    return tuple(int(n) for n in reversed(tensor.shape.tolist()))
