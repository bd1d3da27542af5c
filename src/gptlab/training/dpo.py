"""Preference tuning with DPO through the shared loop, then responses for the test split.

The policy starts as an instruction-tuned model; a frozen copy of those starting weights is the
reference. DPO raises the policy's log-probability of each chosen response relative to the
rejected one, measured against what the reference already gave them, so the model moves only
as far as the preferences ask (Rafailov et al. 2023; the book's chapter 7 bonus notebook).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.checkpoint.native import write_model_files
from gptlab.data.instruction import write_records
from gptlab.data.order import EpochOrder, in_order
from gptlab.data.preference import Preference, collate_preferences, encode_preference, load_preferences
from gptlab.data.splits import shuffled_split
from gptlab.evaluation.responses import RESPONSES_FILE
from gptlab.fields import setting
from gptlab.loading import LoadedModel, load_model
from gptlab.lora import LoRASettings
from gptlab.prompts import style_for
from gptlab.training.layers import choose_trainable, pinned_to_base
from gptlab.training.loop import GENERIC, Batch, Task, TrainSettings, once_over, train
from gptlab.training.losses import dpo_loss, sequence_logprobs
from gptlab.training.reports import OnEvent, RunSummary
from gptlab.training.runs import VERIFY, RunConfig, add_test_responses, sample_response, start_run, trainable

log = logging.getLogger(__name__)
Scorer = Callable[[nn.Module, Batch], tuple[Tensor, Tensor, Tensor]]  # (policy, batch) -> DPO loss, rewards

@dataclass
class DPOConfig(RunConfig, task="dpo"):
    """Everything `gptlab finetune dpo` needs; saved as the run's replayable `config.json`."""

    SUMMARY = "preference tuning (DPO) of an instruction-tuned model on chosen/rejected pairs"
    DESCRIPTION = ("Direct Preference Optimization, as in the book's chapter 7 bonus: make an instruction-tuned model "
                   "(--model, e.g. a finetune instruct run) prefer each record's chosen response over its rejected "
                   "one, relative to a frozen copy of its starting weights, then answer every test record. "
                   "Evaluations report the DPO loss and, on training and validation pairs, the reward accuracy (share "
                   "of pairs whose chosen reward is higher) and mean reward margin; best/ is the lowest validation DPO "
                   "loss. Writes runs/<name>/ with the splits, metrics, loss.png, reward_margins.png, checkpoints, "
                   f"{RESPONSES_FILE} and summary.json. The optimiser defaults are the book's, for GPT-2 355M after "
                   "finetune instruct; --train-layers lora trains adapters only.")

    data: str = setting("instruction-data-with-preference, or a JSON list / JSONL file of records with chosen "
                        "and rejected")
    out: str = setting("run folder", "runs/dpo")
    model: str = setting("instruction-tuned run or checkpoint folder to improve (and, frozen, the reference)",
                         "runs/instruct")
    verify: bool = setting(VERIFY, True)
    instruction_field: str = setting("record field holding the instruction", "instruction")
    input_field: str = setting("record field holding the optional input", "input")
    chosen_field: str = setting("record field holding the preferred response", "chosen")
    rejected_field: str = setting("record field holding the dispreferred response", "rejected")
    prompt_style: str | None = setting("auto (the model's own: the style it was fine-tuned with, else its chat "
                                       "template, else alpaca), template, alpaca, phi3 or chatml", "auto")
    beta: float = setting("DPO's beta: higher keeps the policy nearer the reference (the book: 0.1 to 0.5)", 0.1)
    sum_logprobs: bool = setting("score responses by summed token log-probs (the DPO paper), not the mean "
                                 "(the book)", False)
    mask_prompt: bool = setting("score the response tokens only (instruction and input count for nothing)", True)
    allowed_max_length: int | None = setting("truncate examples to this many tokens (default: the context length)",
                                             None)
    train_fraction: float = setting("share of --data for training (the book's 85/10/5)", 0.85)
    test_fraction: float = setting("share for the test set; validation gets the rest", 0.10)
    data_seed: int = setting("seeds the train/test/validation split", 123)
    response_tokens: int = setting("max new tokens per test-set response after training (0 = skip them)", 256)
    train_layers: str = setting("all, lora (adapters only; the reference stays the starting weights), last or "
                                "last-K blocks", "all")
    lora: LoRASettings = setting("the adapters of --train-layers lora", factory=LoRASettings, prefix="lora")
    train: TrainSettings = setting("optimisation; unset fields follow the recipe", factory=TrainSettings)

    # The book's DPO recipe: AdamW 5e-6 (constant), weight decay 0.01, batch 8, one epoch of 935.
    RECIPE = dataclasses.replace(GENERIC, max_steps=117, batch_size=8, lr=5e-6, min_lr=5e-6, warmup_steps=0,
                                 weight_decay=0.01, eval_every=25, eval_batches=7)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")

    def run(self, resume: bool = False, on_event: OnEvent | None = None) -> RunSummary:
        """Preference-tune as this config says (see `run`)."""
        return run(self, resume, on_event)


