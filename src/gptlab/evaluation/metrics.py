"""Classification and language-model metrics as plain functions of predictions and labels, and a
training run's `metrics.jsonl` read back."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor


def confusion_matrix(predictions: Tensor, labels: Tensor, num_classes: int) -> list[list[int]]:
    """counts[true][predicted] for class ids 0..num_classes-1."""
    flat = labels.long() * num_classes + predictions.long()
    counts = torch.bincount(flat, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes).tolist()


def classification_report(predictions: Tensor, labels: Tensor, num_classes: int) -> dict:
    """Accuracy, macro precision/recall/F1 and the confusion matrix (rows: true, columns: predicted)."""
    confusion = confusion_matrix(predictions, labels, num_classes)
    precisions, recalls, f1s = [], [], []
    for c in range(num_classes):
        true_positive = confusion[c][c]
        predicted = sum(row[c] for row in confusion)
        actual = sum(confusion[c])
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        precisions.append(precision)
        recalls.append(recall)
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    total = int(labels.numel())
    return {
        "accuracy": sum(confusion[c][c] for c in range(num_classes)) / total if total else math.nan,
        "precision": sum(precisions) / num_classes,
        "recall": sum(recalls) / num_classes,
        "f1": sum(f1s) / num_classes,
        "confusion": confusion,
    }


def perplexity(mean_loss: float) -> float:
    """exp of a mean next-token cross-entropy (nats)."""
    return math.exp(mean_loss)


def rouge_l(reference: str, candidate: str) -> float:
    """ROUGE-L F1: the longest common subsequence of words, as a share of both texts (0 to 1).

    Words are lower-cased runs of letters and digits, as the `rouge-score` package cuts them (no
    stemming). A reference-overlap check on LLM-judge scores: cheap, deterministic, and blind to
    paraphrase, so a judge and ROUGE-L should agree on the clear cases only.
    """
    ref, cand = _words(reference), _words(candidate)
    common = _lcs_length(ref, cand)
    if common == 0:
        return 0.0
    precision, recall = common / len(cand), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, one row of the dynamic programme at a time."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class RunMetrics:
    """A run folder's `metrics.jsonl`, its two kinds of lines apart, each kind in step order."""

    training: list[dict[str, float]]  # TrainRecord lines: the training curve
    evaluations: list[dict[str, float]]  # EvalRecord lines: val_loss, the task's metrics


def read_metrics(run_dir: str | Path) -> RunMetrics:
    """The lines of `run_dir/metrics.jsonl` (none where it is missing); evaluations are the lines with
    `val_loss`. A run written before training lines existed has only evaluations."""
    path = Path(run_dir) / "metrics.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return RunMetrics([r for r in lines if "val_loss" not in r], [r for r in lines if "val_loss" in r])
