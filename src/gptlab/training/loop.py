"""The single training loop. Tasks differ only in the `Task` they plug in.

It owns: AdamW + warmup/cosine, gradient accumulation and clipping, bf16 autocast, eval
cadence, `metrics.jsonl` (the training loss every `log_every` steps, each evaluation),
`checkpoints/last` + `checkpoints/best`, resume, Ctrl-C, early stop, and DDP under `torchrun`.
Progress is reported through a callback; drawing bars and plots is the caller's job. Nothing
process-wide is left changed: the global RNG that dropout draws from is the caller's again after.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gptlab.checkpoint.manifest import DamagedFileError, record_files
from gptlab.checkpoint.native import recover_folder
from gptlab.devices import cpu_has_native_bf16, pick_device
from gptlab.evaluation.metrics import read_metrics
from gptlab.fields import setting
from gptlab.files import append_line, write_text_atomically
from gptlab.quantize import refuse_training
from gptlab.training.optim import build_optimizer, lr_at
from gptlab.training.reports import (
    DoneEvent,
    EvalEvent,
    EvalRecord,
    OnEvent,
    RunSummary,
    StepEvent,
    TrainRecord,
    failure_reason,
)
from gptlab.training.state import Progress, load_training_state, save_training_checkpoint

log = logging.getLogger(__name__)
Batch = tuple[Tensor, ...]


@dataclass
class TrainSettings:
    """Optimisation and bookkeeping shared by every task (the flags of every `gptlab` trainer).

    A field left None is the task's to choose: each task config fills it from its recipe when
    it is made (`RunConfig.recipe`), so Python and the command line resolve a run alike, and
    `train` fills whatever is still unset from `GENERIC`.
    """

    max_steps: int | None = setting("optimizer steps", None)
    batch_size: int | None = setting("sequences per micro-batch (per process under DDP)", None)
    grad_accum: int | None = setting("micro-batches per optimizer step", None)
    lr: float | None = setting("peak learning rate, reached after warmup", None)
    min_lr: float | None = setting("floor of the cosine decay (default: lr / 10)", None)
    warmup_steps: int | None = setting("linear warmup from 0", None)
    weight_decay: float | None = setting("AdamW decay, on >= 2-D parameters only", None)
    beta1: float | None = setting("AdamW beta1", None)
    beta2: float | None = setting("AdamW beta2", None)
    grad_clip: float | None = setting("max global gradient norm (0 = no clipping)", None)
    eval_every: int | None = setting("steps between evaluations (and `last/` checkpoints)", None)
    eval_batches: int | None = setting("validation batches per evaluation", None)
    log_every: int | None = setting("steps per training-loss line of metrics.jsonl (the mean of those steps)", None)
    precision: str | None = setting('"32", "bf16-mixed", or "auto" (bf16-mixed on CUDA GPUs and on CPUs that '
                                    'multiply bf16 in hardware, AVX-512 BF16 or AMX; else 32)', None)
    device: str | None = setting("cpu, cuda, mps or auto", None)
    seed: int | None = setting("seeds dropout and data order", None)
    compile: bool | None = setting("torch.compile the model (faster steps after a slow first one)", None)
    early_stop: int | None = setting("stop after this many evaluations without a new best/ (0 = never)", None)
    eval_first: bool | None = setting("also measure the validation loss before the first step (the loss to beat; "
                                      "summary.json's initial_val_loss)", None)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "eval_batches", "log_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in (None, "auto", "32", "bf16-mixed"):
            raise ValueError(f"precision must be 32, bf16-mixed or auto, got {self.precision!r}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("min_lr", "warmup_steps", "weight_decay", "grad_clip", "early_stop"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2"):
            if getattr(self, name) is not None and not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def over(self, recipe: TrainSettings) -> TrainSettings:
        """These settings, each field left None taken from `recipe`."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        return dataclasses.replace(recipe, **given)


# Pretraining's recipe, and every setting a task's recipe leaves out (min_lr None: lr / 10).
GENERIC = TrainSettings(max_steps=1000, batch_size=8, grad_accum=1, lr=6e-4, min_lr=None, warmup_steps=100,
                        weight_decay=0.1, beta1=0.9, beta2=0.95, grad_clip=1.0, eval_every=100, eval_batches=20,
                        log_every=1, precision="auto", device="auto", seed=1337, compile=False, early_stop=0,
                        eval_first=False)


