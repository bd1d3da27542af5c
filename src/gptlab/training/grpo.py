"""Reasoning by reinforcement learning with verifiable rewards: GRPO through the shared loop.

Each rollout batch samples `group_size` completions of a few problems with the serving engine,
scores them with programs (is the number right, is it in the box), and turns each completion's
reward into an advantage over its own group's mean (Shao et al. 2024, DeepSeekMath). The policy
loss raises the probability of completion tokens with positive advantage and lowers the others,
with the probability ratio clipped when a batch trains several updates (PPO), and optionally a KL
penalty to the starting model. Groups whose completions all score the same teach nothing and are
skipped. Evaluations score greedy answers to held-out problems: the loop's `val_loss` is their
error rate (1 - accuracy), so `best/` is the most accurate checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gptlab.checkpoint.manifest import record_files
from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.checkpoint.native import write_model_files
from gptlab.data.order import EpochOrder
from gptlab.data.reasoning import GENERATED, Problem, generated, load_problems
from gptlab.devices import pick_device
from gptlab.evaluation.rewards import BUILTIN, VERIFIERS, WeightedReward, parse_number, parse_rewards
from gptlab.fields import Range, check_ranges, setting
from gptlab.files import write_text_atomically
from gptlab.generation import GenerationSettings
from gptlab.loading import load_model
from gptlab.lora import LoRASettings, adapters_off
from gptlab.model import GPT
from gptlab.prompts import Style, style_for
from gptlab.tokenizer import Tokenizer
from gptlab.training.layers import choose_trainable, pinned_to_base
from gptlab.training.loop import GENERIC, Batch, Task, TrainSettings, train
from gptlab.training.losses import clipped_policy_loss, group_advantages, token_logprobs
from gptlab.training.reports import OnEvent, RunSummary
from gptlab.training.rollouts import Sampled, Scores, complete, pass_at_k, row_seeds, score
from gptlab.training.runs import VERIFY, RunConfig, start_run

log = logging.getLogger(__name__)
ROLLOUTS_FILE = "rollouts.json"  # with --updates-per-batch above 1: the batch in training, for an exact resume
NOTHING_TO_LEARN = 0.05  # a base pass rate below this (or above 1 minus it) leaves few groups with a signal


@dataclass
class GRPOConfig(RunConfig, task="grpo"):
    """Everything `gptlab finetune grpo` needs; saved as the run's replayable `config.json`."""

    SUMMARY = "reasoning RL with verifiable rewards (GRPO): sample groups of answers, reinforce the better ones"
    DESCRIPTION = ("Group Relative Policy Optimization on problems a program can check: arithmetic or countdown "
                   "(generated offline from --data-seed at --difficulty) or a JSONL file of prompt + answer records. "
                   "Each step samples --group-size completions per problem, scores them with --reward functions, "
                   "and reinforces those better than their group's mean. Metrics every step (reward, each reward, "
                   "accuracy, zero_advantage_groups, kl, clip_fraction, completion_length, truncated); each "
                   "evaluation scores greedy answers to the held-out problems (heldout_accuracy; val_loss is 1 "
                   "minus it) and pass@k. Writes runs/<name>/ with metrics, plots, checkpoints and summary.json "
                   "(initial_ and final_heldout_accuracy). --eval-only scores --model without training.")

    data: str = setting("arithmetic or countdown (problems generated offline), or a JSONL file of records with "
                        "prompt and answer")
    out: str = setting("run folder", "runs/grpo")
    model: str = setting("the model to improve: built-in (smollm2), run or checkpoint folder, HF folder, preset",
                         "smollm2")
    verify: bool = setting(VERIFY, True)
    difficulty: int = setting("generated problems: digits per number (arithmetic), numbers beyond two (countdown)", 2,
                              bounds=Range(low=1))
    problems: int = setting("generated problems to train on (each seen again after all were)", 10_000,
                            bounds=Range(low=1))
    heldout: int = setting("held-out problems answered greedily at each evaluation: generated apart, or drawn "
                           "from a data file (at most half of it)", 200, bounds=Range(low=1))
    data_seed: int = setting("seeds the generated problems, and which records of a data file are held out", 123)
    prompt_field: str = setting("data file: the record field holding the question", "prompt")
    answer_field: str = setting("data file: the record field holding the reference answer", "answer")
    verifier: str = setting("what makes an answer right (accuracy): numeric, string, regex or countdown; auto: "
                            "countdown for countdown, numeric where every answer is a number, else string", "auto")
    reward: tuple[str, ...] = setting("a reward NAME[=WEIGHT] (repeatable): numeric, string, regex, countdown, "
                                      "format (a non-empty \\boxed{} answer), or your own module:function or "
                                      "file.py:function, called with (problem, completion text), returning a number "
                                      "(default: the verifier, and format=0.1)", ())
    group_size: int = setting("completions sampled per problem; each is compared with its group", 8,
                              bounds=Range(low=2, note="advantages compare completions of one problem"))
    updates_per_batch: int = setting("optimizer steps on each batch of rollouts (above 1 the probability ratio "
                                     "to the sampling policy is clipped)", 1, bounds=Range(low=1))
    clip: float = setting("the ratio's clip range: 1 - clip to 1 + clip (PPO's epsilon)", 0.2,
                          bounds=Range(0, 1, above=True))
    kl_coef: float = setting("weight of a KL penalty to the starting model (0: none; the reference is the model "
                             "with its adapters off under --train-layers lora, else a frozen copy)", 0.0,
                             bounds=Range(low=0))
    scale_rewards: bool = setting("divide advantages by their group's standard deviation (GRPO); "
                                  "--no-scale-rewards only takes the group's mean away (Dr. GRPO)", True)
    token_average: bool = setting("average the loss over all completion tokens of a step (Dr. GRPO, DAPO), "
                                  "not per completion first (GRPO: a long completion weighs as much as a short one)",
                                  False)
    temperature: float = setting("sampling temperature of the rollouts (and pass@k)", 1.0,
                                 bounds=Range(0, 2, above=True))
    completion_tokens: int = setting("max new tokens per completion", 128, bounds=Range(low=1))
    pass_k: int | None = setting("pass@k at each evaluation, from --group-size samples per held-out problem (0 = "
                                 "skip; default: --group-size)", None, bounds=Range(low=0))
    probe: int = setting("training problems sampled (--group-size each) before training, to warn when the "
                         "model's pass rate leaves little to learn (0 = skip)", 16, bounds=Range(low=0))
    eval_only: bool = setting("score --model on the held-out problems (accuracy, pass@k) and stop: no training",
                              False)
    prompt_style: str | None = setting("auto (the model's own: its tuned style, else its chat template, else "
                                       "alpaca), template, alpaca, phi3 or chatml", "auto")
    train_layers: str = setting("all, lora (adapters only), last or last-K blocks", "all")
    lora: LoRASettings = setting("the adapters of --train-layers lora", factory=LoRASettings, prefix="lora")
    train: TrainSettings = setting("optimisation; a step trains on batch-size x grad-accum completions, "
                                   "that many / group-size problems; unset fields follow the recipe",
                                   factory=TrainSettings)

    # A constant small learning rate, as RL fine-tunes use (the sequel: 1e-5); 4 problems x 8 completions a step.
    RECIPE = dataclasses.replace(GENERIC, max_steps=60, batch_size=8, grad_accum=4, lr=1e-5, min_lr=1e-5,
                                 warmup_steps=0, weight_decay=0.0, eval_every=20, eval_batches=1, eval_first=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_ranges(self)
        rows = self.train.batch_size * self.train.grad_accum
        if rows % self.group_size:
            raise ValueError(f"--batch-size x --grad-accum ({rows} completions a step) must be a multiple of "
                             f"--group-size ({self.group_size})")
        if self.verifier not in ("auto", *VERIFIERS):
            raise ValueError(f"--verifier {self.verifier!r}: expected auto, {', '.join(VERIFIERS)}")
        if self.pass_k is not None and self.pass_k > self.group_size:
            raise ValueError(f"--pass-k {self.pass_k}: at most --group-size ({self.group_size}) samples are drawn")

    def run(self, resume: bool = False, on_event: OnEvent | None = None) -> RunSummary:
        """Train (or with `eval_only`, score) as this config says (see `run`)."""
        return run(self, resume, on_event)


@dataclass(frozen=True)
class Scoring:
    """How completions are judged: the rewards that train, and the verifier that says right or wrong."""

    rewards: list[WeightedReward]
    verifier: WeightedReward


def run(config: GRPOConfig, resume: bool = False, on_event: OnEvent | None = None) -> RunSummary:
    """GRPO as `config` says, or with `eval_only` a score of the model; writes the run folder."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("gptlab finetune grpo runs in one process; run it without torchrun")
    train_problems, heldout = _problems(config)
    scoring = _scoring(config, [*train_problems, *heldout])
    loaded = load_model(config.model, device=pick_device(config.train.device), verify=config.verify)
    model, tokenizer = loaded.model, loaded.tokenizer
    style = style_for(loaded.meta, config.prompt_style)
    task = GRPOTask(config, model, tokenizer, style, scoring, train_problems, heldout)
    out = start_run(config)
    if config.eval_only:
        return _score_only(task, out)
    reference = copy.deepcopy(model).eval().requires_grad_(False) if config.kl_coef and \
        config.train_layers != "lora" else None  # under LoRA the reference is the model with its adapters off
    lora = choose_trainable(model, config.train_layers, config.lora, torch.Generator().manual_seed(config.train.seed))
    task.reference = reference if reference is not None else model
    task.rollouts_file = out / ROLLOUTS_FILE if config.updates_per_batch > 1 else None
    if not resume and config.probe:
        _probe(task, train_problems[: config.probe], config)
    meta = CheckpointMeta(prompt_style=style.name, default_system=style.default_system or None, run=config.to_dict(),
                          lora=pinned_to_base(lora, config.model), chat_template=loaded.meta.chat_template)
    loop_task = Task(train_batch=task.train_batch, val_batch=task.val_batch, loss=task.loss,
                     count_tokens=lambda b: int((b[3] > 0).sum()),  # the completion tokens that train
                     write_model=lambda _, folder: write_model_files(model, tokenizer, folder, meta,
                                                                     trained_only=lora is not None),
                     eval_metrics=task.eval_metrics, sample=task.sample, report=task.report, val_loss=task.val_loss,
                     step_metrics=task.step_metrics)
    log.info("GRPO on %s: %d training / %d held-out problems, %d per step x %d completions, rewards %s",
             loaded.description, len(train_problems), len(heldout), task.problems_per_batch, config.group_size,
             ", ".join(f"{r.name}={r.weight:g}" for r in scoring.rewards))
    return train(model, loop_task, dataclasses.replace(config.train, eval_batches=1), out, resume=resume,
                 on_event=on_event)


def _problems(config: GRPOConfig) -> tuple[list[Problem], list[Problem]]:
    """Training and held-out problems: generated apart (no held-out prompt trains), or a seeded draw of
    at most half a data file held out."""
    if config.data in GENERATED:
        heldout = generated(config.data, config.heldout, config.data_seed, config.difficulty)
        avoid = frozenset(p.prompt for p in heldout)
        training = generated(config.data, config.problems, config.data_seed + 1, config.difficulty, avoid)
        if not training:
            raise ValueError(f"--difficulty {config.difficulty}: no {config.data} problem is left to train on "
                             "beside the held-out ones; raise --difficulty or lower --heldout")
        return training, heldout
    problems = load_problems(config.data, config.prompt_field, config.answer_field)
    if len(problems) < 2:
        raise ValueError(f"{config.data}: one record; at least two are needed (one held out)")
    random.Random(config.data_seed).shuffle(problems)
    count = min(config.heldout, len(problems) // 2)
    return problems[count:], problems[:count]


def _scoring(config: GRPOConfig, problems: list[Problem]) -> Scoring:
    """The verifier (`auto` chosen by the task and its answers) and the rewards, loaded and checked."""
    name = config.verifier
    if name == "auto":
        numeric = all(parse_number(p.answer) is not None for p in problems)
        name = "countdown" if config.data == "countdown" else "numeric" if numeric else "string"
    verifier = WeightedReward(name, 1.0, BUILTIN[name])
    return Scoring(parse_rewards(config.reward or (name, "format=0.1")), verifier)


@dataclass
class _RolloutBatch:
    """One batch of scored rollouts, what each optimizer step on it trains on, and the log-probabilities
    it keeps: the sampling policy's (ratios of later updates) and the reference's (KL)."""

    index: int
    sampled: list[Sampled]
    advantages: Tensor  # (N,)
    chunks: list[list[int]]  # rows of each micro-batch (empty: nothing to learn there)
    weights: dict[int, float]  # row -> the weight of each of its tokens in the step's loss
    metrics: dict[str, float]
    kept: dict[str, dict[int, Tensor]] = dataclasses.field(default_factory=lambda: {"old": {}, "reference": {}})
    saved: bool = False  # written to ROLLOUTS_FILE, with the log-probs of its first update

    def to_json(self) -> dict[str, Any]:
        """The batch as JSON, its numbers exact (a float32 read back from Python's repr is the same float)."""
        return {"index": self.index, "sampled": [[s.prompt, s.ids, s.text, s.truncated] for s in self.sampled],
                "advantages": self.advantages.tolist(), "chunks": self.chunks,
                "weights": [[row, weight] for row, weight in self.weights.items()], "metrics": self.metrics,
                "kept": {kind: [[row, values.tolist()] for row, values in rows.items()]
                         for kind, rows in self.kept.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _RolloutBatch:
        """The inverse of `to_json`."""
        return cls(data["index"], [Sampled(*row) for row in data["sampled"]], torch.tensor(data["advantages"]),
                   data["chunks"], {row: weight for row, weight in data["weights"]}, data["metrics"],
                   {kind: {row: torch.tensor(values) for row, values in rows} for kind, rows in data["kept"].items()},
                   saved=True)


class GRPOTask:
    """The GRPO task's state between the loop's calls: the current rollout batch, the held-out scores."""

    def __init__(self, config: GRPOConfig, model: GPT, tokenizer: Tokenizer, style: Style, scoring: Scoring,
                 train_problems: list[Problem], heldout: list[Problem]) -> None:
        self.config, self.model, self.tokenizer, self.style, self.scoring = config, model, tokenizer, style, scoring
        self.train_problems, self.heldout = train_problems, heldout
        self.problems_per_batch = config.train.batch_size * config.train.grad_accum // config.group_size
        self.order = EpochOrder(len(train_problems), config.train.seed)
        self.sampling = GenerationSettings(max_new_tokens=config.completion_tokens, temperature=config.temperature)
        self.reference: nn.Module = model
        self.rollouts_file: Path | None = None  # where a batch trained more than once is kept (resume)
        self.current: _RolloutBatch | None = None
        self.step_parts: list[tuple[float, float, int]] = []  # (kl, clip fraction, tokens) of each micro-batch
        self.greedy: list[Sampled] = []  # the held-out answers of the latest evaluation
        self.greedy_accuracy = 0.0

    def sample_rows(self, problems: list[Problem], copies: int, seeds: list[int | None],
                    settings: GenerationSettings) -> tuple[list[Sampled], Scores]:
        """Completions of `problems` (`copies` each) and their scores."""
        sampled = complete(self.model, self.tokenizer, self.style, problems, settings, seeds, copies)
        return sampled, score(self.scoring.rewards, self.scoring.verifier, problems, [s.text for s in sampled],
                              copies)

    def rollouts(self, index: int) -> _RolloutBatch:
        """Rollout batch `index`: its problems' groups sampled with seeds of their own, scored, weighted."""
        group, accum = self.config.group_size, self.config.train.grad_accum
        problems = [self.train_problems[p] for p in self.order.positions(index, self.problems_per_batch)]
        seeds: list[int | None] = list(row_seeds(self.config.train.seed, index, len(problems) * group))
        sampled, scores = self.sample_rows(problems, group, seeds, self.sampling)
        advantages, varied = group_advantages(scores.total, group, self.config.scale_rewards)
        kept = [row for row in range(len(sampled)) if varied[row // group] and sampled[row].ids]
        lengths = {row: len(sampled[row].ids) for row in kept}
        if self.config.token_average:  # x accum: the loop averages the micro-batches' losses
            weights = {row: accum / sum(lengths.values()) for row in kept}
        else:
            weights = {row: accum / (lengths[row] * len(kept)) for row in kept}
        metrics = {**scores.metrics(), "zero_advantage_groups": 1 - varied.float().mean().item(),
                   "completion_length": sum(len(s.ids) for s in sampled) / len(sampled),
                   "truncated": sum(s.truncated for s in sampled) / len(sampled)}
        return _RolloutBatch(index, sampled, advantages, [c.tolist() for c in np.array_split(kept, accum)], weights,
                             metrics)

    def train_batch(self, i: int) -> Batch:
        """Micro-batch `i`: a share of the current rollout batch, sampled afresh every `updates_per_batch` steps."""
        step, micro = divmod(i, self.config.train.grad_accum)
        index = step // self.config.updates_per_batch
        if self.current is None or self.current.index != index:
            self.current = self._saved(index) if step % self.config.updates_per_batch else None
            if self.current is None:
                self.current = self.rollouts(index)
        return _collate(self.current, self.current.chunks[micro])

    def _saved(self, index: int) -> _RolloutBatch | None:
        """Rollout batch `index` as a run resumed inside it saved it, if it did."""
        if self.rollouts_file is not None and self.rollouts_file.is_file():
            data = json.loads(self.rollouts_file.read_text())
            if data["index"] == index:
                return _RolloutBatch.from_json(data)
        log.warning("resumed inside rollout batch %d without it saved: its remaining updates train on fresh "
                    "rollouts of the resumed weights", index)
        return None

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The clipped policy loss of a micro-batch (plus the KL penalty), its kl and clip share noted."""
        inputs, targets, mask, weights, advantages, rows = batch
        logprobs = token_logprobs(model(inputs, logits_at=mask), targets, mask)  # (B, T)
        old = self._kept("old", rows, mask, lambda: logprobs.detach())  # first update: the sampling policy
        reference = None
        if self.config.kl_coef:
            reference = self._kept("reference", rows, mask, lambda: self._reference_logprobs(inputs, targets, mask))
        result = clipped_policy_loss(logprobs, old, advantages, weights, self.config.clip, reference,
                                     self.config.kl_coef)
        self.step_parts.append((result.kl, result.clip_fraction, int((weights > 0).sum())))
        return result.loss

    def _kept(self, kind: str, rows: Tensor, mask: Tensor, compute: Callable[[], Tensor]) -> Tensor:
        """Per-token log-probs (B, T) of `rows` computed once per rollout batch, then remembered."""
        assert self.current is not None
        kept = self.current.kept[kind]
        if not all(int(row) in kept for row in rows):
            values = compute()
            for i, row in enumerate(rows.tolist()):
                kept[row] = values[i][mask[i]]
        return torch.zeros(mask.shape, device=mask.device).masked_scatter(mask, torch.cat(
            [kept[row] for row in rows.tolist()]))

    @torch.no_grad()
    def _reference_logprobs(self, inputs: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
        if self.reference is self.model:
            with adapters_off(self.model):
                return token_logprobs(self.model(inputs, logits_at=mask), targets, mask)
        self.reference.to(inputs.device)
        return token_logprobs(self.reference(inputs, logits_at=mask), targets, mask)

    def step_metrics(self) -> dict[str, float]:
        """The step's rollout numbers, and its kl and clip fraction over the tokens it trained on."""
        assert self.current is not None
        parts, self.step_parts = self.step_parts, []
        tokens = sum(count for _, _, count in parts)
        kl = sum(value * count for value, _, count in parts) / max(tokens, 1)
        clipped = sum(value * count for _, value, count in parts) / max(tokens, 1)
        if self.rollouts_file is not None and not self.current.saved:  # its first update: the log-probs are known
            write_text_atomically(self.rollouts_file, json.dumps(self.current.to_json()))
            self.current.saved = True
        return {**self.current.metrics, "kl": kl, "clip_fraction": clipped}

    def val_batch(self, i: int) -> Batch:
        return (torch.arange(len(self.heldout)),)  # all held-out problems: the engine batches them

    def val_loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The held-out error rate of greedy answers (remembered for `eval_metrics` and `sample`)."""
        problems = [self.heldout[i] for i in batch[0].tolist()]
        greedy = dataclasses.replace(self.sampling, temperature=0)
        self.greedy, scores = self.sample_rows(problems, 1, [None] * len(problems), greedy)
        self.greedy_accuracy = int(scores.correct.sum()) / len(problems)
        return torch.tensor(1 - self.greedy_accuracy)

    def eval_metrics(self, model: nn.Module) -> dict[str, float]:
        """Held-out accuracy (greedy) and pass@k (sampled, the same seeds at every evaluation)."""
        metrics = {"heldout_accuracy": self.greedy_accuracy}
        k = self.config.group_size if self.config.pass_k is None else self.config.pass_k
        if k:
            group = self.config.group_size
            seeds: list[int | None] = list(row_seeds(self.config.train.seed, -1, len(self.heldout) * group))
            _, scores = self.sample_rows(self.heldout, group, seeds, self.sampling)
            metrics[f"heldout_pass_at_{k}"] = pass_at_k(scores.correct.view(-1, group), k)
        return metrics

    def sample(self, model: nn.Module) -> str:
        """The first held-out problem and the greedy answer of the latest evaluation."""
        return f"{self.heldout[0].prompt} -> {self.greedy[0].text}" if self.greedy else ""

    def report(self, summary: RunSummary) -> RunSummary:
        """`summary.json` with the held-out accuracy before training and at the last evaluation."""
        losses = {"initial_heldout_accuracy": summary.initial_val_loss,
                  "final_heldout_accuracy": summary.final_val_loss}
        accuracy = {name: round(1 - loss, 6) for name, loss in losses.items() if loss is not None}  # loss: a float32
        return dataclasses.replace(summary, scores=accuracy)


def _collate(batch: _RolloutBatch, rows: list[int]) -> Batch:
    """Inputs, targets and the completion mask (B, T), token weights (B, T), advantages (B,) and row
    numbers (B,) of `rows`; no rows (nothing to learn in this share): row 0 with weight 0."""
    chosen = rows or [0]
    sequences = [batch.sampled[r].prompt + batch.sampled[r].ids for r in chosen]
    width = max(map(len, sequences)) - 1
    inputs, targets = torch.zeros(len(chosen), width, dtype=torch.long), torch.zeros(len(chosen), width,
                                                                                     dtype=torch.long)
    mask, weights = torch.zeros(len(chosen), width, dtype=torch.bool), torch.zeros(len(chosen), width)
    for i, (row, sequence) in enumerate(zip(chosen, sequences, strict=True)):
        inputs[i, : len(sequence) - 1] = torch.tensor(sequence[:-1])
        targets[i, : len(sequence) - 1] = torch.tensor(sequence[1:])
        start = len(batch.sampled[row].prompt) - 1  # the target there is the first completion token
        mask[i, start: len(sequence) - 1] = True
        weights[i, start: len(sequence) - 1] = batch.weights.get(row, 0.0) if rows else 0.0
    return inputs, targets, mask, weights, batch.advantages[chosen], torch.tensor(chosen)


def _probe(task: GRPOTask, problems: list[Problem], config: GRPOConfig) -> None:
    """The model's pass rate on a sample of training problems, with a warning when it is near 0 or 1."""
    seeds: list[int | None] = list(row_seeds(config.train.seed, -2, len(problems) * config.group_size))
    _, scores = task.sample_rows(problems, config.group_size, seeds, task.sampling)
    rate = scores.correct.float().mean().item()
    log.info("base pass rate: %.1f%% of %d samples (%d problems x %d)", 100 * rate, scores.correct.numel(),
             len(problems), config.group_size)
    easier = "a lower --difficulty" if config.data in GENERATED else "easier problems"
    harder = "a higher --difficulty" if config.data in GENERATED else "harder problems"
    if rate < NOTHING_TO_LEARN:
        log.warning("the model passes %.1f%% of sampled answers: groups that are all wrong teach nothing; try %s "
                    "or a better starting model", 100 * rate, easier)
    elif rate > 1 - NOTHING_TO_LEARN:
        log.warning("the model passes %.1f%% of sampled answers: little is left to learn; try %s", 100 * rate,
                    harder)


def _score_only(task: GRPOTask, out: Path) -> RunSummary:
    """--eval-only: held-out accuracy and pass@k of the model as it is, in `summary.json`."""
    started = time.perf_counter()
    task.model.eval()
    with torch.no_grad():
        task.val_loss(task.model, task.val_batch(0))
        scores = task.eval_metrics(task.model)
    summary = dataclasses.replace(
        RunSummary.of_loop("evaluated", "--eval-only: scored without training", math.inf, None, None, 0, 0,
                           time.perf_counter() - started), scores=scores)
    write_text_atomically(out / "summary.json", json.dumps(summary.to_json(), indent=2) + "\n")
    record_files(out, ["summary.json"])
    log.info("held-out accuracy %.3f on %d problems", scores["heldout_accuracy"], len(task.heldout))
    return summary
