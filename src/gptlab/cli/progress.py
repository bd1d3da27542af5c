"""Progress on the terminal. A training run: a bar of steps, a line per evaluation, a bar of test-set
responses, and at the end the summary, the plots and how to resume. A download: a bar per file.
Where stderr is not a terminal (CI, a pipe, a log file) each bar is plain lines instead of redraws."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gptlab.download import DownloadProgress
from gptlab.training.reports import DoneEvent, EvalEvent, EvalRecord, Event, RespondEvent, RunSummary, StepEvent
from gptlab.training.runs import RunConfig

log = logging.getLogger(__name__)


LINE_SECONDS = 10.0  # at most one progress line this often where stderr is not a terminal


def _bar(total: int | None, desc: str, unit: str, initial: int = 0, disable: bool = False,
         **options: Any) -> tqdm | ProgressLines:
    """A tqdm bar on a terminal, else progress as lines (a bar's redraws pile up in a log)."""
    if not sys.stderr.isatty():
        scale = options.get("unit_divisor", 1000) if options.get("unit_scale") else None
        return ProgressLines(total, desc, unit, initial, disable, scale)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, disable=disable,
                mininterval=0.5, **options)


class ProgressLines:
    """The part of tqdm's interface the displays use, written as a line now and then: the first
    update, then at most one each `LINE_SECONDS`, and the last when it closes."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0, disable: bool = False,
                 scale: int | None = None) -> None:
        self.total, self.desc, self.unit, self.n, self.disable = total, desc, unit, initial, disable
        self.scale = scale  # counts in k, M, G of this divisor (1024 for bytes), as tqdm's unit_scale; None: as is
        self.postfix: dict[str, Any] = {}
        self.printed_at: float | None = None  # when the last line went out
        self.printed_n = initial  # the count it showed

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.printed_at is None or time.monotonic() - self.printed_at >= LINE_SECONDS:
            self._print()

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = values

    def write(self, line: str, file: Any = None) -> None:
        print(line, file=file or sys.stderr, flush=True)

    def close(self) -> None:
        if self.n != self.printed_n:
            self._print()

    def _print(self) -> None:
        """E.g. `train: 120/1000 steps, loss 3.412, lr 6.0e-04` or `model.safetensors: 3.50MB/500MB`."""
        self.printed_at, self.printed_n = time.monotonic(), self.n
        if self.disable:
            return
        count = self._count(self.n) + (f"/{self._count(self.total)}" if self.total else "")
        unit = f" {self.unit}s" if self.scale is None else ""
        extra = "".join(f", {key} {value}" for key, value in self.postfix.items())
        self.write(f"{self.desc}: {count}{unit}{extra}")

    def _count(self, n: int) -> str:
        return str(n) if self.scale is None else tqdm.format_sizeof(n, self.unit, self.scale)


class TrainingDisplay:
    """Draws a run's events on stderr; under torchrun only rank 0 (`show`) draws."""

    def __init__(self, max_steps: int, show: bool = True) -> None:
        self.max_steps, self.show = max_steps, show
        self.steps: tqdm | ProgressLines | None = None  # created at the first step, after data and model are ready
        self.responses: tqdm | ProgressLines | None = None

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

    def _steps(self, step: int) -> tqdm | ProgressLines:
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
        self.bar: tqdm | ProgressLines | None = None
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
