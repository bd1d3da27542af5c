"""`gptlab finetune grpo` as a user runs it, on a small character-level model: a run writes its folder,
a reward that favours one token makes it likelier, Ctrl-C and --resume continue the very same run,
LoRA with a KL penalty trains, --eval-only scores, and bad inputs end in one line."""

from __future__ import annotations

import json
import os
import signal
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from e2e.commands import gptlab
from gptlab.checkpoint.native import save_checkpoint
from gptlab.config import GPTConfig
from gptlab.evaluation.metrics import read_metrics
from gptlab.loading import load_model
from gptlab.model import GPT
from gptlab.prompts import prompt_style
from gptlab.tokenizer import CharTokenizer

BIN = Path(sys.executable).parent
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
QUESTIONS = ["Say seven", "Say a digit", "Count to three", "Name a number", "Write 7", "Pick one", "Go", "Again"]
STEP_METRICS = {"reward", "reward_string", "reward_sevens.py:sevens", "accuracy", "zero_advantage_groups", "kl",
                "clip_fraction", "completion_length", "truncated"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A random 2-layer model over printable ASCII, eight questions, and a reward for each "7" written."""
    folder = tmp_path_factory.mktemp("grpo")
    chars = CharTokenizer(string.printable[:95] + "\n")
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=len(chars.chars), context_length=256, n_layer=2, n_head=2, n_embd=32)
    save_checkpoint(GPT(config), chars, folder / "chars")
    with (folder / "problems.jsonl").open("w") as file:
        for question in QUESTIONS:
            file.write(json.dumps({"prompt": question, "answer": "7"}) + "\n")
    (folder / "sevens.py").write_text("def sevens(problem, completion):\n"
                                      "    return completion.count('7') / max(len(completion), 1)\n"
                                      "def vowels(problem, completion):\n"
                                      "    return sum(c in 'aeiou' for c in completion)\n"
                                      "def words(problem, completion):\n    return 'many'\n")
    return folder


def grpo_flags(folder: Path, out: Path, *flags: str, reward: str = "sevens=4") -> list[str]:
    return ["finetune", "grpo", "--data", str(folder / "problems.jsonl"), "--model", str(folder / "chars"),
            "--out", str(out), "--reward", "string", "--reward", f"{folder / 'sevens.py'}:{reward}",
            "--heldout", "2", "--group-size", "4", "--batch-size", "4", "--grad-accum", "2", "--completion-tokens",
            "8", "--pass-k", "2", "--probe", "2", "--lr", "3e-3", "--min-lr", "3e-3", *flags]


STRAIGHT = ("--max-steps", "30", "--eval-every", "10")


@pytest.fixture(scope="module")
def straight(folder) -> Path:
    run = folder / "straight"
    done = gptlab(*grpo_flags(folder, run, *STRAIGHT), env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "base pass rate" in done.stderr and "heldout accuracy" in done.stderr
    return run


def test_a_run_writes_its_folder_with_metrics_every_step(straight):
    metrics = read_metrics(straight)
    assert [r["step"] for r in metrics.training] == list(range(1, 31))
    assert all(STEP_METRICS <= set(r) for r in metrics.training)
    assert all(0 <= r["zero_advantage_groups"] <= 1 and r["kl"] == 0 for r in metrics.training)
    assert all(r["completion_length"] == 8 and r["truncated"] == 1 for r in metrics.training)  # no end-of-text
    assert [e["step"] for e in metrics.evaluations] == [10, 20, 30]
    assert all(e["val_loss"] == pytest.approx(1 - e["heldout_accuracy"]) and "heldout_pass_at_2" in e
               for e in metrics.evaluations)
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 30
    assert summary["initial_heldout_accuracy"] == pytest.approx(1 - summary["initial_val_loss"])
    assert summary["final_heldout_accuracy"] == metrics.evaluations[-1]["heldout_accuracy"]
    assert json.loads((straight / "config.json").read_text())["task"] == "grpo"
    assert (straight / "checkpoints" / "best" / "model.safetensors").is_file()
    assert all((straight / name).read_bytes()[:4] == b"\x89PNG" for name in ("loss.png", "rewards.png", "heldout.png"))


def sevens_probability(model_folder: Path) -> float:
    """The mean probability of "7" as the first token of an answer to each question."""
    loaded = load_model(str(model_folder))
    style = prompt_style("alpaca")
    seven = loaded.tokenizer.encode("7")[0]
    with torch.no_grad():
        chances = [loaded.model(torch.tensor([loaded.tokenizer.encode(style.prompt(q))]))[0, -1].softmax(-1)[seven]
                   for q in QUESTIONS]
    return float(sum(chances) / len(chances))


def test_a_reward_for_one_token_makes_the_policy_write_it_more(folder, straight):
    before, after = sevens_probability(folder / "chars"), sevens_probability(straight / "checkpoints" / "last")
    assert after > 2 * before, (before, after)
    rewards = [r["reward_sevens.py:sevens"] for r in read_metrics(straight).training]
    assert sum(rewards[-10:]) > 2 * sum(rewards[:10]), rewards


def test_ctrl_c_then_resume_finishes_like_the_uninterrupted_run(folder, straight):
    run = folder / "interrupted"
    proc = subprocess.Popen([str(BIN / "gptlab"), *grpo_flags(folder, run, *STRAIGHT)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **ONE_THREAD})
    lines, deadline = run / "metrics.jsonl", time.time() + 300
    while not (lines.is_file() and "val_loss" in lines.read_text()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    stopped_at = json.loads((run / "checkpoints" / "last" / "training.json").read_text())["step"]
    assert 10 <= stopped_at < 30
    resumed = gptlab("finetune", "grpo", "--out", str(run), "--resume", env=ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "base pass rate" not in resumed.stderr  # measured once, before the first step
    a, b = read_metrics(straight), read_metrics(run)
    assert [r["step"] for r in b.training] == list(range(1, 31))
    for ra, rb in zip(a.training + a.evaluations, b.training + b.evaluations, strict=True):
        assert {k: v for k, v in ra.items() if k not in ("elapsed", "tokens_per_second")} == pytest.approx(
            {k: v for k, v in rb.items() if k not in ("elapsed", "tokens_per_second")}, abs=1e-6)


def test_lora_with_a_kl_penalty_and_reused_rollouts(folder):
    run = folder / "lora"
    done = gptlab(*grpo_flags(folder, run, "--max-steps", "4", "--eval-every", "4", "--train-layers", "lora",
                              "--kl-coef", "0.1", "--updates-per-batch", "2", "--lr", "3e-2", "--min-lr", "3e-2",
                              "--probe", "0", "--pass-k", "0", reward="vowels"), env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    training = read_metrics(run).training
    assert training[0]["zero_advantage_groups"] < 1  # vowels are common: the first rollouts teach something
    assert training[0]["kl"] == 0 and training[0]["clip_fraction"] == 0  # the policy is still the reference
    assert training[1]["kl"] > 0 and training[1]["reward"] == training[0]["reward"]  # the same rollouts again
    assert training[2]["reward"] != training[1]["reward"]  # fresh rollouts
    config = json.loads((run / "checkpoints" / "last" / "config.json").read_text())
    assert config["lora"]["rank"] == 8


def test_a_run_resumed_inside_a_reused_rollout_batch_goes_on_exactly(folder):
    flags = ("--updates-per-batch", "2", "--probe", "0", "--pass-k", "0", "--eval-every", "3")
    whole, cut = folder / "reused-whole", folder / "reused-cut"
    assert gptlab(*grpo_flags(folder, whole, "--max-steps", "4", *flags), env=ONE_THREAD).returncode == 0
    assert gptlab(*grpo_flags(folder, cut, "--max-steps", "3", *flags), env=ONE_THREAD).returncode == 0
    resumed = gptlab("finetune", "grpo", "--out", str(cut), "--resume", "--max-steps", "4", env=ONE_THREAD)
    assert resumed.returncode == 0 and "without it saved" not in resumed.stderr, resumed.stderr[-3000:]
    a, b = read_metrics(whole).training, read_metrics(cut).training
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    timeless = [{k: v for k, v in r.items() if k not in ("elapsed", "tokens_per_second")} for r in (a[3], b[3])]
    assert timeless[0] == pytest.approx(timeless[1], abs=1e-7)  # the second update of the batch sampled at step 3


def test_eval_only_scores_the_model_without_training(folder):
    run = folder / "scored"
    done = gptlab("finetune", "grpo", "--data", str(folder / "problems.jsonl"), "--model", str(folder / "chars"),
                  "--out", str(run), "--eval-only", "--group-size", "2", "--batch-size", "2", "--grad-accum", "1",
                  "--completion-tokens", "4", env=ONE_THREAD)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "evaluated" and summary["steps"] == 0
    assert summary["heldout_accuracy"] == 0.0 and summary["heldout_pass_at_2"] == 0.0
    assert not (run / "checkpoints").exists()


@pytest.mark.parametrize("flags, message", [
    (["--group-size", "1"], "group_size must be at least 2 (advantages compare completions of one problem), got 1"),
    (["--reward", "no_such_module_anywhere:score"], "no_such_module_anywhere does not import (ModuleNotFoundError"),
    (["--reward", "{dir}/sevens.py:words"], "reward sevens.py:words returned 'many' (str), not a finite number"),
    (["--data", "{dir}/bad.jsonl"], "bad.jsonl:2: no 'answer' field"),
    (["--batch-size", "3"], "(6 completions a step) must be a multiple of --group-size (4)"),
])
def test_bad_inputs_end_in_one_line(folder, flags, message):
    (folder / "bad.jsonl").write_text('{"prompt": "a", "answer": "1"}\n{"prompt": "b"}\n')
    flags = [flag.replace("{dir}", str(folder)) for flag in flags]
    done = gptlab(*grpo_flags(folder, folder / "bad", "--max-steps", "1"), *flags, env=ONE_THREAD)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert lines[-1].startswith("error: ") and message.replace("{dir}", str(folder)) in lines[-1], done.stderr[-3000:]
