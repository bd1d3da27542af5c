"""`gptlab finetune dpo` as a user runs it: from the 16-record SFT model (in full and with LoRA), and on the
book's data set."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import torch

from e2e.commands import gptlab
from gptlab.checkpoint.weights import read_safetensors
from gptlab.evaluation.metrics import read_metrics
from gptlab.loading import load_model
from gptlab.lora import DEFAULT_TARGETS

REJECTED = "I do not know."


def dpo_on_the_sixteen(sft: Path, records: list[dict], run: Path,
                       *flags: str) -> tuple[Path, subprocess.CompletedProcess]:
    """DPO of the 16-record SFT model, its answers chosen over "I do not know."; the pairs file and the run."""
    pairs = run.parent / "pairs.json"
    pairs.write_text(json.dumps([{**r, "chosen": r["output"], "rejected": REJECTED} for r in records]))
    return pairs, gptlab("finetune", "dpo", "--data", str(pairs), "--model", str(sft), "--out", str(run),
                         "--train-fraction", "0.5", "--test-fraction", "0.25", "--response-tokens", "20", *flags)


def test_dpo_widens_the_reward_margin_and_keeps_the_sft_answers(overfit_run, sixteen_records, tmp_path):
    sft, _ = overfit_run
    run = tmp_path / "dpo"
    pairs, out = dpo_on_the_sixteen(sft, sixteen_records, run, "--max-steps", "30", "--eval-every", "5",
                                    "--lr", "5e-5", "--min-lr", "5e-5")
    assert out.returncode == 0, out.stderr
    assert "val reward margin" in out.stderr and "sample:" in out.stderr

    evals = read_metrics(run).evaluations
    assert [e["step"] for e in evals] == [5, 10, 15, 20, 25, 30]
    margins = [e["val_reward_margin"] for e in evals]  # 0 before the first step: policy = reference
    assert 0 < margins[0] and all(a < b for a, b in zip(margins, margins[1:])), margins
    assert all(e["val_reward_accuracy"] == 1.0 and e["train_reward_accuracy"] == 1.0 for e in evals)
    assert evals[-1]["val_rejected_reward"] < evals[0]["val_rejected_reward"] < 0
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] < math.log(2)
    assert all(abs(e["val_reward_margin"] - (e["val_chosen_reward"] - e["val_rejected_reward"])) < 1e-6 for e in evals)

    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["best_step"] == 30
    assert (run / "reward_margins.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "config.json").read_text())["task"] == "dpo"
    assert json.loads((run / "checkpoints" / "best" / "config.json").read_text())["prompt_style"] == "alpaca"
    splits = {name: json.loads((run / f"{name}.json").read_text()) for name in ("train", "test", "val")}
    assert [len(part) for part in splits.values()] == [8, 4, 4]
    assert all(row["rejected"] == REJECTED for row in splits["train"])
    responses = json.loads((run / "instruction-data-with-response.json").read_text())
    assert [r["model_response"] for r in responses] == [r["chosen"] for r in splits["test"]]

    answers = tmp_path / "answers.json"
    out = gptlab("respond", "--model", str(run), "--data", str(pairs), "--out", str(answers))
    assert out.returncode == 0, out.stderr
    assert [a["model_response"] for a in json.loads(answers.read_text())] == [r["output"] for r in sixteen_records]


def test_dpo_on_the_books_preference_data(tmp_path):
    run = tmp_path / "dpo"
    out = gptlab("finetune", "dpo", "--data", "instruction-data-with-preference", "--model", "gpt-tiny",
                 "--out", str(run), "--max-steps", "2", "--eval-every", "2", "--response-tokens", "4")
    assert out.returncode == 0, out.stderr
    assert "DPO from random weights only exercises the mechanics" in out.stderr
    assert [len(json.loads((run / f"{s}.json").read_text())) for s in ("train", "test", "val")] == [935, 110, 55]
    (evaluation,) = read_metrics(run).evaluations
    # two steps at the book's 5e-6 barely move the policy away from its frozen copy
    assert abs(evaluation["val_loss"] - math.log(2)) < 1e-3
    assert abs(evaluation["val_reward_margin"]) < 1e-3
    responses = json.loads((run / "instruction-data-with-response.json").read_text())
    assert len(responses) == 110 and {"chosen", "rejected", "model_response"} <= set(responses[0])
    assert (run / "reward_margins.png").is_file() and (run / "checkpoints" / "best" / "model.safetensors").is_file()


def test_dpo_with_lora_trains_adapters_against_the_untouched_starting_weights(overfit_run, sixteen_records, tmp_path):
    sft, _ = overfit_run
    run = tmp_path / "dpo-lora"
    pairs, out = dpo_on_the_sixteen(sft, sixteen_records, run, "--train-layers", "lora", "--lora-rank", "4",
                                    "--max-steps", "10", "--eval-every", "5", "--lr", "2e-4", "--min-lr", "2e-4")
    assert out.returncode == 0, out.stderr
    margins = [e["val_reward_margin"] for e in read_metrics(run).evaluations]
    assert 0 < margins[0] < margins[1], margins  # the reference is not the policy: no adapter is shared

    best = run / "checkpoints" / "best"
    saved = read_safetensors(best / "model.safetensors")
    assert set(saved) == {f"h.{i}.{t}.lora_{m}" for i in range(2) for t in DEFAULT_TARGETS for m in "AB"}
    record = json.loads((best / "config.json").read_text())
    assert record["lora"]["rank"] == 4 and record["lora"]["base"] == str((sft / "checkpoints" / "best").resolve())
    assert record["prompt_style"] == "alpaca"
    tuned, start = load_model(str(run)), load_model(str(sft))  # adapters put on the SFT weights and merged
    assert torch.equal(tuned.model.wte.weight, start.model.wte.weight)
    assert not torch.equal(tuned.model.h[0].attn.c_attn.weight, start.model.h[0].attn.c_attn.weight)

    answers = tmp_path / "answers.json"
    out = gptlab("respond", "--model", str(run), "--data", str(pairs), "--out", str(answers))
    assert out.returncode == 0, out.stderr
    assert [a["model_response"] for a in json.loads(answers.read_text())] == [r["output"] for r in sixteen_records]
