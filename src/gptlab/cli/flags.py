"""Settings dataclasses as command-line flags: one `--flag` per field, its help from the field.

Nested settings get flags of their own (`TrainSettings` under `train`: `--lr`; `LoRASettings`
under `lora`: `--lora-rank`). Defaults stay out of the parsed namespace, so the flags given are
told apart from the rest: only they override a `--config` file, and the task's recipe fills
what neither gives. The model commands take their flags the same way (`GenerationSettings`, the
server's settings), over a settings object holding the command's defaults (`settings_from_flags`).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from gptlab.fields import typed

T = TypeVar("T")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, shown: Mapping[str, Any] | None = None,
                        prefix: str = "", path: str = "") -> None:
    """One flag per field of `cls` (and of its nested settings); `shown` names defaults to show in
    the help instead of the fields' own (a task's recipe for `train`)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata.get("flag", True):
            continue
        kind = hints[f.name]
        default = (shown or {}).get(f.name, _default(f))
        if dataclasses.is_dataclass(kind):
            nested = f.metadata.get("prefix")
            add_dataclass_flags(parser, kind, {g.name: getattr(default, g.name) for g in dataclasses.fields(kind)},
                                f"{nested}-" if nested else "", f"{path}{f.name}.")
        else:
            _add_flag(parser, f, kind, default, prefix, path)


def _add_flag(parser: argparse.ArgumentParser, f: dataclasses.Field, kind: Any, default: Any, prefix: str,
              path: str) -> None:
    if "help" not in f.metadata:
        raise TypeError(f"{f.name}: a setting without help text (declare it with gptlab.fields.setting)")
    named = f.metadata.get("flag", True)
    name = prefix + (named if isinstance(named, str) else f.name.replace("_", "-"))
    bounds = f.metadata.get("bounds")
    text = f.metadata["help"] + (f"; {bounds}" if bounds else "") \
        + (f" (default: {default})" if default not in (None, "", ()) else "")
    flag = {"dest": path + f.name, "default": argparse.SUPPRESS, "help": text}
    kind = _without_none(kind)
    if kind is bool:
        parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, **flag)
    elif typing.get_origin(kind) is list:
        parser.add_argument(f"--{name}", nargs="+", metavar="X", **flag)
    elif typing.get_origin(kind) is tuple:  # a repeatable flag, one value each time (--stop A --stop B)
        parser.add_argument(f"--{name}", action="append", metavar=name.replace("-", "_").upper(), **flag)
    else:
        parser.add_argument(f"--{name}", type=kind, metavar=name.replace("-", "_").upper(), **flag)


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def _without_none(kind: Any) -> Any:
    """`int` for `int | None`: what a given flag's value is."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        (kind,) = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    return kind


def flag_values(args: argparse.Namespace, cls: type, path: str = "") -> dict[str, Any]:
    """The settings of `cls` given as flags, nested as in a run's `config.json`."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            nested = flag_values(args, hints[f.name], f"{path}{f.name}.")
            if nested:
                values[f.name] = nested
        elif hasattr(args, path + f.name):
            values[f.name] = getattr(args, path + f.name)
    return values


def settings_from_flags(args: argparse.Namespace, base: T) -> T:
    """`base` (a settings dataclass without nested ones) with the flags given in place: the command's
    defaults are `base`'s, and the dataclass checks the values as the Python API's calls are checked."""
    hints = typing.get_type_hints(type(base))
    given = flag_values(args, type(base))
    return dataclasses.replace(base, **{name: typed(hints[name], value, name) for name, value in given.items()})


def overlay(base: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with the values of `given` in place; nested settings merged field by field."""
    merged = dict(base)
    for key, value in given.items():
        inner = base.get(key)
        merged[key] = overlay(inner, value) if isinstance(value, Mapping) and isinstance(inner, Mapping) else value
    return merged
