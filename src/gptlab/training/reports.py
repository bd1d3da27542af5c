"""What a training run reports: events while it runs, `metrics.jsonl` lines (the training loss
every `log_every` steps, each evaluation), and `summary.json` at the end. Drawing them (bars,
plots) is the caller's job."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gptlab.evaluation.baseline import BaselineScores


@dataclass(frozen=True)
class TrainRecord:
    """Training since the previous such line: a line of `metrics.jsonl` without `val_loss`, a point
    of the training curve."""

    step: int
    tokens: int  # tokens trained on so far
    lr: float  # learning rate of the last step
    train_loss: float  # mean over the steps since the previous line (each the mean of its micro-batches)
    tokens_per_second: float  # over those steps' own time
    elapsed: float  # seconds since the run started (across resumes)
    metrics: dict[str, float] = field(default_factory=dict)  # the task's own, each the mean over those steps

    def to_json(self) -> dict[str, float]:
        """The `metrics.jsonl` line: the bookkeeping, the training loss, then the task's metrics."""
        return {"step": self.step, "tokens": self.tokens, "lr": self.lr, "train_loss": self.train_loss,
                "tokens_per_second": self.tokens_per_second, "elapsed": self.elapsed, **self.metrics}


@dataclass
class EvalRecord:
    """One evaluation: a line of `metrics.jsonl` (the one kind with `val_loss`), and the sample shown beside it."""

    step: int
    tokens: int  # tokens trained on so far
    lr: float  # learning rate of the last step
    train_loss: float  # mean training loss since the previous evaluation
    val_loss: float
    tokens_per_second: float  # since the previous evaluation
    elapsed: float  # seconds since the run started (across resumes)
    metrics: dict[str, float] = field(default_factory=dict)  # the task's own, e.g. val_accuracy
    sample: str | None = None  # text the model wrote, to watch it learn (not saved)

    def to_json(self) -> dict[str, float]:
        """The `metrics.jsonl` line: the losses, the task's metrics, then the bookkeeping."""
        return {"val_loss": self.val_loss, **self.metrics, "step": self.step, "tokens": self.tokens, "lr": self.lr,
                "train_loss": self.train_loss, "tokens_per_second": self.tokens_per_second, "elapsed": self.elapsed}


@dataclass(frozen=True)
class StepEvent:
    """An optimizer step finished."""

    kind: ClassVar[str] = "step"
    step: int
    loss: float
    lr: float


@dataclass(frozen=True)
class EvalEvent:
    """An evaluation finished (and its checkpoints are saved)."""

    kind: ClassVar[str] = "eval"
    step: int
    record: EvalRecord


@dataclass(frozen=True)
class DoneEvent:
    """Training stopped; the task's own results (scores, responses) may follow."""

    kind: ClassVar[str] = "done"
    step: int
    status: str  # completed, early-stopped, interrupted or failed


@dataclass(frozen=True)
class RespondEvent:
    """After training: `done` of `total` test-set responses written."""

    kind: ClassVar[str] = "respond"
    done: int
    total: int


Event = StepEvent | EvalEvent | DoneEvent | RespondEvent
OnEvent = Callable[[Event], None]


@dataclass(frozen=True)
class ClassifierResults:
    """A classifier run's results: the checkpoint `gptlab classify --model <run>` loads, scored."""

    scored: str  # which checkpoint, in words
    labels: list[str]  # class names by id
    accuracy: dict[str, float]  # by split: train, val, test
    f1: dict[str, float]  # macro F1 by split
    test_precision: float  # macro
    test_recall: float  # macro
    test_confusion: list[list[int]]  # rows: true labels, columns: predictions
    baseline: BaselineScores  # TF-IDF + logistic regression on the same splits

    def to_json(self) -> dict[str, Any]:
        scores: dict[str, Any] = {}
        for split in self.accuracy:
            scores.update({f"{split}_accuracy": self.accuracy[split], f"{split}_f1": self.f1[split]})
        return {"scored": self.scored, **scores, "test_precision": self.test_precision,
                "test_recall": self.test_recall, "test_confusion": self.test_confusion, "labels": self.labels,
                "baseline": dataclasses.asdict(self.baseline)}


@dataclass(frozen=True)
class RunSummary(Mapping[str, Any]):
    """How a run ended, as written to `summary.json`; it reads like that file (`summary["steps"]`)."""

    status: str  # completed, early-stopped, interrupted or failed
    reason: str  # why it ended there, in a line: "reached max_steps (1000)", the error of a failed run
    best_val_loss: float | None  # of the evaluations (None before the first)
    best_step: int | None  # the evaluation `checkpoints/best` holds
    final_val_loss: float | None
    steps: int
    tokens: int
    wall_seconds: float
    tokens_per_second: float | None
    responses: str | None = None  # instruct, dpo: the file of test-set responses
    classifier: ClassifierResults | None = None  # classify: scores on every split and the baseline
    initial_val_loss: float | None = None  # before training (TrainSettings.eval_first), else None
    scores: dict[str, float] | None = None  # a task's own results, e.g. grpo's initial and final held-out accuracy

    @classmethod
    def of_loop(cls, status: str, reason: str, best_val_loss: float, best_step: int | None,
                final_val_loss: float | None, steps: int, tokens: int, wall: float,
                initial_val_loss: float | None = None) -> RunSummary:
        """The loop's part, rounded as reported."""
        return cls(status, reason, None if math.isinf(best_val_loss) else best_val_loss, best_step, final_val_loss,
                   steps, tokens, round(wall, 3), round(tokens / wall, 1) if wall > 0 else None,
                   initial_val_loss=initial_val_loss)

    def to_json(self) -> dict[str, Any]:
        """The `summary.json` object: the loop's keys, then the task's results."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("responses", "classifier", "scores")}
        data.update(self.scores or {})
        if self.classifier is not None:
            data.update(self.classifier.to_json())
        if self.responses is not None:
            data["responses"] = self.responses
        return data

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())


def failure_reason(err: BaseException) -> str:
    """The error that ended a run, in one line for `summary.json`."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}".rstrip(": ")
