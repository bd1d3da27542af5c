"""`gptlab finetune classify` and `gptlab classify` as a user runs them."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.commands import gptlab

BIN = Path(sys.executable).parent  # torchrun


def test_sms_spam_run_folder_and_classify_command(tmp_path):
    run = tmp_path / "spam"
    out = gptlab("finetune", "classify", "--data", "sms-spam", "--model", "gpt-tiny", "--train-layers", "all",
                 "--max-steps", "120", "--eval-every", "40", "--lr", "1e-3", "--out", str(run))
    assert out.returncode == 0, out.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["labels"] == ["ham", "spam"]
    assert summary["test_accuracy"] > 0.8 and len(summary["test_confusion"]) == 2
    assert sum(map(sum, summary["test_confusion"])) == 300
    assert [len((run / f"{s}.jsonl").read_text().splitlines()) for s in ("train", "val", "test")] == [1045, 149, 300]
    mistakes = [json.loads(line) for line in (run / "test_mistakes.jsonl").read_text().splitlines()]
    (ham_ham, ham_spam), (spam_ham, spam_spam) = summary["test_confusion"]
    assert len(mistakes) == ham_spam + spam_ham and "misclassified" in out.stderr
    assert sorted((m["label"], m["predicted"]) for m in mistakes) == sorted(
        [("ham", "spam")] * ham_spam + [("spam", "ham")] * spam_ham)
    test_texts = {json.loads(line)["text"] for line in (run / "test.jsonl").read_text().splitlines()}
    assert all(m["text"] in test_texts for m in mistakes)
    assert "val accuracy" in out.stderr
    assert summary["baseline"]["test_accuracy"] > 0.95 and "logistic regression" in summary["baseline"]["method"]
    assert "vs" in out.stdout and "(this model)" in out.stdout
    for plot in ("loss.png", "accuracy.png", "confusion.png"):
        assert (run / plot).read_bytes()[:4] == b"\x89PNG"
    labels = gptlab("classify", "--model", str(run), "--json",
                    "WIN a FREE vacation now!!! Call 09061701461", "Hey, are we still meeting today?")
    assert labels.returncode == 0, labels.stderr
    results = [json.loads(line) for line in labels.stdout.splitlines()]
    assert [r["label"] for r in results] == ["spam", "ham"]
    assert all(0.5 <= r["probability"] <= 1 for r in results)
    (tmp_path / "texts.txt").write_text("Call now to claim your prize\n\nok see you at 5\n")
    from_file = gptlab("classify", "--model", str(run), "--file", str(tmp_path / "texts.txt"))
    assert from_file.returncode == 0 and len(from_file.stdout.splitlines()) == 2


@pytest.mark.parametrize("train_layers", ["all", "lora"])
def test_three_class_csv_trains_and_evaluates(tmp_path, train_layers):
    rng = random.Random(0)
    words = {"sport": ["goal", "match", "team", "score"], "food": ["pizza", "salad", "soup", "bread"],
             "weather": ["rain", "sunny", "snow", "wind"]}
    lines = ["message,topic"]
    for _ in range(60):
        for topic, vocab in words.items():
            lines.append(f"{' '.join(rng.choices(vocab, k=4))} today,{topic}")
    (tmp_path / "topics.csv").write_text("\n".join(lines) + "\n")
    out = gptlab("finetune", "classify", "--data", str(tmp_path / "topics.csv"), "--text-column", "message",
                 "--label-column", "topic", "--model", "gpt-tiny", "--train-layers", train_layers,
                 # adapters on random weights learn slower: at 60 steps 0.5-1.0 test accuracy across 16 seeds,
                 # at 120 steps 1.0 on every one of 5 tried (among them the 60-step run's worst)
                 "--max-steps", "120" if train_layers == "lora" else "60",
                 "--eval-every", "30", "--lr", "3e-3", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["labels"] == ["food", "sport", "weather"]
    assert summary["test_accuracy"] >= 0.9 and len(summary["test_confusion"]) == 3
    verdict = gptlab("classify", "--model", str(tmp_path / "run"), "pizza soup bread salad today")
    assert verdict.stdout.split("\t")[0] == "food"
    saved = json.loads((tmp_path / "run" / "checkpoints" / "best" / "config.json").read_text())
    assert ("lora" in saved) == (train_layers == "lora")


def test_bad_input_is_one_line(tmp_path):
    (tmp_path / "bad.csv").write_text("body,label\nhello,a\n")
    out = gptlab("finetune", "classify", "--data", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "r"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "bad.csv:2: missing column 'text'" in out.stderr
    not_a_classifier = gptlab("classify", "--model", "gpt-tiny", "hello")
    assert not_a_classifier.returncode == 1 and "is not a classifier" in not_a_classifier.stderr


def test_under_torchrun_rank_0_alone_scores_and_writes_the_summary(tmp_path):
    run = tmp_path / "ddp"
    out = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "gptlab", "finetune",
                          "classify", "--data", "sms-spam", "--model", "gpt-tiny", "--train-layers", "all",
                          "--max-steps", "6", "--eval-every", "3", "--device", "cpu", "--out", str(run)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.count("INFO: scoring run") == 1, out.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["scored"].endswith("(best checkpoint)")
    assert sum(map(sum, summary["test_confusion"])) == 300


def test_pretrain_on_texts_pretrains_then_fine_tunes_with_the_recipe_defaults(tmp_path):
    run = tmp_path / "quick"
    out = gptlab("finetune", "classify", "--data", "sms-spam", "--model", "gpt-tiny", "--pretrain-on-texts",
                 "--pretrain-max-steps", "3", "--max-steps", "6", "--eval-every", "3", "--out", str(run))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "pretraining step 3" in out.stderr
    assert (run / "pretrain" / "checkpoints" / "last" / "model.safetensors").is_file()
    assert (run / "pretrain-texts.txt").read_text().count("\n") == 1045  # training texts only
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["lr"] == 3e-4 and config["train"]["max_steps"] == 6
    assert (config["pretrain"]["lr"], config["pretrain"]["max_steps"]) == (1e-3, 3)  # the pretraining's recipe
    assert json.loads((run / "checkpoints" / "last" / "config.json").read_text())["model"]["dropout"] == 0.2


@pytest.mark.slow  # about 4.5 minutes; run with `bash scripts/test.sh -m slow`
def test_from_scratch_recipe_reaches_95_percent_on_sms_spam(tmp_path):
    """The documented one-flag recipe for machines without pretrained GPT-2 weights.

    Seed 1337 (the default) measured 95.7%; seeds 1 and 2 gave 94.0% and 97.3% (docs/training.md).
    """
    run = tmp_path / "scratch"
    out = gptlab("finetune", "classify", "--data", "sms-spam", "--model", "gpt-small", "--pretrain-on-texts",
                 "--out", str(run))
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.95, summary
    assert summary["scored"].endswith("(best checkpoint)")
    assert (run / "pretrain" / "checkpoints" / "last" / "model.safetensors").is_file()
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 3e-4  # the recipe's defaults
    labels = gptlab("classify", "--model", str(run), "WIN a FREE vacation now!!! Call 09061701461",
                    "Hey, are we still meeting today?")
    assert [line.split("\t")[0] for line in labels.stdout.splitlines()] == ["spam", "ham"]
