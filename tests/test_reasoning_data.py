"""Generated problems (seeded, a difficulty knob, held-out ones kept apart) and problem files."""

from __future__ import annotations

import json

import pytest

from gptlab.data.reasoning import ANSWER_FORMAT, generated, load_problems
from gptlab.evaluation.rewards import countdown, numeric


def test_arithmetic_is_seeded_sized_by_difficulty_and_answered_right():
    problems = generated("arithmetic", 50, seed=1, difficulty=3)
    assert problems == generated("arithmetic", 50, seed=1, difficulty=3) != generated("arithmetic", 50, 2, 3)
    assert len({p.prompt for p in problems}) == 50 and all(p.prompt.endswith(ANSWER_FORMAT) for p in problems)
    for problem in problems:
        a, op, b = problem.prompt.removeprefix("What is ").split("?")[0].split()
        assert len(a) == 3 and len(b) == (2 if op == "*" else 3)
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert numeric(problem, f"\\boxed{{{value}}}") == 1.0 and numeric(problem, f"{value + 1}") == 0.0
    assert max(len(p.answer) for p in generated("arithmetic", 20, 1, 1)) <= 3


def test_held_out_prompts_are_avoided_and_a_small_space_runs_out():
    held_out = generated("arithmetic", 100, seed=7, difficulty=1)
    training = generated("arithmetic", 1000, seed=8, difficulty=1, avoid=frozenset(p.prompt for p in held_out))
    assert not {p.prompt for p in training} & {p.prompt for p in held_out}
    assert 0 < len(training) <= 300 - 100  # 10 x 10 pairs x 3 operators, less the held-out
    with pytest.raises(ValueError, match="unknown problem generator 'algebra'"):
        generated("algebra", 1, 0, 1)


def test_every_countdown_problem_has_a_solution_built_with_it():
    problems = generated("countdown", 30, seed=3, difficulty=2)
    assert all(len(p.numbers) == 4 and int(p.answer) > 0 for p in problems)
    assert all("\\boxed{}" in p.prompt and str(p.answer) in p.prompt for p in problems)
    assert countdown(problems[0], "\\boxed{1 + 1}") == 0.0


def test_problem_files_name_file_line_and_field(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text(json.dumps({"prompt": "2+2?", "answer": 4}) + "\n\n" +
                    json.dumps({"prompt": "reach 6", "answer": "6", "numbers": [1, 2, 3], "tag": "x"}) + "\n")
    first, second = load_problems(path)
    assert (first.answer, second.numbers, second.record["tag"]) == ("4", (1, 2, 3), "x")
    for line, message in [({"prompt": "q"}, ":1: no 'answer' field"), ({"answer": 1}, ":1: no 'prompt' field"),
                          ({"prompt": "q", "answer": [1]}, "'answer' must be a string or a number, got list"),
                          ({"prompt": "", "answer": 1}, "'prompt' must be a non-empty string"),
                          ({"prompt": "q", "answer": 1, "numbers": "12"}, "'numbers' must be a list")]:
        path.write_text(json.dumps(line) + "\n")
        with pytest.raises(ValueError, match=message) as caught:
            load_problems(path)
        assert str(path) in str(caught.value)
    with pytest.raises(FileNotFoundError, match="no such problem file"):
        load_problems(tmp_path / "absent.jsonl")
