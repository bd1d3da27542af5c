"""Instruction fine-tuning (SFT) through the shared loop, then responses for the test split."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch

from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.checkpoint.native import write_model_files
from gptlab.data.instruction import Record, collate, encode_record, load_records, write_records
from gptlab.data.order import EpochOrder, in_order
from gptlab.data.splits import shuffled_split
from gptlab.evaluation.responses import RESPONSES_FILE
from gptlab.fields import setting
from gptlab.loading import load_model
from gptlab.lora import LoRASettings
from gptlab.prompts import style_for
from gptlab.training.layers import choose_trainable, pinned_to_base
from gptlab.training.loop import GENERIC, Task, TrainSettings, once_over, train
from gptlab.training.losses import lm_loss_on_targets
from gptlab.training.reports import OnEvent, RunSummary
from gptlab.training.runs import VERIFY, RunConfig, add_test_responses, sample_response, start_run, trainable

log = logging.getLogger(__name__)


@dataclass
class SFTConfig(RunConfig, task="instruct"):
    """Everything `gptlab finetune instruct` needs; saved as the run's replayable `config.json`."""

    SUMMARY = "instruction fine-tuning (SFT) on instruction/input/output records"
    DESCRIPTION = ("Teach a model to follow instructions: train on prompt + response with the prompt masked, then "
                   "answer every test record. Writes runs/<name>/ with the train/test/val splits, metrics, loss.png, "
                   f"checkpoints, {RESPONSES_FILE} and summary.json. The optimiser defaults are the book's, for "
                   "pretrained weights; a random preset needs a higher --lr (e.g. 1e-3).")

    data: str = setting("instruction-data, or a JSON list / JSONL file of instruction records")
    out: str = setting("run folder", "runs/instruct")
    model: str = setting("preset (random init), checkpoint or run folder, HF GPT-2 folder or hub name", "gpt-small")
    verify: bool = setting(VERIFY, True)
    instruction_field: str = setting("record field holding the instruction", "instruction")
    input_field: str = setting("record field holding the optional input", "input")
    output_field: str = setting("record field holding the desired response", "output")
    prompt_style: str = setting("auto (the model's own: the style it was tuned with, else its chat template, else "
                                "alpaca), template, alpaca, phi3 or chatml; saved with the model for chat, "
                                "evaluation and serving", "auto")
    mask_prompt: bool = setting("train on the response tokens only (instruction and input add no loss)", True)
    allowed_max_length: int | None = setting("truncate examples to this many tokens (default: the context length)",
                                             None)
    train_fraction: float = setting("share of --data for training (the book's 85/10/5)", 0.85)
    test_fraction: float = setting("share for the test set; validation gets the rest", 0.10)
    val_data: str | None = setting("validation records from this file instead (its share of --data trains)", None)
    test_data: str | None = setting("test records from this file instead (its share of --data trains)", None)
    data_seed: int = setting("seeds the train/test/validation split", 123)
    group_by_length: bool = setting("batch records of similar length (less padding, faster; less random batches)",
                                    False)
    response_tokens: int = setting("max new tokens per test-set response after training (0 = skip them)", 256)
    train_layers: str = setting("all, lora (adapters only: less memory, small updates), last or last-K blocks", "all")
    lora: LoRASettings = setting("the adapters of --train-layers lora", factory=LoRASettings, prefix="lora")
    train: TrainSettings = setting("optimisation; unset fields follow the recipe", factory=TrainSettings)

    # The book's chapter-7 recipe: AdamW 5e-5, weight decay 0.1, batch 8, two epochs of 935.
    RECIPE = dataclasses.replace(GENERIC, max_steps=234, batch_size=8, lr=5e-5, min_lr=5e-5, warmup_steps=0,
                                 weight_decay=0.1, eval_every=50, eval_batches=7)

    def run(self, resume: bool = False, on_event: OnEvent | None = None) -> RunSummary:
        """Fine-tune on instructions as this config says (see `run`)."""
        return run(self, resume, on_event)


def run(config: SFTConfig, resume: bool = False, on_event: OnEvent | None = None) -> RunSummary:
    """Fine-tune on instructions as `config` says; writes the run folder and returns its summary."""
    parts = _splits(config)
    out = start_run(config, parts, write_records)

    loaded = load_model(config.model, verify=config.verify)
    model, tokenizer = loaded.model, loaded.tokenizer
    style = style_for(loaded.meta, config.prompt_style)
    end = style.end_id(tokenizer)  # what each response ends with: end-of-text, or the template's end-of-turn
    if end is None:
        raise ValueError(f"{config.model}: the {tokenizer.name} tokenizer has no end-of-text token "
                         "to pad and stop with")
    adapters_from = torch.Generator().manual_seed(config.train.seed)
    lora = choose_trainable(model, config.train_layers, config.lora, adapters_from)
    max_length = min(config.allowed_max_length or model.config.context_length, model.config.context_length)
    items = {name: trainable([encode_record(r, tokenizer, style) for r in parts[name]], lambda item: item[1],
                             max_length, split)
             for name, split in (("train", "training"), ("val", "validation"))}
    settings = once_over(config.train, len(items["val"]))
    train_order = EpochOrder(len(items["train"]), settings.seed, run=settings.batch_size,
                             lengths=[len(ids) for ids, _ in items["train"]] if config.group_by_length else None)

    def batch(name: str, positions) -> tuple:
        return collate([items[name][i] for i in positions], end, config.mask_prompt, max_length)

    meta = CheckpointMeta(prompt_style=style.name, default_system=style.default_system or None, run=config.to_dict(),
                          lora=pinned_to_base(lora, config.model), chat_template=loaded.meta.chat_template)
    task = Task(
        train_batch=lambda i: batch("train", train_order.positions(i, settings.batch_size)),
        val_batch=lambda i: batch("val", in_order(i, settings.batch_size, len(items["val"]))),
        loss=lambda m, b: lm_loss_on_targets(m, *b),
        count_tokens=lambda b: b[0].numel(),
        write_model=lambda m, folder: write_model_files(m, tokenizer, folder, meta, trained_only=lora is not None),
        sample=sample_response(tokenizer, style, parts["val"][0]),
        report=lambda summary: add_test_responses(summary, out, style, parts["test"], config.response_tokens,
                                                  config.train.device, on_event, config.verify),
    )
    log.info("instruction fine-tuning %s on %d/%d/%d train/test/validation records (%s prompts, %s)",
             loaded.description, len(parts["train"]), len(parts["test"]), len(parts["val"]), style.name,
             "prompt masked" if config.mask_prompt else "prompt trained")
    return train(model, task, settings, out, resume=resume, on_event=on_event)


def _splits(config: SFTConfig) -> dict[str, list[Record]]:
    """Train / test / validation records: shares of --data, or files of their own."""
    fields = (config.instruction_field, config.input_field, config.output_field)
    test_share = 0.0 if config.test_data else config.test_fraction
    train_share = 1.0 - test_share if config.val_data else config.train_fraction
    parts = shuffled_split(load_records(config.data, *fields), config.data_seed,
                           {"train": train_share, "test": test_share}, rest="val")
    if config.val_data:
        parts["val"] = load_records(config.val_data, *fields)
    if config.test_data:
        parts["test"] = load_records(config.test_data, *fields, require_output=False)
    for name, split in (("train", "training"), ("val", "validation")):
        if not parts[name]:
            raise ValueError(f"{config.data}: no records left for {split}; give more records or --val-data")
    return parts
