"""Problems whose answers a program can check, for reinforcement learning with verifiable rewards.

Two kinds are generated offline from a seed, with a difficulty knob, so a run needs no download and
can be made neither hopeless nor trivial for its model: `arithmetic` (add, subtract or multiply
multi-digit numbers) and `countdown` (reach a target from given numbers). A user's own come from a
JSONL file of `prompt` + `answer` records. The checking itself is `evaluation.rewards`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptlab.data.reading import jsonl_rows, read_utf8

GENERATED = ("arithmetic", "countdown")
# What every generated prompt asks for: the answer where `evaluation.rewards.boxed` finds it (the book's choice).
ANSWER_FORMAT = "Put the final answer in \\boxed{}."


@dataclass(frozen=True)
class Problem:
    """One question with a checkable answer."""

    prompt: str  # the question, as the user's message (the model's prompt style frames it)
    answer: str  # the reference: a number, a string or a regular expression; countdown: the target
    numbers: tuple[int, ...] = ()  # countdown: the numbers the expression must use, each once
    record: Mapping[str, Any] = field(default_factory=dict, compare=False)  # a data file's record, for own rewards


def arithmetic(rng: random.Random, difficulty: int) -> Problem:
    """`a op b` with `difficulty`-digit operands (a product's second factor one digit shorter)."""
    op = rng.choice("+-*")
    digits_b = max(1, difficulty - 1) if op == "*" else difficulty
    a, b = _number(rng, difficulty), _number(rng, digits_b)
    value = a + b if op == "+" else a - b if op == "-" else a * b
    return Problem(f"What is {a} {op} {b}? {ANSWER_FORMAT}", str(value))


def countdown(rng: random.Random, difficulty: int) -> Problem:
    """Reach a target from `difficulty + 2` numbers (1 to 25), each used once; the target comes from
    combining them left to right at random, so every problem has a solution."""
    numbers = [rng.randint(1, 25) for _ in range(difficulty + 2)]
    target = numbers[0]
    for n in numbers[1:]:
        choices = [target + n, target * n] + ([target - n] if target > n else [])
        target = rng.choice(choices)
    shown = ", ".join(map(str, sorted(numbers)))
    prompt = (f"Using the numbers {shown}, each exactly once, and only + - * / and parentheses, write an "
              f"expression that equals {target}. Put the expression in \\boxed{{}}.")
    return Problem(prompt, str(target), tuple(numbers))


MAKERS: dict[str, Callable[[random.Random, int], Problem]] = {"arithmetic": arithmetic, "countdown": countdown}


def generated(task: str, count: int, seed: int, difficulty: int, avoid: frozenset[str] = frozenset()) -> list[Problem]:
    """`count` distinct problems of a generated `task`, a pure function of `seed` and `difficulty`;
    none whose prompt is in `avoid` (the held-out ones), and fewer when the space runs out."""
    if task not in MAKERS:
        raise ValueError(f"unknown problem generator {task!r}; known: {', '.join(GENERATED)}")
    if difficulty < 1:
        raise ValueError(f"difficulty must be >= 1, got {difficulty}")
    rng = random.Random(f"{task}:{seed}:{difficulty}")
    problems: dict[str, Problem] = {}
    for _ in range(count * 20):  # tries: a small space (difficulty 1) fills up
        problem = MAKERS[task](rng, difficulty)
        if problem.prompt not in avoid:
            problems.setdefault(problem.prompt, problem)
        if len(problems) == count:
            break
    return list(problems.values())


def load_problems(path: str | Path, prompt_field: str = "prompt", answer_field: str = "answer") -> list[Problem]:
    """The records of a JSONL file: a string `prompt_field`, an `answer_field` string or number, and
    optionally `numbers` (a countdown problem's); an error names the file, the line and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such problem file (or give arithmetic or countdown)")
    problems = []
    for line, record in jsonl_rows(str(path), read_utf8(path)):
        where = f"{path}:{line}"
        if not isinstance(record, dict):
            raise ValueError(f"{where}: expected a JSON object with {prompt_field!r} and {answer_field!r}")
        for name in (prompt_field, answer_field):
            if name not in record:
                raise ValueError(f"{where}: no {name!r} field")
        prompt, answer = record[prompt_field], record[answer_field]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{where}: {prompt_field!r} must be a non-empty string")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise ValueError(f"{where}: {answer_field!r} must be a string or a number, got {type(answer).__name__}")
        numbers = record.get("numbers", [])
        if not isinstance(numbers, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
            raise ValueError(f"{where}: 'numbers' must be a list of whole numbers")
        problems.append(Problem(prompt, str(answer), tuple(numbers), record))
    if not problems:
        raise ValueError(f"{path}: no records")
    return problems


def _number(rng: random.Random, digits: int) -> int:
    """A whole number of exactly `digits` digits (one digit: 0 to 9)."""
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)
