"""Settings fields that carry their own help text: the one place a setting's meaning is written.

Every settings dataclass (a task's config, `TrainSettings`, `LoRASettings`) declares its fields
with `setting(...)`; the command line makes one flag per field and shows this text, the Python
API and `config.json` fill the same fields. Nothing reads source code to find the help.
`settings_from_json` is where a JSON file's values enter such a dataclass: checked against the
fields' types there, so nothing further in has to doubt them. A number setting's `Range` is its one
check: the dataclass runs it (`check_ranges`), and the server's request fields run the same one
(`range_check`), so a value out of range gets the same sentence from every entry point.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


class OutOfRange(ValueError):
    """A setting outside its `Range`; its message names the setting, so it is shown as it is."""


@dataclass(frozen=True)
class Range:
    """The values a number setting may take."""

    low: float | None = None  # the least allowed (None: no lower end)
    high: float | None = None  # the most allowed (None: no upper end)
    above: bool = False  # `low` itself is not allowed (top_p: above 0)
    note: str = ""  # what a value means, said in the error, e.g. "0 = greedy"

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.above:
            return f"above {low}" + (f" and at most {high}" if self.high is not None else "")
        if self.low is not None and self.high is not None:
            return f"from {low} to {high}"
        return f"at least {low}" if self.low is not None else f"at most {high}"

    def check(self, name: str, value: Any) -> Any:
        """`value` (None passes: not set), or `OutOfRange` naming `name`."""
        if value is None:
            return value
        below = self.low is not None and (value <= self.low if self.above else value < self.low)
        if below or (self.high is not None and value > self.high):
            note = f" ({self.note})" if self.note else ""
            raise OutOfRange(f"{name} must be {self}{note}, got {_number(value)}")
        return value


def setting(help: str, default: Any = dataclasses.MISSING, *, factory: Callable[[], Any] | None = None,
            flag: bool | str = True, prefix: str | None = None, bounds: Range | None = None) -> Any:
    """A dataclass field with its help text (and, for a number, the `Range` it must lie in).

    `flag=False` keeps it off the command line (set by the program, or too rich for a flag), a
    string names its flag where the field's name would read badly (`stop_strings`: `--stop`);
    a nested settings dataclass gets flags of its own, named `--<prefix>-<field>` (no prefix:
    `--<field>`, as the training settings' `--lr`).
    """
    metadata = {"help": help, "flag": flag, "prefix": prefix, "bounds": bounds}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_ranges(settings: Any) -> None:
    """Every field of a settings dataclass that declares a `Range` checked against it (in `__post_init__`)."""
    for f in dataclasses.fields(settings):
        if f.metadata.get("bounds") is not None:
            f.metadata["bounds"].check(f.name, getattr(settings, f.name))


def range_check(kind: type, field: str, name: str | None = None) -> Callable[[Any], Any]:
    """The check of `kind`'s setting `field`, for a value that arrives elsewhere under `name` (the
    server's request fields: `max_tokens` is generation's `max_new_tokens`)."""
    bounds: Range = next(f for f in dataclasses.fields(kind) if f.name == field).metadata["bounds"]
    return functools.partial(bounds.check, name or field)


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


def _number(value: Any) -> str:
    """5.0 as 5, so a value reads the same whether it came as a float (a flag) or a whole number (JSON)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _shown(value: Any) -> str:
    """A JSON value in a message, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