def once_over(settings: TrainSettings, items: int) -> TrainSettings:
    """`settings` with no more eval batches than it takes to evaluate each of `items` once."""
    return dataclasses.replace(settings, eval_batches=min(settings.eval_batches, -(-items // settings.batch_size)))


@dataclass
class Task:
    """What a task plugs into the loop: data, a loss, and optional extras for evaluations and the end."""

    train_batch: Callable[[int], Batch]  # micro-batch by global index (resumable, shardable)
    val_batch: Callable[[int], Batch]  # validation batch i, for i in range(eval_batches)
    loss: Callable[[nn.Module, Batch], Tensor]  # mean loss of one batch
    count_tokens: Callable[[Batch], int]  # tokens a batch trains on, for tokens/s
    write_model: Callable[[nn.Module, Path], None]  # the model files of a checkpoint folder
    eval_metrics: Callable[[nn.Module], dict[str, float]] | None = None  # e.g. val_accuracy
    score: Callable[[EvalRecord], float] | None = None  # of an evaluation, for best/ (default: -val_loss)
    sample: Callable[[nn.Module], str] | None = None  # e.g. text from a fixed prompt
    report: Callable[[RunSummary], RunSummary] | None = None  # after training, main process: add the task's results
    val_loss: Callable[[nn.Module, Batch], Tensor] | None = None  # of a validation batch, where not `loss`
    step_metrics: Callable[[], dict[str, float]] | None = None  # the task's numbers of the step just taken
    # (e.g. rewards), averaged over the steps of each training line of metrics.jsonl


@dataclass
class _Window:
    """The optimizer steps since a report: their losses, the tokens they trained on, their seconds."""

    losses: list[float] = dataclasses.field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    metrics: list[dict[str, float]] = dataclasses.field(default_factory=list)  # the task's, of each step

    def add(self, loss: float, tokens: int, seconds: float, metrics: dict[str, float]) -> None:
        self.losses.append(loss)
        self.tokens += tokens
        self.seconds += seconds
        self.metrics.append(metrics)

    def mean_loss(self) -> float:
        return sum(self.losses) / len(self.losses)

    def mean_metrics(self) -> dict[str, float]:
        """Each task metric's mean over the steps that reported it."""
        names = dict.fromkeys(name for step in self.metrics for name in step)
        return {name: sum(values) / len(values)
                for name in names if (values := [step[name] for step in self.metrics if name in step])}


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def is_main_process() -> bool:
    """True unless this is a non-zero rank under `torchrun`: the process that writes reports."""
    return os.environ.get("RANK", "0") == "0"


def _setup_distributed(device_name: str) -> tuple[_Dist, torch.device]:
    """Join the `torchrun` process group when launched by it; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Dist(), pick_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # Left to interpreter shutdown, Gloo's worker threads can abort the process (SIGABRT)
        # after a finished run; later runs in this process (pretrain, then fine-tune) reuse the group.
        atexit.register(dist.destroy_process_group)
    return _Dist(dist.get_rank(), dist.get_world_size()), device


def _precision(settings: TrainSettings, device: torch.device) -> str:
    if settings.precision != "auto":
        return settings.precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16-mixed"
    return "32"


def _to(batch: Batch, device: torch.device) -> Batch:
    return tuple(t.to(device, non_blocking=True) for t in batch)


def train(model: nn.Module, task: Task, settings: TrainSettings, out_dir: str | Path,
          resume: bool = False, on_event: OnEvent | None = None) -> RunSummary:
    """Train `model` on `task`, writing metrics, checkpoints and `summary.json` under `out_dir`;
    return the summary. Settings left unset are `GENERIC`'s. An error that ends the run (a full disk,
    a NaN loss, a task's own) is raised after `summary.json` records it (status "failed", the reason)."""
    refuse_training(model, "the model to train")
    settings = settings.over(GENERIC)
    ddp, device = _setup_distributed(settings.device)
    with _global_rng_kept(device):
        run = _Run(Path(out_dir), model, task, settings, on_event, ddp, device)
        if run.ddp.main:
            run.out_dir.mkdir(parents=True, exist_ok=True)
        run.recover_checkpoints()
        if resume:
            run.resume()
        elif run.ddp.main:  # a fresh run in a used folder: no metrics or best weights of the previous one
            (run.out_dir / "metrics.jsonl").unlink(missing_ok=True)
            shutil.rmtree(run.best_dir, ignore_errors=True)
        failure: Exception | None = None
        try:
            with _ctrl_c_between_steps(enabled=run.ddp.world == 1) as stop:
                status, reason = run.until_done(stop)
        except KeyboardInterrupt:
            status, reason = "interrupted", f"interrupted (Ctrl-C) after step {run.progress.step}"
            try:
                run.check_weights()
                run.log_training()  # the steps since the last line: the resumed run goes on after them
                run.save(run.last_dir, run.rng_for_next_step)  # as after the last finished step
            except Exception as err:
                failure = err
        except Exception as err:  # a full disk, a NaN loss, a task's own error: the run's record is still written
            failure = err
        if failure is not None:
            status, reason = "failed", failure_reason(failure)
        return run.finish(status, reason, failure)


def _global_rng_kept(device: torch.device) -> AbstractContextManager:
    """torch's global RNG (the CPU's and the training GPU's) given back as the caller had it: the run
    seeds it for dropout, which draws from no other generator."""
    gpus = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=gpus, device_type="cuda" if gpus else None)


@contextmanager
def _ctrl_c_between_steps(enabled: bool) -> Iterator[threading.Event]:
    """Let Ctrl-C stop the loop at the next step boundary, not inside a step or a checkpoint.

    A KeyboardInterrupt raised mid-step can land after the optimizer changed the weights but
    before the step was counted, and the saved checkpoint then resumes off the uninterrupted
    path. A second Ctrl-C interrupts at once. Only the main thread can take signals, and under
    DDP every rank must stop at the same step, so there Ctrl-C interrupts as before.
    """
    requested = threading.Event()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield requested
        return

    def on_ctrl_c(signum: int, frame: object) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


class _Run:
    """The state of one training run; `train` drives it step by step."""

    def __init__(self, out_dir: Path, model: nn.Module, task: Task, settings: TrainSettings,
                 on_event: OnEvent | None, ddp: _Dist, device: torch.device) -> None:
        self.out_dir, self.model, self.task, self.settings = out_dir, model, task, settings
        self.ddp, self.device = ddp, device
        self.emit: OnEvent = on_event if (on_event and self.ddp.main) else (lambda event: None)
        torch.manual_seed(settings.seed + self.ddp.rank)
        model.to(self.device)
        self.optimizer = build_optimizer(model, settings.lr, settings.weight_decay, (settings.beta1, settings.beta2))
        self.progress = Progress()
        self.last_dir, self.best_dir = out_dir / "checkpoints" / "last", out_dir / "checkpoints" / "best"
        self.runner: nn.Module = model
        if self.ddp.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.runner = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if settings.compile:
            self.runner = torch.compile(self.runner)
        precision = _precision(settings, self.device)
        if settings.precision == "auto" and self.ddp.main:
            log.info("precision %s (auto for %s; --precision 32 or bf16-mixed to choose)", precision, self.device.type)
        bf16 = precision == "bf16-mixed"
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)
        self.min_lr = settings.min_lr if settings.min_lr is not None else settings.lr / 10
        self.rng_for_next_step = torch.get_rng_state()  # what dropout of the next step starts from
        self.last_saved: int | None = None  # the step checkpoints/last holds, once this run knows it
        self.started = time.perf_counter()
        self.window_tokens, self.window_start = 0, time.perf_counter()
        self.since_logged = _Window()  # the steps since the last training-loss line

    def recover_checkpoints(self) -> None:
        """Complete or remove what a crash mid-checkpoint left (rank 0 alone touches files)."""
        if self.ddp.main:
            for folder in (self.last_dir, self.best_dir):
                if (done := recover_folder(folder)) is not None:
                    log.warning("%s", done)
        if self.ddp.world > 1:
            dist.barrier()

    def resume(self) -> None:
        if not (self.last_dir / "training.json").is_file():
            raise FileNotFoundError(f"nothing to resume: {self.last_dir} has no training checkpoint")
        self.progress = load_training_state(self.last_dir, self.model, self.optimizer)
        self.rng_for_next_step = torch.get_rng_state()
        self.started = time.perf_counter() - self.progress.elapsed
        log.info("resumed from %s at step %d", self.last_dir, self.progress.step)
        self.last_saved = self.progress.step
        if self.ddp.main:
            _restore_metrics(self.out_dir / "metrics.jsonl", self.progress)

    def until_done(self, stop: threading.Event) -> tuple[str, str]:
        """Step and evaluate until max_steps or early stopping (or Ctrl-C); the status and its reason."""
        settings, p = self.settings, self.progress
        if settings.eval_first and p.initial_val_loss is None:
            p.initial_val_loss, _ = _evaluate(self.model, self.task, settings, self.ddp, self.device, self.autocast)
            log.info("validation loss before training: %.4f", p.initial_val_loss)
        while True:
            if stop.is_set():
                raise KeyboardInterrupt
            due = p.step % settings.eval_every == 0 or p.step == settings.max_steps
            if p.step > 0 and due and p.evaluated_at != p.step:  # also after a resume
                self.evaluate_and_save()
                if settings.early_stop and p.evals_since_best >= settings.early_stop:
                    return "early-stopped", f"no new best in {settings.early_stop} evaluations (early_stop)"
            if p.step >= settings.max_steps:
                return "completed", f"reached max_steps ({settings.max_steps})"
            self.step()

    def step(self) -> None:
        p, settings = self.progress, self.settings
        started = time.perf_counter()
        lr = lr_at(p.step, settings.lr, self.min_lr, settings.warmup_steps, settings.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        loss, tokens = accumulate_gradients(self.runner, self.task, p.step, settings.grad_accum, self.ddp,
                                            self.device, self.autocast)
        if not math.isfinite(loss):  # before the optimizer step: the weights stay as they were
            raise self.diverged(f"loss became {_named(loss)} at step {p.step + 1}")
        clip_and_step(self.model, self.optimizer, settings.grad_clip)
        self.window_tokens += tokens
        p.step, p.tokens, p.lr = p.step + 1, p.tokens + tokens, lr
        p.window_losses.append(loss)
        self.rng_for_next_step = torch.get_rng_state()
        metrics = self.task.step_metrics() if self.task.step_metrics is not None else {}
        self.since_logged.add(loss, tokens, time.perf_counter() - started, metrics)
        if p.step % settings.log_every == 0:
            self.log_training()
        self.emit(StepEvent(p.step, loss, lr))

    def log_training(self) -> None:
        """A training-loss line in `metrics.jsonl` for the steps since the last one, if any."""
        window, p = self.since_logged, self.progress
        if not window.losses:
            return
        record = TrainRecord(step=p.step, tokens=p.tokens, lr=p.lr, train_loss=window.mean_loss(),
                             tokens_per_second=window.tokens / max(window.seconds, 1e-9),
                             elapsed=time.perf_counter() - self.started, metrics=window.mean_metrics())
        self.since_logged = _Window()
        if self.ddp.main:
            append_line(self.out_dir / "metrics.jsonl", json.dumps(record.to_json()))

    def evaluate_and_save(self) -> None:
        self.log_training()  # the training curve reaches every evaluation
        now = time.perf_counter()
        p = self.progress
        val_loss, metrics = _evaluate(self.model, self.task, self.settings, self.ddp, self.device, self.autocast)
        if not math.isfinite(val_loss):
            raise self.diverged(f"validation loss became {_named(val_loss)} at step {p.step}")
        self.check_weights()  # before anything is recorded of this evaluation
        record = EvalRecord(step=p.step, tokens=p.tokens, lr=p.lr, val_loss=val_loss,
                            train_loss=sum(p.window_losses) / len(p.window_losses),
                            tokens_per_second=self.window_tokens / max(now - self.window_start, 1e-9),
                            elapsed=now - self.started, metrics=metrics)
        p.elapsed, p.window_losses, p.evaluated_at = now - self.started, [], p.step
        if self.ddp.main:  # first: should a checkpoint fail (a full disk), the evaluation is still on record
            append_line(self.out_dir / "metrics.jsonl", json.dumps(record.to_json()))
        score = self.task.score(record) if self.task.score is not None else -record.val_loss
        if score >= p.best_score:  # a tie goes to the later, longer-trained weights
            p.best_score, p.best_val_loss, p.best_step, p.evals_since_best = score, record.val_loss, p.step, 0
            self.save(self.best_dir, with_optimizer=False)
        else:
            p.evals_since_best += 1
        self.save(self.last_dir)
        if self.ddp.main and self.task.sample is not None:
            record.sample = self.task.sample(self.model)
        self.emit(EvalEvent(p.step, record))
        self.window_tokens, self.window_start = 0, time.perf_counter()

    def save(self, folder: Path, rng: Tensor | None = None, with_optimizer: bool = True) -> None:
        """A checkpoint of the run as it stands; callers have checked the weights (`check_weights`),
        so no checkpoint holds weights gone NaN or infinite."""
        if self.ddp.main:
            self.progress.metrics_bytes, self.progress.metrics_sha256 = _metrics_mark(self.out_dir / "metrics.jsonl")
            save_training_checkpoint(folder, lambda tmp: self.task.write_model(self.model, tmp),
                                     self.optimizer if with_optimizer else None, self.progress, rng)
        if folder == self.last_dir:
            self.last_saved = self.progress.step

    def check_weights(self) -> None:
        """Stop the run if a step left weights NaN or infinite (every rank holds the same ones)."""
        params = [param.detach() for param in self.model.parameters()]
        if not torch.stack([torch.isfinite(param).all() for param in params]).all():
            raise self.diverged(f"the weights became NaN or infinite by step {self.progress.step}")

    def diverged(self, what: str) -> ValueError:
        """The error that ends a run gone numerically wrong, with where its last good checkpoint is."""
        kept = "" if self.last_saved is None else \
            f", or go on from {self.last_dir} (step {self.last_saved}) with --resume and a lower --lr"
        return ValueError(f"{what} (learning rate too high?); lower --lr and run again{kept}")

    def finish(self, status: str, reason: str, failure: Exception | None) -> RunSummary:
        """The summary, with the task's results added after a run that did not fail, written to
        `summary.json` by the main process; then `failure`, the error that ended the run, is raised."""
        p = self.progress
        summary = RunSummary.of_loop(status, reason, p.best_val_loss, p.best_step, _final_val_loss(self.out_dir),
                                     p.step, p.tokens, time.perf_counter() - self.started, p.initial_val_loss)
        self.emit(DoneEvent(p.step, status))
        if self.ddp.world > 1 and failure is None:  # a rank that failed may be failing alone: no waiting
            dist.barrier()
        if self.ddp.main and self.task.report is not None and failure is None:
            try:
                summary = self.task.report(summary)
            except Exception as err:
                failure, summary = err, dataclasses.replace(summary, status="failed", reason=failure_reason(err))
        if self.ddp.main:
            try:
                write_text_atomically(self.out_dir / "summary.json", json.dumps(summary.to_json(), indent=2) + "\n")
                record_files(self.out_dir, ["summary.json"])
            except OSError:
                if failure is None:
                    raise
                log.debug("summary.json could not be written either", exc_info=True)  # the failure says why
        if failure is not None:
            raise failure
        return summary


def accumulate_gradients(runner: nn.Module, task: Task, step: int, grad_accum: int, ddp: _Dist,
                         device: torch.device, autocast) -> tuple[float, int]:
    """Backward over the `grad_accum` micro-batches of `step`; return (mean loss, tokens).

    Micro-batch indices interleave ranks, so N processes with accumulation A see exactly the
    batches one process sees with accumulation N * A.
    """
    loss_sum, tokens = torch.zeros((), device=device), 0
    for micro in range(grad_accum):
        batch = _to(task.train_batch((step * grad_accum + micro) * ddp.world + ddp.rank), device)
        sync = ddp.world == 1 or micro == grad_accum - 1  # DDP all-reduces on the last one only
        with (nullcontext() if sync else runner.no_sync()), autocast:
            loss = task.loss(runner, batch) / grad_accum
        loss.backward()
        loss_sum += loss.detach().float()
        tokens += task.count_tokens(batch) * ddp.world
    if ddp.world > 1:  # report the loss of the global batch, not of this rank's share
        dist.all_reduce(loss_sum)
        loss_sum /= ddp.world
    return loss_sum.item(), tokens


def clip_and_step(model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float) -> float:
    """Clip the global gradient norm to `grad_clip` (0 = off), step, zero; return the norm before."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


@torch.no_grad()
def _evaluate(model: nn.Module, task: Task, settings: TrainSettings,
              ddp: _Dist, device: torch.device, autocast) -> tuple[float, dict[str, float]]:
    """Mean val loss over `eval_batches` batches (shared across ranks), and the task's metrics."""
    model.eval()
    total = torch.zeros(2, device=device)  # loss sum, batch count
    loss = task.val_loss or task.loss
    for index in range(ddp.rank, settings.eval_batches, ddp.world):
        with autocast:
            total[0] += loss(model, _to(task.val_batch(index), device)).float()
        total[1] += 1
    if ddp.world > 1:
        dist.all_reduce(total)
    return (total[0] / total[1]).item(), task.eval_metrics(model) if task.eval_metrics is not None else {}


def _named(value: float) -> str:
    """NaN, inf or -inf, as a message says it."""
    return "NaN" if math.isnan(value) else str(value)


def _metrics_mark(metrics: Path) -> tuple[int, str]:
    """The length and sha256 of `metrics.jsonl` as it stands (empty when there is none yet)."""
    data = metrics.read_bytes() if metrics.is_file() else b""
    return len(data), hashlib.sha256(data).hexdigest()


def _restore_metrics(metrics: Path, progress: Progress) -> None:
    """`metrics.jsonl` as the checkpoint resumed from recorded it: its lines up to then checked against the
    recorded sha256 (a damaged curve is refused, not extended), the lines a run wrote after it dropped."""
    if progress.metrics_bytes is None:  # a checkpoint that recorded no mark: cut by the lines' steps
        _forget_lines_after(metrics, progress.step)
        return
    if not metrics.is_file():
        log.warning("%s is missing: the resumed run's curve starts at step %d", metrics, progress.step)
        return
    data = metrics.read_bytes()
    kept = data[:progress.metrics_bytes]
    if len(kept) < progress.metrics_bytes or hashlib.sha256(kept).hexdigest() != progress.metrics_sha256:
        raise DamagedFileError(
            f"{metrics}: damaged: its first {progress.metrics_bytes} bytes, the lines up to step {progress.step}, "
            "are not those the checkpoint resumed from recorded (a disk error, an interrupted copy or an edit); "
            "restore it from a good copy, or move it aside to resume with the curve starting afresh")
    if len(kept) < len(data):
        write_text_atomically(metrics, kept.decode("utf-8"))
        log.info("%s: dropped the lines after step %d, the step resumed from", metrics, progress.step)


def _forget_lines_after(metrics: Path, step: int) -> None:
    """Drop the `metrics.jsonl` lines of steps after `step`: a run that ended after writing them but
    before saving its next checkpoint left them, and the resumed run trains and evaluates those steps again."""
    lines = metrics.read_text().splitlines(keepends=True) if metrics.is_file() else []
    kept = [line for line in lines if _step_of(line) <= step]
    if len(kept) < len(lines):
        write_text_atomically(metrics, "".join(kept))
        log.info("%s: dropped %d line(s) after step %d, the step resumed from", metrics, len(lines) - len(kept), step)


def _step_of(line: str) -> float:
    """The step of a `metrics.jsonl` line; infinite for a line a crash cut short, so it goes too."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def _final_val_loss(out_dir: Path) -> float | None:
    """The validation loss of the run's last evaluation (this process's or, resumed, an earlier one's)."""
    evaluations = read_metrics(out_dir).evaluations
    return evaluations[-1]["val_loss"] if evaluations else None
