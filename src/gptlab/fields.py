"""Settings fields that carry their own help text: the one place a setting's meaning is written.

Every settings dataclass (a task's config, `TrainSettings`, `LoRASettings`) declares its fields
with `setting(...)`; the command line makes one flag per field and shows this text, the Python
API and `config.json` fill the same fields. Nothing reads source code to find the help.
`settings_from_json` is where a JSON file's values enter such a dataclass: checked against the
fields' types there, so nothing further in has to doubt them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


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


def settings_from_json(kind: type[T], data: Any, where: str) -> T:
    """A settings dataclass (nested ones too) from its JSON object. An unknown name, a missing value,
    a value of the wrong type or out of range is an error naming `where` and the setting."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a JSON object of settings, got {_shown(data)}")
    hints = typing.get_type_hints(kind)
    fields = {f.name: f for f in dataclasses.fields(kind)}
    for name in data:
        if name not in fields:
            raise ValueError(f"{where}: unknown setting {name!r} (known: {', '.join(fields)})")
    for name, f in fields.items():
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ValueError(f"{where}: no value for {name!r}")
    values = {name: typed(hints[name], value, f"{where}, {name}") for name, value in data.items()}
    try:
        return kind(**values)
    except ValueError as err:  # a range check of the dataclass itself
        raise ValueError(f"{where}: {err}") from None


def typed(hint: Any, value: Any, where: str) -> Any:
    """`value` as a field typed `hint` holds it (a JSON list as a tuple, a whole number as a float
    where those are due), or an error naming `where`: the file and the setting."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]  # `X | None`, or `X | Y` read as the first that fits
        for option in options[:-1]:
            try:
                return typed(option, value, where)
            except ValueError:
                continue
        return typed(options[-1], value, where)
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else settings_from_json(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {_shown(value)}")
        items = [typed(args[0], item, f"{where}[{i}]") for i, item in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {_shown(value)}")
        return dict(value)
    if hint not in _KINDS:  # Any
        return value
    if hint in (bool, str):
        fits = isinstance(value, hint)
    else:  # JSON may write 1.0 as 1; True is no number
        fits = isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
    if not fits:
        raise ValueError(f"{where}: expected {_KINDS[hint]}, got {_shown(value)}")
    if hint is float:
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number, got {value}")
        return float(value)
    return value


def _shown(value: Any) -> str:
    """A JSON value in a message, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
