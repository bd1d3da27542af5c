"""Our GPT as a GGUF file that llama.cpp, Ollama and LM Studio run, written with the `gguf` package.

The family says how: its architecture name, metadata and tensor layout (`GGUFFormat.write_config`,
`to_gguf`); a family without them is refused in one line. The tokenizer goes in llama.cpp's form
(`tokenizer.gguf_vocab`: byte-level BPE, or SentencePiece-style with scores; what llama.cpp would tokenize
differently is refused), with the ids that
begin and end a text and a turn, and the chat template. Weights are float32, float16, bfloat16 or
llama.cpp's block quantizations Q8_0 / Q4_0 (32 weights per block, one scale each); vectors (norms,
biases) stay float32 as llama.cpp's converter keeps them. The file appears whole or not at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gptlab.checkpoint.weights import state_to_save
from gptlab.config import GPTConfig
from gptlab.model import GPT, inverse_frequencies
from gptlab.models import FAMILIES, family_of
from gptlab.models.family import Family, GGUFValue
from gptlab.tokenizer import Tokenizer
from gptlab.tokenizer.chat_template import ChatTemplate
from gptlab.tokenizer.gguf_vocab import GGUFVocabulary, gguf_vocabulary

QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0")  # what --quant offers, as llama.cpp's converter names its types
BLOCK = 32  # weights per Q8_0 / Q4_0 block: a matrix's rows must be whole blocks
# kept at Q8_0 under q4_0, as llama.cpp's own quantizer keeps them above the blocks' type
EMBEDDINGS = ("token_embd.weight", "output.weight", "position_embd.weight")
UNUSED = 5  # tokenizer.ggml.token_type of a padding row's made-up token
PAD_SCORE = -1000.0  # its score in a SentencePiece-style vocabulary, as llama.cpp's converter pads


@dataclass(frozen=True)
class GGUFExport:
    """What `export_gguf` wrote, for the report."""

    path: Path
    architecture: str  # general.architecture
    tensor_types: dict[str, int]  # tensors written per type name (e.g. {"Q8_0": 14, "F32": 9})


def export_gguf(model: GPT, path: str | Path, tokenizer: Tokenizer, template: ChatTemplate | None,
                quant: str = "f16") -> GGUFExport:
    """Write `model` (float weights; a LoRA run's merged) to the GGUF file `path`, atomically."""
    from gguf import GGUFWriter

    path, config = Path(path), model.config
    family = family_of(config)
    gguf = family.gguf if family is not None else None
    if gguf is None or gguf.write_config is None or gguf.to_gguf is None:
        written = ", ".join(f.name for f in FAMILIES if f.gguf is not None and f.gguf.write_config is not None)
        raise ValueError(f"{path}: {_family_name(family, config)} has no GGUF form gptlab writes; GGUF export covers "
                         f"the families {written}")
    if config.num_classes is not None:
        raise ValueError(f"{path}: a classifier ({config.num_classes} classes) has no GGUF causal-LM form")
    if quant not in QUANTS:
        raise ValueError(f"{path}: quantization {quant!r} is not one of {', '.join(QUANTS)}")
    vocab = gguf_vocabulary(tokenizer)
    if len(vocab.tokens) > config.vocab_size:
        raise ValueError(f"{path}: the tokenizer has {len(vocab.tokens)} tokens but the model only "
                         f"{config.vocab_size} embedding rows")
    metadata = gguf.write_config(config)
    tensors = {**gguf.to_gguf(state_to_save(model), config), **_setting_tensors(model)}
    architecture = gguf.architectures[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    writer = GGUFWriter(str(partial), architecture)
    try:
        _add_metadata(writer, config.name, quant, metadata)
        _add_tokenizer(writer, vocab, config.vocab_size, template)
        types = {name: _add_tensor(writer, name, tensor, quant) for name, tensor in tensors.items()}
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, path)
    finally:
        writer.close()  # idempotent; here for a write that failed half-way (a full disk)
        partial.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    for kind in types.values():
        counts[kind] = counts.get(kind, 0) + 1
    return GGUFExport(path, architecture, counts)


def _family_name(family: Family | None, config: GPTConfig) -> str:
    if family is None:
        return (f"a model of no family (positions={config.positions}, norm={config.norm}, mlp={config.mlp}: "
                "a mix of blocks llama.cpp does not define)")
    return f"the {family.name} family"


def _setting_tensors(model: GPT) -> dict[str, Tensor]:
    """Settings llama.cpp keeps as tensors: Llama 3's rotary scaling as one divisor per frequency (`rope_freqs`,
    the tensor `checkpoint.gguf` reads back as a setting)."""
    config = model.config
    scaling = config.rope_scaling
    if scaling is None or scaling.kind == "linear":
        return {}
    plain = inverse_frequencies(config.rotary_dims, config.rope_theta)
    return {"rope_freqs.weight": plain / inverse_frequencies(config.rotary_dims, config.rope_theta, scaling)}


def _add_metadata(writer: Any, name: str, quant: str, metadata: dict[str, GGUFValue]) -> None:
    from gguf import GGML_QUANT_VERSION, LlamaFileType

    writer.add_name(name)
    writer.add_file_type({"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16,
                          "bf16": LlamaFileType.MOSTLY_BF16, "q8_0": LlamaFileType.MOSTLY_Q8_0,
                          "q4_0": LlamaFileType.MOSTLY_Q4_0}[quant])
    writer.add_quantization_version(GGML_QUANT_VERSION)
    for key, value in metadata.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        else:
            writer.add_string(key, value)


def _add_tokenizer(writer: Any, vocab: GGUFVocabulary, rows: int, template: ChatTemplate | None) -> None:
    """The vocabulary (padded with unused tokens to the embedding's rows, as llama.cpp's converter pads),
    its begin/end ids, the end-of-turn id and the chat template."""
    padding = range(len(vocab.tokens), rows)
    writer.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list([*vocab.tokens, *(f"[PAD{i}]" for i in padding)])
    writer.add_token_types([*vocab.token_types, *(UNUSED for _ in padding)])
    if vocab.model == "llama":  # SentencePiece-style: scores instead of merges
        writer.add_token_scores([*vocab.scores, *(PAD_SCORE for _ in padding)])
        writer.add_add_space_prefix(vocab.adds_space_prefix)
        if vocab.unknown_id is not None:
            writer.add_unk_token_id(vocab.unknown_id)
    else:
        writer.add_token_merges(vocab.merges)
    if vocab.bos_id is not None:
        writer.add_bos_token_id(vocab.bos_id)
    if vocab.eos_id is not None:
        writer.add_eos_token_id(vocab.eos_id)
    writer.add_add_bos_token(vocab.adds_bos)
    writer.add_add_eos_token(False)  # gptlab ends no text with a token of its own
    if template is not None:
        writer.add_chat_template(template.template)
        if template.end_of_turn is not None:
            writer.add_eot_token_id(template.end_of_turn)


def _add_tensor(writer: Any, name: str, tensor: Tensor, quant: str) -> str:
    """Add one tensor in the type `quant` asks for (vectors as float32); the type's name."""
    from gguf import GGMLQuantizationType as Type
    from gguf.quants import quantize

    values = tensor.detach().to(torch.float32).numpy()
    kind = _tensor_type(name, values.shape, quant)
    if kind in (Type.F32, Type.F16):
        writer.add_tensor(name, np.ascontiguousarray(values.astype(np.float16 if kind == Type.F16 else np.float32)))
    else:
        writer.add_tensor(name, quantize(np.ascontiguousarray(values), kind), raw_dtype=kind)
    return str(kind.name)


def _tensor_type(name: str, shape: tuple[int, ...], quant: str) -> Any:
    """The GGML type of one tensor: float32 for vectors; blocks only for rows of whole blocks (else float16,
    as llama.cpp's converter falls back)."""
    from gguf import GGMLQuantizationType as Type

    if len(shape) == 1 or quant == "f32":
        return Type.F32
    wanted = {"f16": Type.F16, "bf16": Type.BF16, "q8_0": Type.Q8_0, "q4_0": Type.Q4_0}[quant]
    if wanted == Type.Q4_0 and name in EMBEDDINGS:
        wanted = Type.Q8_0
    if wanted in (Type.Q8_0, Type.Q4_0) and shape[-1] % BLOCK:
        return Type.F16
    return wanted
