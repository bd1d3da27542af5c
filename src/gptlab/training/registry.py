"""Every training task by name: its config class, which knows how to run itself.

    config = TASKS["classify"](data="sms-spam", pretrain_on_texts=True)
    summary = config.run()

The names are the `"task"` of each run's `config.json`. A task registered here is a command, with
nothing else to edit: `gptlab finetune <task>` (or `gptlab <task>` for `finetune=False`), its help
from the config's `SUMMARY` and `DESCRIPTION`, one flag per setting (`cli/train.py`).
"""

from __future__ import annotations

from gptlab.training.classify import ClassifyConfig
from gptlab.training.dpo import DPOConfig
from gptlab.training.grpo import GRPOConfig
from gptlab.training.pretrain import PretrainConfig
from gptlab.training.runs import RunConfig
from gptlab.training.sft import SFTConfig

TASKS: dict[str, type[RunConfig]] = {config.TASK: config for config in (PretrainConfig, ClassifyConfig, SFTConfig,
                                                                         DPOConfig, GRPOConfig)}
