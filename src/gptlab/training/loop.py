"""The single training loop. Tasks differ only in the `Task` they plug in.

It owns: AdamW + warmup/cosine, gradient accumulation and clipping, bf16 autocast, eval
cadence, `metrics.jsonl`, `checkpoints/last` + `checkpoints/best`, resume, Ctrl-C, early stop,
and DDP under `torchrun`. Progress is reported through a callback; drawing bars and plots is
the caller's job.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gptlab.checkpoint.native import recover_folder
from gptlab.devices import pick_device
from gptlab.runtime import keep_large_allocations_on_heap
from gptlab.training.optim import build_optimizer, lr_at
from gptlab.training.state import load_training_state, save_training_checkpoint

log = logging.getLogger(__name__)
Batch = tuple[Tensor, ...]


@dataclass
class TrainSettings:
    """Optimisation and bookkeeping shared by every task (the flags of every `gptlab` trainer)."""

    max_steps: int = 1000  # optimizer steps
    batch_size: int = 8  # sequences per micro-batch (per process under DDP)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 6e-4  # peak learning rate, reached after warmup
    min_lr: float | None = None  # floor of the cosine decay (default: lr / 10)
    warmup_steps: int = 100  # linear warmup from 0
    weight_decay: float = 0.1  # AdamW decay, on >= 2-D parameters only
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.95  # AdamW beta2
    grad_clip: float = 1.0  # max global gradient norm (0 = no clipping)
    eval_every: int = 100  # steps between evaluations (and `last/` checkpoints)
    eval_batches: int = 20  # validation batches per evaluation
    precision: str = "auto"  # "32", "bf16-mixed", or "auto" (bf16 on CUDA when supported)
    device: str = "auto"  # cpu, cuda, mps or auto
    seed: int = 1337  # seeds dropout and data order
    compile: bool = False  # torch.compile the model (faster steps after a slow first one)
    early_stop: int = 0  # stop after this many evaluations without a new best/ (0 = never)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "eval_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in ("auto", "32", "bf16-mixed"):
            raise ValueError(f"precision must be 32, bf16-mixed or auto, got {self.precision!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def once_over(settings: TrainSettings, items: int) -> TrainSettings:
    """`settings` with no more eval batches than it takes to evaluate each of `items` once."""
    return dataclasses.replace(settings, eval_batches=min(settings.eval_batches, -(-items // settings.batch_size)))


class RunConfig:
    """Base of every task's config dataclass: the replayable `config.json` of a run, both ways."""

    TASK: ClassVar[str]  # the name written into config.json, e.g. "pretrain"

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.TASK, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        fields = {k: v for k, v in data.items() if k != "task"}
        return cls(**{**fields, "train": TrainSettings(**fields.get("train", {}))})


@dataclass
class Task:
    """What a task plugs into the loop: data, a loss, and optional extras for evaluations."""

    train_batch: Callable[[int], Batch]  # micro-batch by global index (resumable, shardable)
    val_batch: Callable[[int], Batch]  # validation batch i, for i in range(eval_batches)
    loss: Callable[[nn.Module, Batch], Tensor]  # mean loss of one batch
    count_tokens: Callable[[Batch], int]  # tokens a batch trains on, for tokens/s
    write_model: Callable[[nn.Module, Path], None]  # the model files of a checkpoint folder
    eval_metrics: Callable[[nn.Module], dict[str, float]] | None = None  # e.g. accuracy
    score: Callable[[dict[str, float]], float] | None = None  # of an eval record, for best/ (default: -val_loss)
    sample: Callable[[nn.Module], str] | None = None  # e.g. text from a fixed prompt


@dataclass
class Event:
    """Progress for the caller: kind is "step", "eval" or "done"."""

    kind: str
    step: int
    values: dict[str, Any] = field(default_factory=dict)


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
    return "32"


def _to(batch: Batch, device: torch.device) -> Batch:
    return tuple(t.to(device, non_blocking=True) for t in batch)


