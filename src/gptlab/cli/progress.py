"""Progress on the terminal. A training run: a bar of steps, a line per evaluation, a bar of test-set
responses, and at the end the summary, the plots and how to resume. A download: a bar per file."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gptlab.download import DownloadProgress
from gptlab.training.reports import DoneEvent, EvalEvent, EvalRecord, Event, RespondEvent, RunSummary, StepEvent
from gptlab.training.runs import RunConfig

log = logging.getLogger(__name__)


def _bar(total: int | None, desc: str, unit: str, initial: int = 0, disable: bool = False, **options: Any) -> tqdm:
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, disable=disable,
                mininterval=0.5 if sys.stderr.isatty() else 30, **options)


class TrainingDisplay:
    """Draws a run's events on stderr; under torchrun only rank 0 (`show`) draws."""

    def __init__(self, max_steps: int, show: bool = True) -> None:
        self.max_steps, self.show = max_steps, show
        self.steps: tqdm | None = None  # created at the first step, after data and model are ready
        self.responses: tqdm | None = None

    def __call__(self, event: Event) -> None:
        match event:
            case StepEvent(step=step, loss=loss, lr=lr):
                bar = self._steps(step)
                bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}", refresh=False)
                bar.update(step - bar.n)
            case EvalEvent(step=step, record=record):
                bar = self._steps(step)
                bar.write(eval_line(record), file=sys.stderr)
                if record.sample is not None:
                    bar.write(f"  sample: {record.sample!r}", file=sys.stderr)
            case DoneEvent():
                if self.steps is not None:
                    self.steps.close()
            case RespondEvent(done=done, total=total):
                if self.responses is None:
                    self.responses = _bar(total, "responses", "record")
                self.responses.update(done - self.responses.n)

    def _steps(self, step: int) -> tqdm:
        if self.steps is None:
            self.steps = _bar(self.max_steps, "train", "step", initial=step - 1, disable=not self.show)
        return self.steps

    def close(self) -> None:
        for bar in (self.steps, self.responses):
            if bar is not None:
                bar.close()


class DownloadBars:
    """A bar of bytes per file on stderr, drawn from `download_gpt2`'s progress; files already there get none."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.file = ""  # the file the bar counts

    def __call__(self, progress: DownloadProgress) -> None:
        if self.bar is None or self.file != progress.file:
            self.close()
            self.file = progress.file
            self.bar = _bar(progress.total, progress.file, "B", unit_scale=True, unit_divisor=1024)
        self.bar.update(progress.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def eval_line(record: EvalRecord) -> str:
    """One evaluation in a line: losses, the task's accuracies and margins, speed."""
    extra = "".join(f", {key.replace('_', ' ')} {value:.3f}" for key, value in record.metrics.items()
                    if key.endswith(("accuracy", "margin")))
    return (f"step {record.step}: train loss {record.train_loss:.3f}, val loss {record.val_loss:.3f}{extra}, "
            f"{record.tokens_per_second:,.0f} tokens/s")


def draw_plots(out: str) -> list[Path]:
    """The plots of a run folder from the metrics it has; none where drawing fails (a full disk
    refuses them too, and the error that ended the run is the one to report)."""
    from gptlab.evaluation.plots import plot_run  # matplotlib: imported only when needed

    try:
        return plot_run(out)
    except Exception:
        log.debug("no plots of %s", out, exc_info=True)
        return []


def print_report(config: RunConfig, summary: RunSummary, command: str) -> int:
    """The summary, the plots of the run folder and, after Ctrl-C, how to go on; the exit status."""
    plots = draw_plots(config.out)
    print(json.dumps(summary.to_json(), indent=2))
    if summary.classifier is not None:
        baseline = summary.classifier.baseline
        print(f"test accuracy: {summary.classifier.accuracy['test']:.4f} (this model) vs "
              f"{baseline.test_accuracy:.4f} ({baseline.method})")
    print(f"run folder: {config.out} (plots: {', '.join(p.name for p in plots) or 'none'})")
    if summary.status == "interrupted":
        print(f"interrupted: saved {config.out}/checkpoints/last; continue with "
              f"{command} --out {config.out} --resume", file=sys.stderr)
        return 130
    return 0
