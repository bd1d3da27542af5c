"""Plots of a run folder's `metrics.jsonl` (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_metrics(run_dir: Path) -> list[dict]:
    """The evaluation records of a run, in order."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write `loss.png` (train/val loss vs steps, tokens seen on top) and `lr.png`; return paths."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not records:
        return []
    steps = [r["step"] for r in records]
    tokens = [r["tokens"] for r in records]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [r["train_loss"] for r in records], label="training loss")
    ax.plot(steps, [r["val_loss"] for r in records], linestyle="-.", label="validation loss")
    ax.set_xlabel("steps")
    ax.set_ylabel("loss")
    ax.legend(loc="upper right")
    top = ax.twiny()  # the book's second x-axis: tokens seen
    top.plot(tokens, [r["val_loss"] for r in records], alpha=0)
    top.set_xlabel("tokens seen")
    fig.tight_layout()
    loss_png = run_dir / "loss.png"
    fig.savefig(loss_png, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(steps, [r["lr"] for r in records], marker=".")
    ax.set_xlabel("steps")
    ax.set_ylabel("learning rate (at eval steps)")
    fig.tight_layout()
    lr_png = run_dir / "lr.png"
    fig.savefig(lr_png, dpi=100)
    plt.close(fig)
    written = [loss_png, lr_png]
    if any("val_accuracy" in r for r in records):
        written.append(_curves(run_dir / "accuracy.png", records, {"val_accuracy": "validation accuracy"},
                               "accuracy", ylim=(0, 1)))
    if any("val_reward_margin" in r for r in records):  # DPO: chosen minus rejected reward
        written.append(_curves(run_dir / "reward_margins.png", records,
                               {"train_reward_margin": "training", "val_reward_margin": "validation"},
                               "reward margin"))
    summary = run_dir / "summary.json"
    if summary.is_file() and "test_confusion" in (result := json.loads(summary.read_text())):
        written.append(_confusion_plot(run_dir, result["test_confusion"], result["labels"]))
    return written


def _curves(path: Path, records: list[dict], curves: dict[str, str], ylabel: str,
            ylim: tuple[float, float] | None = None) -> Path:
    """One line per metric key of `curves` (key -> label) against steps, where records have it."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in curves.items():
        kept = [r for r in records if key in r]
        ax.plot([r["step"] for r in kept], [r[key] for r in kept], marker=".", label=label)
    ax.set_xlabel("steps")
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _confusion_plot(run_dir: Path, confusion: list[list[int]], labels: list[str]) -> Path:
    """Test-split confusion matrix: rows are true labels, columns predictions."""
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2))
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
    fig.tight_layout()
    path = run_dir / "confusion.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def score_histogram(scores: list[int], path: Path, title: str) -> Path:
    """Judge scores (0-100) in bins of 10, with the mean marked."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(scores, bins=range(0, 111, 10), edgecolor="white")
    if scores:
        mean = sum(scores) / len(scores)
        ax.axvline(mean, color="black", linestyle="--", label=f"mean {mean:.1f}")
        ax.legend(loc="upper right")
    ax.set_xlabel("judge score")
    ax.set_ylabel("responses")
    ax.set_xlim(0, 110)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
