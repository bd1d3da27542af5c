"""Instruction fine-tuning (SFT) through the shared loop, then responses for the test split."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from gptlab.checkpoint import CheckpointMeta, load_model
from gptlab.checkpoint.native import write_model_files
from gptlab.data.instruction import (
    Record, collate, encode_record, load_records, split_records, write_records,
)
from gptlab.data.order import EpochOrder, in_order
from gptlab.devices import pick_device
from gptlab.evaluation.responses import RESPONSES_FILE, generate_responses
from gptlab.generation import GenerationSettings, generate
from gptlab.lora import LoRASettings
from gptlab.prompts import PromptStyle, style_for
from gptlab.training.layers import choose_trainable, pinned_to_base
from gptlab.training.loop import Event, RunConfig, Task, TrainSettings, is_main_process, once_over, train
from gptlab.training.losses import lm_loss_on_targets

log = logging.getLogger(__name__)
SAMPLE_TOKENS = 35  # length of the sample response printed at each evaluation


def _book_settings() -> TrainSettings:
    """The book's chapter-7 recipe: AdamW 5e-5, weight decay 0.1, batch 8, two epochs of 935."""
    return TrainSettings(max_steps=234, batch_size=8, lr=5e-5, min_lr=5e-5, warmup_steps=0,
                         weight_decay=0.1, eval_every=50, eval_batches=7)


@dataclass
class SFTConfig(RunConfig):
    """Everything `gptlab finetune instruct` needs; saved as the run's replayable `config.json`."""

    TASK = "instruct"

    data: str  # instruction-data, or a JSON list / JSONL file of instruction records
    out: str = "runs/instruct"  # run folder
    model: str = "gpt-small"  # preset (random init), checkpoint or run folder, HF GPT-2 folder or hub name
    instruction_field: str = "instruction"  # record field holding the instruction
    input_field: str = "input"  # record field holding the optional input
    output_field: str = "output"  # record field holding the desired response
    prompt_style: str = "alpaca"  # alpaca, phi3 or chatml (SmolLM2); saved with the model for chat, evaluation and serving
    mask_prompt: bool = True  # train on the response tokens only (instruction and input add no loss)
    allowed_max_length: int | None = None  # truncate examples to this many tokens (default: the context length)
    train_fraction: float = 0.85  # share of --data for training (the book's 85/10/5)
    test_fraction: float = 0.10  # share for the test set; validation gets the rest
    val_data: str | None = None  # validation records from this file instead (its share of --data trains)
    test_data: str | None = None  # test records from this file instead (its share of --data trains)
    data_seed: int = 123  # seeds the train/test/validation split
    group_by_length: bool = False  # batch records of similar length (less padding, faster; less random batches)
    response_tokens: int = 256  # max new tokens per test-set response after training (0 = skip them)
    train_layers: str = "all"  # all, lora (adapters only: less memory, small updates), last or last-K blocks
    lora_rank: int = 8  # with --train-layers lora: rank of the adapters
    lora_alpha: float = 16.0  # with --train-layers lora: the adapters' update is scaled by alpha / rank
    train: TrainSettings = field(default_factory=_book_settings)

    @staticmethod
    def default_train(given: dict[str, Any]) -> TrainSettings:
        """Optimiser defaults: the book's (meant for pretrained weights)."""
        return _book_settings()


