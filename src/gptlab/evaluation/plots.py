"""Plots of a run folder's `metrics.jsonl`, drawn with matplotlib's `Figure` and no pyplot: saving
a PNG needs no display, and the process's backend (a notebook's, a GUI's) is left as it was."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from gptlab.evaluation.metrics import read_metrics

TRAINING_COLOR, VALIDATION_COLOR = "tab:blue", "tab:orange"


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write `loss.png` (the training loss as logged, validation loss at each evaluation, tokens seen
    on top) and `lr.png`, and the task's plots where its metrics are there; return paths."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    evaluations = metrics.evaluations
    training = metrics.training or evaluations  # a run from before training lines: their train_loss
    if not training:
        return []
    steps = [r["step"] for r in training]
    lone = "." if len(training) == 1 else ""  # a marker, so that a single point shows

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(steps, [r["train_loss"] for r in training], color=TRAINING_COLOR, label="training loss",
            marker=lone)
    ax.plot([r["step"] for r in evaluations], [r["val_loss"] for r in evaluations], color=VALIDATION_COLOR,
            linestyle="-.", marker="o", label="validation loss")
    ax.set_xlabel("steps")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    top = ax.twiny()  # the book's second x-axis: tokens seen
    top.plot([r["tokens"] for r in training], [r["train_loss"] for r in training], alpha=0)
    top.set_xlabel("tokens seen")
    loss_png = _save(fig, run_dir / "loss.png")

    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    ax.plot(steps, [r["lr"] for r in training], marker=lone)
    ax.set_xlabel("steps")
    ax.set_ylabel("learning rate")
    written = [loss_png, _save(fig, run_dir / "lr.png")]
    if any("val_accuracy" in r for r in evaluations):
        written.append(_curves(run_dir / "accuracy.png", evaluations, {"val_accuracy": "validation accuracy"},
                               "accuracy", ylim=(0, 1)))
    if any("val_reward_margin" in r for r in evaluations):  # DPO: chosen minus rejected reward
        written.append(_curves(run_dir / "reward_margins.png", evaluations,
                               {"train_reward_margin": "training", "val_reward_margin": "validation"},
                               "reward margin"))
    if any("reward" in r for r in metrics.training):  # GRPO: the rollouts' rewards and accuracy, every step
        written.append(_curves(run_dir / "rewards.png", metrics.training,
                               {"reward": "mean reward", "accuracy": "accuracy of the samples"}, "reward"))
    if any("heldout_accuracy" in r for r in evaluations):  # GRPO: greedy accuracy and pass@k on held-out problems
        passes = sorted({key for r in evaluations for key in r if key.startswith("heldout_pass_at_")})
        written.append(_curves(run_dir / "heldout.png", evaluations,
                               {"heldout_accuracy": "held-out accuracy (greedy)",
                                **{key: key.removeprefix("heldout_").replace("_at_", "@") for key in passes}},
                               "accuracy", ylim=(0, 1)))
    summary = run_dir / "summary.json"
    if summary.is_file() and "test_confusion" in (result := json.loads(summary.read_text())):
        written.append(_confusion_plot(run_dir, result["test_confusion"], result["labels"]))
    return written


def _save(fig: Figure, path: Path) -> Path:
    """Lay `fig` out and write it as a PNG."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _curves(path: Path, records: list[dict], curves: dict[str, str], ylabel: str,
            ylim: tuple[float, float] | None = None) -> Path:
    """One line per metric key of `curves` (key -> label) against steps, where records have it."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for key, label in curves.items():
        kept = [r for r in records if key in r]
        ax.plot([r["step"] for r in kept], [r[key] for r in kept], marker=".", label=label)
    ax.set_xlabel("steps")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(loc="lower right")
    return _save(fig, path)


def _confusion_plot(run_dir: Path, confusion: list[list[int]], labels: list[str]) -> Path:
    """Test-split confusion matrix: rows are true labels, columns predictions."""
    fig = Figure(figsize=(1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2))
    ax = fig.subplots()
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(max(row) for row in confusion) or 1
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    ax.set_title("test split")
    return _save(fig, run_dir / "confusion.png")


def score_histogram(scores: list[int], path: Path, title: str) -> Path:
    """Judge scores (0-100) in bins of 10, with the mean marked."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.hist(scores, bins=range(0, 111, 10), edgecolor="white")
    if scores:
        mean = sum(scores) / len(scores)
        ax.axvline(mean, color="black", linestyle="--", label=f"mean {mean:.1f}")
        ax.legend(loc="upper right")
    ax.set_xlabel("judge score")
    ax.set_ylabel("responses")
    ax.set_xlim(0, 110)
    ax.set_title(title)
    return _save(fig, path)
