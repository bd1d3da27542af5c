"""Settings fields that carry their own help text: the one place a setting's meaning is written.

Every settings dataclass (a task's config, `TrainSettings`, `LoRASettings`) declares its fields
with `setting(...)`; the command line makes one flag per field and shows this text, the Python
API and `config.json` fill the same fields. Nothing reads source code to find the help.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


def setting(help: str, default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
            flag: bool = True, prefix: str | None = None) -> Any:
    """A dataclass field with its help text.

    `flag=False` keeps it off the command line (set by the program, or too rich for a flag);
    a nested settings dataclass gets flags of its own, named `--<prefix>-<field>` (no prefix:
    `--<field>`, as the training settings' `--lr`).
    """
    metadata = {"help": help, "flag": flag, "prefix": prefix}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
