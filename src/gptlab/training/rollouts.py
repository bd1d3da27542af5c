"""Rollouts for reinforcement learning: sampled completions of problems, scored by verifiable rewards.

The completions come from the batching engine that serves (`engine.Engine`): all of a batch's rows
decode together, each with its own seed, so a batch of rollouts is a pure function of the weights,
the problems and the seeds, and a resumed run samples what the uninterrupted one did.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gptlab.data.reasoning import Problem
from gptlab.engine import Engine, EngineLimits
from gptlab.evaluation.rewards import WeightedReward
from gptlab.generation import GenerationSettings
from gptlab.model import GPT
from gptlab.prompts import Style
from gptlab.tokenizer import Tokenizer

MAX_ROWS = 64  # rows the engine decodes at once (KV-cache slots); more wait for a free one


@dataclass(frozen=True)
class Sampled:
    """One completion of a problem's prompt."""

    prompt: list[int]  # the prompt's ids, as fitted to the context
    ids: list[int]  # the generated ids, with the stop id that ended the answer (ending is part of it)
    text: str  # the answer as a reader sees it: no stop id, no stop string
    truncated: bool = False  # cut by the token budget, not ended by the model


def row_seeds(seed: int, batch: int, rows: int) -> list[int]:
    """Sampling seeds of the rows of rollout batch `batch`: distinct rows, distinct draws, the same
    on every rerun."""
    rng = random.Random(f"rollouts:{seed}:{batch}")
    return [rng.getrandbits(62) for _ in range(rows)]


def complete(model: GPT, tokenizer: Tokenizer, style: Style, problems: Sequence[Problem],
             settings: GenerationSettings, seeds: Sequence[int | None], copies: int = 1) -> list[Sampled]:
    """`copies` completions of each problem (row r: problem r // copies, seed `seeds[r]`), in the
    model's prompt style, decoded together by the engine; the model's train/eval mode is kept."""
    prompts = [tokenizer.encode(style.prompt(problem.prompt)) for problem in problems]
    rows = [prompts[r // copies] for r in range(len(problems) * copies)]
    asked = dataclasses.replace(style.answer_settings(settings), logprobs=0)  # logprobs: to learn the stop id
    training = model.training
    engine = Engine(model, EngineLimits(max_batch=min(len(rows), MAX_ROWS), max_queue=len(rows)))
    try:
        streams = [engine.submit(tokenizer, prompt, dataclasses.replace(asked, seed=seed))
                   for prompt, seed in zip(rows, seeds, strict=True)]
        texts = ["".join(stream) for stream in streams]  # waits for each in turn; all decode together
    finally:
        engine.close(drain=False)
        model.train(training)
    return [Sampled(stream.prompt_ids, stream.ids + ([stream.end.id] if stream.end is not None else []), text,
                    stream.finish_reason == "length") for stream, text in zip(streams, texts, strict=True)]


@dataclass(frozen=True)
class Scores:
    """Rewards of N completions."""

    total: Tensor  # (N,) the weighted sum of the rewards
    each: dict[str, Tensor]  # reward name -> (N,) its unweighted values
    correct: Tensor  # (N,) bool: the verifier's 1

    def metrics(self) -> dict[str, float]:
        """Mean total reward, mean of each reward, and accuracy: the numbers a training line reports."""
        return {"reward": self.total.mean().item(),
                **{f"reward_{name}": values.mean().item() for name, values in self.each.items()},
                "accuracy": self.correct.float().mean().item()}


def score(rewards: Sequence[WeightedReward], verifier: WeightedReward, problems: Sequence[Problem],
          texts: Sequence[str], copies: int = 1) -> Scores:
    """Every reward of each text (row r answers problem r // copies), and whether the verifier says right."""
    owners = [problems[r // copies] for r in range(len(texts))]
    each = {reward.name: torch.tensor([reward(p, t) for p, t in zip(owners, texts, strict=True)])
            for reward in rewards}
    total = sum((reward.weight * each[reward.name] for reward in rewards), torch.zeros(len(texts)))
    verdicts = each[verifier.name] if verifier.name in each else torch.tensor(
        [verifier(p, t) for p, t in zip(owners, texts, strict=True)])
    return Scores(total, each, verdicts == 1)


def pass_at_k(correct: Tensor, k: int) -> float:
    """The chance that at least one of k samples is right, estimated without bias from n >= k samples
    per problem (`correct` (problems, n)): the mean of 1 - C(n - c, k) / C(n, k) (Chen et al. 2021)."""
    n = correct.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs between 1 and {n} samples per problem")
    wrong = (~correct).sum(dim=1).tolist()
    return sum(1 - math.comb(w, k) / math.comb(n, k) for w in wrong) / len(wrong)