def run(config: SFTConfig, resume: bool = False, on_event=None) -> dict[str, Any]:
    """Fine-tune on instructions as `config` says; writes the run folder and returns its summary."""
    parts = _splits(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        write_records(part, out / f"{name}.json")
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    loaded = load_model(config.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    style = style_for(loaded.meta, config.prompt_style)
    if tokenizer.eos_id is None:
        raise ValueError(f"{config.model}: the {tokenizer.name} tokenizer has no end-of-text token to pad and stop with")
    lora = choose_trainable(model, config.train_layers, LoRASettings(config.lora_rank, config.lora_alpha))
    max_length = min(config.allowed_max_length or model.config.context_length, model.config.context_length)
    train_items = trainable([encode_record(r, tokenizer, style) for r in parts["train"]], _prompt_length, max_length,
                            "training")
    val_items = trainable([encode_record(r, tokenizer, style) for r in parts["val"]], _prompt_length, max_length,
                          "validation")
    settings = once_over(config.train, len(val_items))
    train_order = EpochOrder(len(train_items), settings.seed, run=settings.batch_size,
                             lengths=[len(ids) for ids, _ in train_items] if config.group_by_length else None)

    def batch(items: list[tuple[list[int], int]], positions) -> tuple:
        return collate([items[i] for i in positions], tokenizer.eos_id, config.mask_prompt, max_length)

    meta = CheckpointMeta(prompt_style=style.name, default_system=style.default_system or None, run=config.to_dict(),
                          lora=pinned_to_base(lora, config.model))
    task = Task(
        train_batch=lambda i: batch(train_items, train_order.positions(i, settings.batch_size)),
        val_batch=lambda i: batch(val_items, in_order(i, settings.batch_size, len(val_items))),
        loss=lambda m, b: lm_loss_on_targets(m, *b),
        count_tokens=lambda b: b[0].numel(),
        write_model=lambda m, folder: write_model_files(m, tokenizer, folder, meta, trained_only=lora is not None),
        sample=sample_response(tokenizer, style, parts["val"][0]),
    )
    log.info("instruction fine-tuning %s on %d/%d/%d train/test/validation records (%s prompts, %s)",
             loaded.description, len(parts["train"]), len(parts["test"]), len(parts["val"]), style.name,
             "prompt masked" if config.mask_prompt else "prompt trained")
    summary = train(model, task, settings, out, resume=resume, on_event=on_event)
    add_test_responses(summary, out, style, parts["test"], config.response_tokens, config.train.device, on_event)
    return summary


def _splits(config: SFTConfig) -> dict[str, list[Record]]:
    """Train / test / validation records: shares of --data, or files of their own."""
    fields = (config.instruction_field, config.input_field, config.output_field)
    test_share = 0.0 if config.test_data else config.test_fraction
    train_share = 1.0 - test_share if config.val_data else config.train_fraction
    train, test, val = split_records(load_records(config.data, *fields), config.data_seed, train_share, test_share)
    if config.val_data:
        val = load_records(config.val_data, *fields)
    if config.test_data:
        test = load_records(config.test_data, *fields, require_output=False)
    for name, part in (("training", train), ("validation", val)):
        if not part:
            raise ValueError(f"{config.data}: no records left for {name}; give more records or --val-data")
    return {"train": train, "test": test, "val": val}


T = TypeVar("T")


def _prompt_length(item: tuple[list[int], int]) -> int:
    return item[1]


def trainable(items: list[T], prompt_length: Callable[[T], int], max_length: int, split: str) -> list[T]:
    """Drop examples whose prompt fills `max_length`: no response token would be left to learn."""
    kept = [item for item in items if prompt_length(item) < max_length]
    if len(kept) < len(items):
        log.warning("%d %s records have prompts of %d tokens or more and are left out; raise "
                    "--allowed-max-length or use a model with a longer context", len(items) - len(kept), split,
                    max_length)
    if not kept:
        raise ValueError(f"no {split} record fits in {max_length} tokens")
    return kept


def sample_response(tokenizer, style: PromptStyle, record: Record) -> Callable[[nn.Module], str]:
    """A function that answers one fixed validation instruction greedily, to watch the model learn."""
    prompt = tokenizer.encode(style.prompt(record.instruction, record.input))
    settings = GenerationSettings(max_new_tokens=SAMPLE_TOKENS, temperature=0).stopping_for(tokenizer)

    def sample(model: nn.Module) -> str:
        return tokenizer.decode(list(generate(model, prompt, settings)))

    return sample


def add_test_responses(summary: dict[str, Any], out: Path, style: PromptStyle, test: list[Record],
                       max_new_tokens: int, device: str, on_event) -> None:
    """After a finished run: greedy responses of its best checkpoint to every test record, in the
    book's file format (for `gptlab judge`), named in `summary` and `summary.json`."""
    if summary["status"] == "interrupted" or max_new_tokens <= 0 or not test or not is_main_process():
        return
    loaded = load_model(str(out), device=pick_device(device))
    responses = []
    for response in generate_responses(loaded.model, loaded.tokenizer, style, test, max_new_tokens):
        responses.append(response)
        if on_event is not None:
            on_event(Event("respond", len(responses), {"total": len(test)}))
    path = out / RESPONSES_FILE
    write_records(test, path, responses)
    log.info("wrote %d test-set responses to %s", len(responses), path)
    summary["responses"] = str(path)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
