"""Model families: one file each (`gpt2.py`, `llama.py`), and the lookups that find one.

A reader finds the family by what its file says (Hugging Face `model_type`, GGUF
`general.architecture`), a writer by the model's config, a user by a preset name. Adding a
family is one new file that fills in a `Family`, plus its entry in `FAMILIES`.
"""

from __future__ import annotations

import json
from typing import Any

from gptlab.config import GPTConfig
from gptlab.models import gemma3, gpt2, gpt_neox, llama, mistral, olmo2, phi3, qwen2, qwen3, qwen3_moe
from gptlab.models.family import ChatDefaults, Family, PreTokenizer

__all__ = ["FAMILIES", "PRESETS", "ChatDefaults", "Family", "PreTokenizer", "family_for_gguf", "family_for_hf",
           "family_of", "pre_tokenizer", "preset_config"]

FAMILIES: tuple[Family, ...] = (
    gpt2.FAMILY, llama.FAMILY, qwen2.FAMILY, qwen3.FAMILY, mistral.FAMILY, qwen3_moe.FAMILY, phi3.FAMILY,
    gpt_neox.FAMILY, gemma3.FAMILY, olmo2.FAMILY,
)
PRESETS: dict[str, dict[str, Any]] = {name: {**fields, "family": family.name}
                                      for family in FAMILIES for name, fields in family.presets.items()}
PRE_TOKENIZERS: tuple[PreTokenizer, ...] = tuple(cut for family in FAMILIES for cut in family.pre_tokenizers)


def preset_config(name: str, **overrides: Any) -> GPTConfig:
    """A preset's config by name, with optional field overrides (e.g. a shorter context)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], "name": name, **overrides})


def family_of(config: GPTConfig) -> Family | None:
    """The family `config` names, else the one whose blocks it has (configs that name none); None for a mix."""
    if config.family is not None:
        return next((family for family in FAMILIES if family.name == config.family), None)
    return next((family for family in FAMILIES if family.holds is not None and family.holds(config)), None)


def family_for_hf(hf_config: dict[str, Any], source: str) -> Family:
    """The family that reads a Hugging Face config.json (by its `model_type`)."""
    model_type = hf_config.get("model_type")
    for family in FAMILIES:
        if model_type in family.hf.model_types:
            return family
    known = ", ".join(t for family in FAMILIES for t in family.hf.model_types)
    raise ValueError(f"{source}: model_type {model_type!r} is not supported; gptlab reads Hugging Face "
                     f"folders of model_type {known}")


def family_for_gguf(architecture: Any, source: str) -> Family:
    """The family that reads a GGUF file (by its `general.architecture`)."""
    for family in FAMILIES:
        if family.gguf is not None and architecture in family.gguf.architectures:
            return family
    known = ", ".join(a for family in FAMILIES if family.gguf is not None for a in family.gguf.architectures)
    raise ValueError(f"{source}: architecture {architecture!r} is not supported; gptlab reads GGUF files of {known}")


def pre_tokenizer(found: str | dict[str, Any] | None, source: str) -> PreTokenizer:
    """The cut before BPE that a model file names (GGUF: by name; tokenizer.json: by spec), from any family."""
    for cut in PRE_TOKENIZERS:
        if cut.matches(found):
            return cut
    shown = json.dumps(found) if isinstance(found, dict) else repr(found)
    raise ValueError(f"{source}: pre-tokenizer {shown} is not supported; gptlab knows "
                     f"{', '.join(cut.name for cut in PRE_TOKENIZERS)} (as GGUF names them)")
