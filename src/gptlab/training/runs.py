"""What every training task shares, so that no task imports another.

The base of every task's config (its recipe of training settings, its replayable `config.json`
both ways), the run folder's set-up, and the instruction tasks' helpers: which examples can
train, a sample response at each evaluation, the test-set responses at the end.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from torch import nn

from gptlab.checkpoint.manifest import record_files
from gptlab.data.instruction import Record, write_records
from gptlab.devices import pick_device
from gptlab.evaluation.responses import RESPONSES_FILE, generate_responses
from gptlab.fields import settings_from_json
from gptlab.files import write_text_atomically
from gptlab.generation import GenerationSettings, generate
from gptlab.loading import load_model
from gptlab.prompts import Style
from gptlab.tokenizer import Tokenizer
from gptlab.training.loop import GENERIC, TrainSettings
from gptlab.training.reports import OnEvent, RespondEvent, RunSummary

log = logging.getLogger(__name__)
SAMPLE_TOKENS = 35  # length of the sample response printed at each evaluation
VERIFY = ("check a gptlab folder's files against the sha256 in its manifest.json before loading it: the model "
          "to start from, its LoRA base, the run's own checkpoint at the end (--no-verify skips it, with a warning)")
T = TypeVar("T")
C = TypeVar("C", bound="RunConfig")


class RunConfig(abc.ABC):
    """Base of every task's config dataclass: its recipe, its replayable `config.json`, and `run`.

    Training settings left unset (None) take the task's recipe when the config is made, in
    Python as on the command line, so `config.json` always holds the resolved values.
    """

    TASK: ClassVar[str]  # the name written into config.json and the command's, e.g. "pretrain"
    COMMAND: ClassVar[str]  # how a user types the task's command: "gptlab pretrain", "gptlab finetune classify"
    SUMMARY: ClassVar[str]  # the command's line in `gptlab --help`
    DESCRIPTION: ClassVar[str]  # the command's own --help
    RECIPE: ClassVar[TrainSettings] = GENERIC  # the training settings this task uses where none are given
    train: TrainSettings
    out: str

    def __init_subclass__(cls, task: str, finetune: bool = True, **kwargs: Any) -> None:
        """`class SFTConfig(RunConfig, task="instruct")`: the task's name, and its command: `gptlab finetune
        <task>`, or `gptlab <task>` for a task that starts from no trained model (`finetune=False`)."""
        super().__init_subclass__(**kwargs)
        cls.TASK = task
        cls.COMMAND = f"gptlab finetune {task}" if finetune else f"gptlab {task}"

    def __post_init__(self) -> None:
        self.train = self.train.over(self.recipe())

    def recipe(self) -> TrainSettings:
        """The complete training settings for this config's other choices (`RECIPE` unless a task says)."""
        return self.RECIPE

    @classmethod
    def recipes(cls) -> dict[str, TrainSettings]:
        """What each `TrainSettings` field starts from when none of its flags is given (its flags' defaults)."""
        return {"train": cls.RECIPE}

    @abc.abstractmethod
    def run(self, resume: bool = False, on_event: OnEvent | None = None) -> RunSummary:
        """Train as this config says (from `checkpoints/last` with `resume`); writes the run folder
        and returns its summary."""

    def to_dict(self) -> dict[str, Any]:
        """The run's `config.json`."""
        return {"task": self.TASK, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "config.json") -> C:
        """The inverse of `to_dict`; a config of another task, or an unknown setting, is an error."""
        task = data.get("task", cls.TASK)
        if task != cls.TASK:
            raise ValueError(f"{where} is a {task} run's config, not a {cls.TASK} one")
        return settings_from_json(cls, {k: v for k, v in data.items() if k != "task"}, where)


def start_run(config: RunConfig, splits: Mapping[str, Sequence[T]] | None = None,
              write: Callable[[Sequence[T], Path], None] | None = None, suffix: str = ".json") -> Path:
    """The run folder, with the data splits (each written by `write` to `<name><suffix>`) and the
    replayable `config.json`, both in the folder's manifest: what reads them back checks them."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if splits is not None and write is not None:
        for name, part in splits.items():
            write(part, out / f"{name}{suffix}")
            written.append(f"{name}{suffix}")
    write_text_atomically(out / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")  # a full disk: no stub
    record_files(out, [*written, "config.json"])
    return out


def trainable(items: list[T], prompt_length: Callable[[T], int], max_length: int, split: str) -> list[T]:
    """Drop examples whose prompt fills `max_length`: no response token would be left to learn."""
    kept = [item for item in items if prompt_length(item) < max_length]
    if len(kept) < len(items):
        log.warning("%d %s records have prompts of %d tokens or more and are left out; raise "
                    "--allowed-max-length or use a model with a longer context", len(items) - len(kept), split,
                    max_length)
    if not kept:
        raise ValueError(f"no {split} record fits in {max_length} tokens")
    return kept


def sample_response(tokenizer: Tokenizer, style: Style, record: Record) -> Callable[[nn.Module], str]:
    """A function that answers one fixed validation instruction greedily, to watch the model learn."""
    prompt = tokenizer.encode(style.prompt(record.instruction, record.input))
    greedy = GenerationSettings(max_new_tokens=SAMPLE_TOKENS, temperature=0)
    settings = style.answer_settings(greedy).stopping_for(tokenizer)  # ends where an answer ends

    def sample(model: nn.Module) -> str:
        return tokenizer.decode(list(generate(model, prompt, settings)))

    return sample


def add_test_responses(summary: RunSummary, out: Path, style: Style, test: list[Record], max_new_tokens: int,
                       device: str, on_event: OnEvent | None, verify: bool) -> RunSummary:
    """After a finished run: greedy responses of its best checkpoint to every test record, in the
    book's file format (for `gptlab judge`), named in the summary."""
    if summary.status == "interrupted" or max_new_tokens <= 0 or not test:
        return summary
    loaded = load_model(str(out), device=pick_device(device), verify=verify)
    responses = []
    for response in generate_responses(loaded.model, loaded.tokenizer, style, test, max_new_tokens):
        responses.append(response)
        if on_event is not None:
            on_event(RespondEvent(len(responses), len(test)))
    path = out / RESPONSES_FILE
    write_records(test, path, responses)
    record_files(out, [RESPONSES_FILE])
    log.info("wrote %d test-set responses to %s", len(responses), path)
    return dataclasses.replace(summary, responses=str(path))