def train(model: nn.Module, task: Task, settings: TrainSettings, out_dir: str | Path,
          resume: bool = False, on_event: Callable[[Event], None] | None = None) -> dict[str, Any]:
    """Train `model` on `task`, writing metrics and checkpoints under `out_dir`; return the summary."""
    run = _Run(Path(out_dir), model, task, settings, on_event)
    run.recover_checkpoints()
    if resume:
        run.resume()
    elif run.ddp.main:  # a fresh run in a used folder: no metrics or best weights of the previous one
        (run.out_dir / "metrics.jsonl").unlink(missing_ok=True)
        shutil.rmtree(run.best_dir, ignore_errors=True)
    status = "completed"
    try:
        with _ctrl_c_between_steps(enabled=run.ddp.world == 1) as stop:
            while True:
                if stop.is_set():
                    raise KeyboardInterrupt
                step = run.progress["step"]
                due = step % settings.eval_every == 0 or step == settings.max_steps
                if step > 0 and due and run.progress["evaluated_at"] != step:  # also after a resume
                    run.evaluate_and_save()
                    if settings.early_stop and run.progress["evals_since_best"] >= settings.early_stop:
                        status = "early-stopped"
                        break
                if step >= settings.max_steps:
                    break
                run.step()
    except KeyboardInterrupt:
        run.save(run.last_dir, run.rng_for_next_step)  # as after the last finished step
        status = "interrupted"
    return run.finish(status)


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
                 on_event: Callable[[Event], None] | None) -> None:
        self.out_dir, self.model, self.task, self.settings = out_dir, model, task, settings
        self.ddp, self.device = _setup_distributed(settings.device)
        if self.device.type == "cpu":  # only CPU training page-faults its activations (runtime.py)
            keep_large_allocations_on_heap()
        self.emit = on_event if (on_event and self.ddp.main) else (lambda event: None)
        torch.manual_seed(settings.seed + self.ddp.rank)
        model.to(self.device)
        self.optimizer = build_optimizer(model, settings.lr, settings.weight_decay, (settings.beta1, settings.beta2))
        self.progress: dict[str, Any] = {
            "step": 0, "tokens": 0, "best_score": -math.inf, "best_val_loss": math.inf, "best_step": None,
            "evals_since_best": 0, "elapsed": 0.0,
            "window_losses": [],  # training losses since the last evaluation
            "evaluated_at": 0,  # step of the last evaluation
        }
        self.last_dir, self.best_dir = out_dir / "checkpoints" / "last", out_dir / "checkpoints" / "best"
        self.runner: nn.Module = model
        if self.ddp.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.runner = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if settings.compile:
            self.runner = torch.compile(self.runner)
        bf16 = _precision(settings, self.device) == "bf16-mixed"
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)
        self.min_lr = settings.min_lr if settings.min_lr is not None else settings.lr / 10
        self.rng_for_next_step = torch.get_rng_state()  # what dropout of the next step starts from
        self.started = time.perf_counter()
        self.window_tokens, self.window_start = 0, time.perf_counter()

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
        self.progress.update(load_training_state(self.last_dir, self.model, self.optimizer))
        self.progress.pop("param_groups", None)
        self.rng_for_next_step = torch.get_rng_state()
        self.started = time.perf_counter() - self.progress["elapsed"]
        log.info("resumed from %s at step %d", self.last_dir, self.progress["step"])

    def step(self) -> None:
        step, settings = self.progress["step"], self.settings
        lr = lr_at(step, settings.lr, self.min_lr, settings.warmup_steps, settings.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        loss, tokens = accumulate_gradients(self.runner, self.task, step, settings.grad_accum, self.ddp,
                                            self.device, self.autocast)
        clip_and_step(self.model, self.optimizer, settings.grad_clip)
        self.window_tokens += tokens
        self.progress.update(step=step + 1, tokens=self.progress["tokens"] + tokens, lr=lr)
        self.progress["window_losses"].append(loss)
        self.rng_for_next_step = torch.get_rng_state()
        self.emit(Event("step", step + 1, {"loss": loss, "lr": lr}))

    def evaluate_and_save(self) -> None:
        now = time.perf_counter()
        p = self.progress
        record = _evaluate(self.model, self.task, self.settings, self.ddp, self.device, self.autocast)
        record.update(step=p["step"], tokens=p["tokens"], lr=p["lr"],
                      train_loss=sum(p["window_losses"]) / len(p["window_losses"]),
                      tokens_per_second=self.window_tokens / max(now - self.window_start, 1e-9),
                      elapsed=now - self.started)
        p.update(elapsed=now - self.started, window_losses=[], evaluated_at=p["step"])
        score = self.task.score(record) if self.task.score is not None else -record["val_loss"]
        if score >= p["best_score"]:  # a tie goes to the later, longer-trained weights
            p.update(best_score=score, best_val_loss=record["val_loss"], best_step=p["step"], evals_since_best=0)
            self.save(self.best_dir, with_optimizer=False)
        else:
            p["evals_since_best"] += 1
        self.save(self.last_dir)
        if self.ddp.main:
            with (self.out_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")
            if self.task.sample is not None:
                record["sample"] = self.task.sample(self.model)
        self.emit(Event("eval", p["step"], record))
        self.window_tokens, self.window_start = 0, time.perf_counter()

    def save(self, folder: Path, rng: Tensor | None = None, with_optimizer: bool = True) -> None:
        if self.ddp.main:
            save_training_checkpoint(folder, lambda tmp: self.task.write_model(self.model, tmp),
                                     self.optimizer if with_optimizer else None, self.progress, rng)

    def finish(self, status: str) -> dict[str, Any]:
        summary = _summary(self.out_dir, self.progress, time.perf_counter() - self.started, status)
        if self.ddp.main:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self.emit(Event("done", self.progress["step"], summary))
        if self.ddp.world > 1:
            dist.barrier()
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
              ddp: _Dist, device: torch.device, autocast) -> dict[str, float]:
    """Mean val loss over `eval_batches` batches (shared across ranks) plus the task's metrics."""
    model.eval()
    total = torch.zeros(2, device=device)  # loss sum, batch count
    for index in range(ddp.rank, settings.eval_batches, ddp.world):
        with autocast:
            total[0] += task.loss(model, _to(task.val_batch(index), device)).float()
        total[1] += 1
    if ddp.world > 1:
        dist.all_reduce(total)
    record = {"val_loss": (total[0] / total[1]).item()}
    if task.eval_metrics is not None:
        record.update(task.eval_metrics(model))
    return record


def _summary(out_dir: Path, progress: dict[str, Any], wall: float, status: str) -> dict[str, Any]:
    final = None
    metrics = out_dir / "metrics.jsonl"
    if metrics.is_file():
        lines = metrics.read_text().splitlines()
        final = json.loads(lines[-1])["val_loss"] if lines else None
    best = progress["best_val_loss"]
    return {
        "status": status,
        "best_val_loss": None if math.isinf(best) else best,
        "best_step": progress["best_step"],
        "final_val_loss": final,
        "steps": progress["step"],
        "tokens": progress["tokens"],
        "wall_seconds": round(wall, 3),
        "tokens_per_second": round(progress["tokens"] / wall, 1) if wall > 0 else None,
    }
