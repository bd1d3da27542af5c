"""lm-evaluation-harness over any model gptlab loads: benchmark tasks scored the way the field scores them.

`GptlabLM` is lm-eval's `LM` interface over our own model, tokenizer and generation, so presets, run
folders, Hugging Face folders, GGUF files and quantized models are measured without converting them.
It tokenizes as lm-eval's Hugging Face backend does (context and continuation encoded whole, then split;
a document's BOS where the tokenizer adds one), so the same weights give that backend's numbers.
`evaluate` picks the tasks, runs them and returns lm-eval's own results. lm-eval is imported here
only: nothing else in gptlab needs it (the `eval` extra).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.loggers import EvaluationTracker
from lm_eval.models.utils import normalize_gen_kwargs
from lm_eval.tasks import TaskManager
from lm_eval.utils import get_rolling_token_windows, handle_non_serializable, make_disjoint_window, make_table

from gptlab.generation import Completion, GenerationSettings, allowed_logits
from gptlab.loading import LoadedModel
from gptlab.tokenizer import document_ids

Request = tuple[tuple[str, str], list[int], list[int]]  # (context, continuation) as text, then their ids


class GptlabLM(TemplateLM):
    """lm-eval's model interface over a gptlab model: log-likelihoods, rolling perplexity, generation."""

    def __init__(self, loaded: LoadedModel, batch_size: int = 8, max_gen_toks: int = 256) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be 1 or more, got {batch_size}")
        self.model, self._tokenizer = loaded.model, loaded.tokenizer
        self.batch_size, self.max_gen_toks = batch_size, max_gen_toks
        self.max_length = self.model.config.context_length
        self._device = next(self.model.parameters()).device

    @property
    def eot_token_id(self) -> int:
        if self._tokenizer.eos_id is None:
            raise ValueError(f"the {self._tokenizer.name} tokenizer has no end-of-text token, which lm-eval puts "
                             "before an empty context")
        return self._tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context becomes: the BOS token where there is one, else end-of-text (as HF's backend)."""
        bos = getattr(self._tokenizer, "bos_id", None)
        return bos if bos is not None else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """A text's ids; as a document (after the BOS its tokenizer adds) unless `add_special_tokens` is False."""
        if add_special_tokens is False:
            return self._tokenizer.encode(string)
        return document_ids(self._tokenizer, string)

    def _loglikelihood_tokens(self, requests: Sequence[Request], disable_tqdm: bool = False,
                              **kwargs: Any) -> list[tuple[float, bool]]:
        """(log-probability of the continuation, whether greedy decoding gives it) for each request, the
        longest first so a batch pads little; each input is cut on the left to the model's context."""
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        results: dict[int, tuple[float, bool]] = {}
        for first in range(0, len(order), self.batch_size):
            batch = order[first:first + self.batch_size]
            scores = self._score([requests[i][1] for i in batch], [requests[i][2] for i in batch])
            results.update(zip(batch, scores, strict=True))
        return [results[i] for i in range(len(requests))]

    @torch.inference_mode()
    def _score(self, contexts: list[list[int]], continuations: list[list[int]]) -> list[tuple[float, bool]]:
        """One forward pass over right-padded rows: each continuation's summed log-probability and greediness."""
        rows = [(context + continuation)[-(self.max_length + 1):][:-1] for context, continuation in
                zip(contexts, continuations, strict=True)]
        if any(len(continuation) > self.max_length for continuation in continuations):
            raise ValueError(f"a continuation is longer than the model's context ({self.max_length} tokens)")
        inputs = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)  # (B, T)
        scored = torch.zeros_like(inputs, dtype=torch.bool)  # the places that predict a continuation token
        for row, (ids, continuation) in enumerate(zip(rows, continuations, strict=True)):
            inputs[row, :len(ids)] = torch.tensor(ids)
            scored[row, len(ids) - len(continuation):len(ids)] = True
        logits = self.model(inputs.to(self._device), logits_at=scored.to(self._device)).float()  # (N, V)
        logprobs = allowed_logits(logits, self._tokenizer.vocab_size).log_softmax(dim=-1).cpu()
        targets = torch.tensor([token for continuation in continuations for token in continuation])  # (N,)
        picked = logprobs.gather(1, targets[:, None]).squeeze(1)  # (N,)
        greedy = logprobs.argmax(dim=-1) == targets  # (N,)
        results, at = [], 0
        for continuation in continuations:
            span = slice(at, at + len(continuation))
            results.append((float(picked[span].sum()), bool(greedy[span].all())))
            at += len(continuation)
        return results

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Each text's total log-probability, scored in windows of the model's context, every token once."""
        windows: list[Request] = []
        owners: list[int] = []
        for index, (text,) in enumerate(request.args for request in requests):
            for context, continuation in map(make_disjoint_window, get_rolling_token_windows(
                    self.tok_encode(text), self.prefix_token_id, self.max_length, context_len=1)):
                windows.append(((text, ""), context, continuation))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows), strict=True):
            totals[owner] += logprob
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Each context's continuation by gptlab's generation, ended by the task's stop strings."""
        return [self._generate(context, gen_kwargs) for context, gen_kwargs in (r.args for r in requests)]

    def _generate(self, context: str, gen_kwargs: dict[str, Any]) -> str:
        kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        settings = GenerationSettings(max_new_tokens=int(kwargs["max_gen_toks"]),
                                      temperature=float(kwargs.get("temperature") or 0.0),
                                      top_p=kwargs.get("top_p"), top_k=kwargs.get("top_k"),
                                      stop_strings=tuple(stop for stop in kwargs["until"] if stop))
        return "".join(Completion(self.model, self._tokenizer, self.tok_encode(context), settings))


