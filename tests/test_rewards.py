"""Verifiable rewards: answers taken from where the prompt asked, malformed ones scoring 0, the
countdown verifier refusing anything but arithmetic on the given numbers, and users' own rewards."""

from __future__ import annotations

from fractions import Fraction

import pytest

from gptlab.data.reasoning import Problem
from gptlab.evaluation.rewards import (
    boxed,
    countdown,
    countdown_value,
    format_reward,
    numeric,
    numeric_answer,
    parse_rewards,
    regex,
    string,
)

SUM = Problem("What is 1200 + 34?", "1234")


def test_boxed_takes_the_last_box_with_braces_inside_balanced():
    assert boxed("first \\boxed{1} then \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert boxed("no box") is None and boxed("\\boxed{never closed") is None


@pytest.mark.parametrize("text, expected", [
    ("The answer is \\boxed{1234}.", 1.0), ("\\boxed{1,234}", 1.0), ("\\boxed{1234.0}", 1.0),
    ("I think 12 + 34 makes 1234", 1.0),  # no box: the last number
    ("\\boxed{1234} or maybe 7", 1.0),  # a box wins over later numbers
    ("\\boxed{1233}", 0.0), ("\\boxed{twelve}", 0.0), ("\\boxed{}", 0.0), ("", 0.0), ("no idea", 0.0),
    ("1234.5.6", 0.0), ("\\boxed{1/0}", 0.0),
])
def test_numeric_reward(text, expected):
    assert numeric(SUM, text) == expected


def test_numeric_answers_are_exact_numbers():
    assert numeric_answer("\\boxed{-3.50}") == Fraction(-7, 2)
    assert numeric_answer("costs $12") == 12 and numeric_answer("-5 and -7") == -7


def test_string_regex_and_format_rewards():
    paris = Problem("Capital of France?", "Paris")
    assert string(paris, "  \\boxed{Paris} ") == 1.0 and string(paris, "Paris") == 1.0
    assert string(paris, "paris") == 0.0 and string(paris, "It is Paris") == 0.0
    colour = Problem("Spell it", "colou?r")
    assert regex(colour, "\\boxed{color}") == 1.0 and regex(colour, "colour") == 1.0
    assert regex(colour, "colours") == 0.0
    assert format_reward(SUM, "so \\boxed{3}") == 1.0
    assert format_reward(SUM, "3") == 0.0 and format_reward(SUM, "\\boxed{ }") == 0.0


def test_countdown_checks_the_expression_exactly_on_the_given_numbers():
    problem = Problem("reach 30", "30", (3, 5, 6))
    assert countdown_value("(6 - 3) * 5", (3, 5, 6)) == 15 and countdown_value("5 / 3 * 6", [6, 5, 3]) == 10
    assert countdown(problem, "\\boxed{5 * 6 * 3 / 3}") == 0.0  # 3 used twice
    assert countdown(problem, "Let me see.\n\\boxed{(3 - 5 + 6) * 5 + 6 - 6}") == 0.0  # 6 twice, 3 numbers given
    assert countdown(Problem("reach 13", "13", (3, 5, 6)), "\\boxed{(6 - 5) * 3 + 10}") == 0.0  # 10 not given
    assert countdown(problem, "\\boxed{6 * 5 * 3 / 3}") == 0.0
    assert countdown(Problem("reach 33", "33", (3, 5, 6)), "\\boxed{6 * 5 + 3}") == 1.0
    assert countdown(Problem("reach 33", "33", (3, 5, 6)), "I get it:\n6*5+3 = 33") == 1.0  # last line, before '='


@pytest.mark.parametrize("expression, refused", [
    ("__import__('os').system('true')", "Call"), ("2 ** 5", "BinOp"), ("a + 3", "Name"), ("-3 + 6 + 5", "UnaryOp"),
    ("3.5 + 6 + 5", "Constant"), ("True + 5 + 6", "Constant"), ("[3, 5, 6]", "List"), ("3 5 6", "not an expression"),
    ("6 / (5 - 5) + 3", "division by zero"), ("3 + 5", "not each of"),
])
def test_countdown_verifier_refuses_anything_but_arithmetic(expression, refused):
    with pytest.raises(ValueError, match=refused):
        countdown_value(expression, (3, 5, 6))
    assert countdown(Problem("x", "14", (3, 5, 6)), f"\\boxed{{{expression}}}") == 0.0


def test_user_rewards_load_from_a_file_or_module_with_one_line_errors(tmp_path):
    mine = tmp_path / "mine.py"
    mine.write_text("def length(problem, completion):\n    return len(completion) / 10\n"
                    "def text(problem, completion):\n    return 'high'\n"
                    "NOT_A_FUNCTION = 3\n")
    (length, fmt) = parse_rewards([f"{mine}:length=0.5", "format=0.1"])
    assert (length.name, length.weight, length(SUM, "abcde")) == ("mine.py:length", 0.5, 0.5)
    assert (fmt.weight, fmt(SUM, "\\boxed{1}")) == (0.1, 1.0)
    (text,) = parse_rewards([f"{mine}:text"])
    with pytest.raises(ValueError, match=r"reward mine.py:text returned 'high' \(str\), not a finite number"):
        text(SUM, "x")
    assert parse_rewards(["fractions:Fraction"])[0].weight == 1.0  # an importable module's callable
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_here\n")
    for spec, message in [(f"{broken}:f", r"does not import \(ModuleNotFoundError"),
                          ("no_such_module_at_all:f", "does not import"),
                          (f"{tmp_path}/absent.py:f", r"does not import \(FileNotFoundError"),
                          (f"{mine}:absent", "has no 'absent'"), (f"{mine}:NOT_A_FUNCTION", "is a int, not a function"),
                          ("numeric=lots", "the weight after '=' must be a number"),
                          ("nonsense", "expected a built-in")]:
        with pytest.raises(ValueError, match=message) as caught:
            parse_rewards([spec])
        assert "\n" not in str(caught.value)