def run(config: DPOConfig, resume: bool = False, on_event: OnEvent | None = None) -> RunSummary:
    """Preference-tune as `config` says; writes the run folder and returns its summary.

    `checkpoints/best` is the lowest validation DPO loss (the loop's default choice), not the
    widest reward margin: the loss saturates for pairs already ranked right, so it favours
    ranking more pairs right over pushing a few far apart, which margins reward without bound.
    """
    parts = _splits(config)
    out = start_run(config, {name: [p.record for p in part] for name, part in parts.items()}, write_records)
    loaded = load_model(config.model, verify=config.verify)
    _warn_unless_instruction_tuned(loaded)
    model, tokenizer = loaded.model, loaded.tokenizer
    style = style_for(loaded.meta, config.prompt_style)
    end = style.end_id(tokenizer)  # what each response ends with: end-of-text, or the template's end-of-turn
    if end is None:
        raise ValueError(f"{config.model}: the {tokenizer.name} tokenizer has no end-of-text token to pad with")
    # the starting weights, never trained: copied before LoRA wraps the policy, so no adapter is shared
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    adapters_from = torch.Generator().manual_seed(config.train.seed)
    lora = choose_trainable(model, config.train_layers, config.lora, adapters_from)
    max_length = min(config.allowed_max_length or model.config.context_length, model.config.context_length)
    items = {name: trainable([encode_preference(p, tokenizer, style) for p in parts[name]], lambda pair: len(pair[0]),
                             max_length, split)
             for name, split in (("train", "training"), ("val", "validation"))}
    settings = once_over(config.train, len(items["val"]))
    train_order = EpochOrder(len(items["train"]), settings.seed)

    def batch(name: str, positions) -> Batch:
        return collate_preferences([items[name][i] for i in positions], end, config.mask_prompt, max_length)

    def first_batches(name: str) -> Iterable[Batch]:  # up to eval_batches batches of a split, in order
        count = min(settings.eval_batches, -(-len(items[name]) // settings.batch_size))
        return (batch(name, in_order(i, settings.batch_size, len(items[name]))) for i in range(count))

    score = _scorer(reference, config.beta, mean=not config.sum_logprobs)
    meta = CheckpointMeta(prompt_style=style.name, default_system=style.default_system or None, run=config.to_dict(),
                          lora=pinned_to_base(lora, config.model), chat_template=loaded.meta.chat_template)
    task = Task(
        train_batch=lambda i: batch("train", train_order.positions(i, settings.batch_size)),
        val_batch=lambda i: batch("val", in_order(i, settings.batch_size, len(items["val"]))),
        loss=lambda m, b: score(m, b)[0],
        count_tokens=lambda b: b[0].numel(),
        write_model=lambda m, folder: write_model_files(m, tokenizer, folder, meta, trained_only=lora is not None),
        # rewards on the validation pairs and, as the book does, on training pairs (here always the
        # same first batches, so successive evaluations compare like with like)
        eval_metrics=lambda m: {f"{name}_{key}": value for name in ("train", "val")
                                for key, value in reward_report(m, score, first_batches(name)).items()},
        sample=sample_response(tokenizer, style, parts["val"][0].record),
        report=lambda summary: add_test_responses(summary, out, style, [p.record for p in parts["test"]],
                                                  config.response_tokens, config.train.device, on_event,
                                                  config.verify),
    )
    log.info("DPO on %s against its frozen copy: %d/%d/%d train/test/validation pairs (%s prompts, beta %g)",
             loaded.description, len(parts["train"]), len(parts["test"]), len(parts["val"]), style.name, config.beta)
    return train(model, task, settings, out, resume=resume, on_event=on_event)


def _splits(config: DPOConfig) -> dict[str, list[Preference]]:
    """Seeded train / test / validation shares of --data, as in SFT."""
    preferences = load_preferences(config.data, config.instruction_field, config.input_field, config.chosen_field,
                                   config.rejected_field)
    shares = {"train": config.train_fraction, "test": config.test_fraction}
    parts = shuffled_split(preferences, config.data_seed, shares, rest="val")
    for name in ("train", "val"):
        if not parts[name]:
            raise ValueError(f"{config.data}: no records left for {name}; give more records or other fractions")
    return parts


def _warn_unless_instruction_tuned(loaded: LoadedModel) -> None:
    """DPO refines a model that already answers instructions; say so when this one does not."""
    if loaded.random_weights:
        log.warning("%s: DPO from random weights only exercises the mechanics; start from an instruction-tuned "
                    "run (gptlab finetune instruct)", loaded.description)
    elif loaded.meta.prompt_style is None:
        log.warning("%s was not instruction-tuned by gptlab (no prompt style saved with it); DPO expects a "
                    "model that already follows instructions", loaded.description)


def _scorer(reference: nn.Module, beta: float, mean: bool) -> Scorer:
    """DPO loss and per-pair rewards of a policy on a batch, against the frozen `reference`."""

    def score(policy: nn.Module, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        inputs, targets, mask = batch  # (2B, T) each: chosen rows, then rejected rows
        policy_chosen, policy_rejected = sequence_logprobs(policy(inputs, logits_at=mask), targets, mask, mean).chunk(2)
        reference.to(inputs.device)  # where the loop put the policy (a no-op after the first batch)
        with torch.no_grad():
            logits = reference(inputs, logits_at=mask)
            reference_chosen, reference_rejected = sequence_logprobs(logits, targets, mask, mean).chunk(2)
        return dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta)

    return score


@torch.no_grad()
def reward_report(policy: nn.Module, score: Scorer, batches: Iterable[Batch]) -> dict[str, float]:
    """Reward accuracy (share of pairs whose chosen reward is the higher), mean margin and mean
    rewards over `batches`, the numbers that show whether preferences are being learned."""
    device = next(policy.parameters()).device
    chosen, rejected = zip(*(score(policy, tuple(t.to(device) for t in b))[1:] for b in batches))
    chosen, rejected = torch.cat(chosen), torch.cat(rejected)  # (pairs,)
    return {"reward_accuracy": (chosen > rejected).float().mean().item(),
            "reward_margin": (chosen - rejected).mean().item(),
            "chosen_reward": chosen.mean().item(), "rejected_reward": rejected.mean().item()}
