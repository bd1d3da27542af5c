"""What a gptlab checkpoint records beyond the model and its tokenizer, as one typed object.

It is written into the checkpoint's `config.json` next to `"model"` and `"tokenizer"`, and read
back by every command that loads the checkpoint (chat picks the prompt style, classify the
labels, loading a LoRA checkpoint its base).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gptlab.fields import settings_from_json
from gptlab.lora import LoRASettings
from gptlab.quantize import Quantization
from gptlab.tokenizer.chat_template import ChatTemplate

LORA_RECORD = ("rank", "alpha", "targets", "base")  # what a "lora" entry needs (base_sha256 came later)


@dataclass
class CheckpointMeta:
    """The task-specific part of a checkpoint's config.json; None where the task has nothing to say."""

    prompt_style: str | None = None  # the prompt style it answers in: a named one or prompts.TEMPLATE (its template)
    default_system: str | None = None  # the system message it answers under when a chat gives none
    labels: list[str] | None = None  # a classifier's class names, by class id
    max_length: int | None = None  # a classifier's tokens per text (longer texts are cut)
    lora: LoRASettings | None = None  # a LoRA checkpoint: only adapters (and a new head); the rest is lora.base
    run: dict[str, Any] | None = None  # the config.json of the run that wrote it (replayable)
    quantization: Quantization | None = None  # the weights are int8/int4 (a quantized checkpoint)
    chat_template: ChatTemplate | None = None  # the model file's own chat template, kept through fine-tuning

    def to_dict(self) -> dict[str, Any]:
        """The fields that are set, as JSON values."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        if self.lora is not None:
            data["lora"] = {**dataclasses.asdict(self.lora), "targets": list(self.lora.targets)}
        if self.quantization is not None:
            data["quantization"] = dataclasses.asdict(self.quantization)
        if self.chat_template is not None:
            data["chat_template"] = {**dataclasses.asdict(self.chat_template),
                                     "stop_ids": list(self.chat_template.stop_ids)}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config.json") -> CheckpointMeta:
        """The inverse of `to_dict`, from a whole config.json (its other keys are ignored), each
        value checked; a `"lora"` entry must be complete: its adapters mean nothing without all of it."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        lora = values.get("lora")
        if isinstance(lora, dict):
            missing = [name for name in LORA_RECORD if name not in lora]
            if missing:
                raise ValueError(f"{where}: the \"lora\" entry has no {', '.join(map(repr, missing))} (a LoRA "
                                 "checkpoint records rank, alpha, targets and the base model its adapters belong to)")
        return settings_from_json(cls, values, where)
