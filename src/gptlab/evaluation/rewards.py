"""Verifiable rewards: functions of a problem and a completion's text that return a number.

A reward is checked by a program, not judged by a model: the answer is taken from where the prompt
asked for it (the last `\\boxed{...}`; failing that, for numbers, the last number in the text) and
compared with the reference. Built-in rewards are named (`numeric`, `string`, `regex`, `countdown`,
`format`); a user's own is `module:function` or `file.py:function`, called as `function(problem,
completion)`. Malformed answers score 0, never raise: a model early in training writes anything.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from gptlab.data.reasoning import Problem

Reward = Callable[[Problem, str], float]
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")  # 1,234 and -3.5; a leading "." or "+" is not taken
BOXED = "\\boxed{"


def boxed(text: str) -> str | None:
    """What the last `\\boxed{...}` of `text` holds (braces inside balanced), None without one."""
    start = text.rfind(BOXED)
    if start < 0:
        return None
    depth, at = 1, start + len(BOXED)
    for i in range(at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[at:i].strip()
    return None  # never closed


def parse_number(text: str) -> Fraction | None:
    """`text` as an exact number ("1,234", "-3.50", "7", "$12", "3/4"), None when it is not one."""
    cleaned = text.strip().strip("$").replace(",", "").replace(" ", "")
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        return None


def numeric_answer(text: str) -> Fraction | None:
    """The number a completion answers with: its boxed answer, else the last number it writes."""
    answer = boxed(text)
    if answer is None:
        numbers = NUMBER.findall(text)
        answer = numbers[-1] if numbers else None
    return None if answer is None else parse_number(answer)


def numeric(problem: Problem, completion: str) -> float:
    """1 when the answer equals the reference as a number (3.0 = 3 = 3.00), else 0."""
    answer, reference = numeric_answer(completion), parse_number(problem.answer)
    return float(answer is not None and answer == reference)


def _stated(completion: str) -> str:
    """The answer as text: the boxed one, else the whole completion, stripped."""
    answer = boxed(completion)
    return (answer if answer is not None else completion).strip()


def string(problem: Problem, completion: str) -> float:
    """1 when the answer is the reference string exactly (outer spaces aside), else 0."""
    return float(_stated(completion) == problem.answer.strip())


def regex(problem: Problem, completion: str) -> float:
    """1 when the reference, a regular expression, matches the whole answer, else 0."""
    return float(re.fullmatch(problem.answer, _stated(completion)) is not None)


def format_reward(problem: Problem, completion: str) -> float:
    """1 when the completion puts a non-empty answer in `\\boxed{}`, where the prompt asked, else 0."""
    return float(bool(boxed(completion)))


def countdown_value(expression: str, numbers: Sequence[int]) -> Fraction:
    """The exact value of an arithmetic expression that uses each of `numbers` once, with + - * / and
    parentheses only. Parsed with `ast`, never run: anything else (names, calls, powers, other
    numbers, a number used twice or left out, division by zero) is a ValueError saying what."""
    try:
        tree = ast.parse(expression.replace("×", "*").replace("÷", "/"), mode="eval")
    except SyntaxError:
        raise ValueError(f"not an expression: {expression!r}") from None
    used: list[int] = []
    value = _evaluate(tree.body, used)
    if sorted(used) != sorted(numbers):
        raise ValueError(f"uses {sorted(used)}, not each of {sorted(numbers)} once")
    return value


_OPERATORS: dict[type, Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        if isinstance(node.op, ast.Div) and right == 0:
            raise ValueError("division by zero")
        return _OPERATORS[type(node.op)](left, right)
    raise ValueError(f"only + - * / on whole numbers are allowed, not {type(node).__name__}")


def countdown(problem: Problem, completion: str) -> float:
    """1 when the boxed expression (or the last line, up to an "=") reaches the target from the
    problem's numbers, each used once, else 0."""
    answer = boxed(completion)
    if answer is None:
        lines = completion.strip().splitlines()
        answer = lines[-1] if lines else ""
    try:
        return float(countdown_value(answer.split("=")[0], problem.numbers) == parse_number(problem.answer))
    except ValueError:
        return 0.0


BUILTIN: dict[str, Reward] = {"numeric": numeric, "string": string, "regex": regex, "countdown": countdown,
                              "format": format_reward}
VERIFIERS = ("numeric", "string", "regex", "countdown")  # the built-ins that say right or wrong


@dataclass(frozen=True)
class WeightedReward:
    """A reward function and its share of the total reward."""

    name: str  # a built-in's name, module:function or file.py:function (the file's folder left out)
    weight: float
    function: Reward

    def __call__(self, problem: Problem, completion: str) -> float:
        """The function's value, checked: a number that is not a number is an error naming the reward."""
        value = self.function(problem, completion)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"reward {self.name} returned {value!r:.60} ({type(value).__name__}), "
                             "not a finite number")
        return float(value)


def parse_rewards(specs: Sequence[str]) -> list[WeightedReward]:
    """Rewards from `NAME[=WEIGHT]` strings: a built-in name, `module:function` or `file.py:function`."""
    rewards = []
    for spec in specs:
        name, _, weight = spec.partition("=")
        try:
            value = float(weight) if weight else 1.0
        except ValueError:
            raise ValueError(f"--reward {spec}: the weight after '=' must be a number") from None
        function = BUILTIN[name] if name in BUILTIN else load_reward(name)
        rewards.append(WeightedReward(Path(name).name, value, function))  # a file's reward named without its folder
    if not rewards:
        raise ValueError("--reward: give at least one reward")
    return rewards


def load_reward(spec: str) -> Reward:
    """The function `spec` names: `package.module:function` (importable) or `path/to/file.py:function`."""
    module_name, _, function = spec.rpartition(":")
    if not module_name or not function:
        raise ValueError(f"--reward {spec}: expected a built-in ({', '.join(BUILTIN)}), module:function "
                         "or file.py:function")
    try:
        if module_name.endswith(".py"):
            found = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            if found is None or found.loader is None or not Path(module_name).is_file():
                raise FileNotFoundError(f"no such file {module_name}")
            module = importlib.util.module_from_spec(found)
            found.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as err:  # whatever the user's module raises while importing
        reason = " ".join(str(err).split())
        raise ValueError(f"--reward {spec}: {module_name} does not import ({type(err).__name__}: {reason})") from None
    value = getattr(module, function, None)
    if value is None:
        raise ValueError(f"--reward {spec}: {module_name} has no {function!r}")
    if not callable(value):
        raise ValueError(f"--reward {spec}: {module_name}.{function} is a {type(value).__name__}, not a function")
    return value