@dataclass(frozen=True)
class HarnessSettings:
    """What `gptlab evaluate` asks of lm-eval: the tasks, where more task files are, and how many examples."""

    tasks: tuple[str, ...]  # task, group or tag names
    include_path: Path | None = None  # a folder of the user's own task YAML files
    limit: int | None = None  # examples per task (None: all)
    num_fewshot: int | None = None  # examples shown before each question (None: the task's own)


class _TaskManager(TaskManager):
    """lm-eval's index of tasks, whose loading fails with one line naming the data set it could not read:
    offline, `datasets` and the hub raise assorted errors (ConnectionError, FileNotFoundError, ...) that
    name neither the task nor what to do."""

    def load(self, specs: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().load(specs, *args, **kwargs)
        except OSError as err:  # ConnectionError, FileNotFoundError and the hub's and `datasets`' kinds of them
            names = [specs] if isinstance(specs, str) else [s for s in specs if isinstance(s, str)]
            paths = [str((self.task_index[name].cfg or {}).get("dataset_path")) for name in names
                     if name in self.task_index and (self.task_index[name].cfg or {}).get("dataset_path")]
            datasets = f" (data set {', '.join(paths)})" if paths else ""
            raise ValueError(f"task {', '.join(names)}{datasets}: its data could not be read: not in the local "
                             f"cache while offline, or not found ({' '.join(str(err).split())[:300]})") from err


def task_manager(settings: HarnessSettings) -> TaskManager:
    """lm-eval's index of the named tasks. Only the --include-path folder when it holds them all (a fraction
    of a second); else lm-eval's own thousands too (indexing them takes seconds). An unknown name is an
    error that lists the nearest known ones."""
    if settings.include_path is not None:
        if not settings.include_path.is_dir():
            raise ValueError(f"{settings.include_path}: not a folder (of task YAML files to include)")
        local = _TaskManager(include_path=str(settings.include_path), include_defaults=False)
        if all(name in local.all_tasks for name in settings.tasks):
            return local
    manager = _TaskManager(include_path=str(settings.include_path) if settings.include_path else None)
    for name in settings.tasks:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=5, cutoff=0.6)
            hint = f"; close names: {', '.join(close)}" if close else "; `lm-eval ls tasks` lists them all"
            raise ValueError(f"unknown lm-eval task {name!r}{hint}")
    return manager


def evaluate(lm: GptlabLM, settings: HarnessSettings, manager: TaskManager, model_name: str,
             output: Path | None = None) -> dict[str, Any]:
    """Run the tasks (`manager`: from `task_manager`) and return lm-eval's results as its own CLI reports
    them (`results`, `versions`, `configs`, ...): its format, which other tools read, so not ours to reshape.
    With `output`, lm-eval writes them there as its CLI does (`<output>/<model>/results_<date>.json`, and
    each task's examples beside them). lm-eval seeds Python's, NumPy's and torch's generators as its CLI
    does, so the numbers are its numbers."""
    tracker = EvaluationTracker(output_path=str(output)) if output is not None else None
    results = simple_evaluate(model=lm, model_args={"model": model_name}, tasks=list(settings.tasks),
                              num_fewshot=settings.num_fewshot, limit=settings.limit, task_manager=manager,
                              log_samples=output is not None, evaluation_tracker=tracker)
    if results is None:  # only on a distributed run's other ranks, which gptlab does not start
        raise RuntimeError("lm-eval returned no results")
    samples = results.pop("samples", None)
    if tracker is not None:
        tracker.save_results_aggregated(results=results, samples=samples)
        for task in results["configs"]:
            tracker.save_results_samples(task_name=task, samples=samples[task])
    return dict(results)


def results_table(results: dict[str, Any]) -> str:
    """lm-eval's tables of the results: each task's metrics, then each group's."""
    tables = [make_table(results)]
    if results.get("groups"):
        tables.append(make_table(results, "groups"))
    return "\n".join(tables)


def results_json(results: dict[str, Any]) -> str:
    """The results as one line of JSON, with lm-eval's own handling of values JSON cannot hold."""
    return json.dumps(results, default=handle_non_serializable, ensure_ascii=False)
