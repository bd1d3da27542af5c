"""The training tasks and evaluation commands on the families that brought new blocks, as a user runs them:
`finetune classify` (LoRA, then `classify`), `finetune instruct` (LoRA), `finetune dpo` (full) and
`perplexity` on each family's `-tiny` preset (a mixture of experts, Gemma's sandwich norms and scaled
embeddings, GPT-NeoX's parallel residual). Run through the CLI's own entry point in this process: a
new process per command would spend most of the time importing."""

from __future__ import annotations

import contextlib
import io
import json
import math
import random

import pytest
import torch

from gptlab.cli import main

PRESETS = ["qwen3-moe-tiny", "gemma3-tiny", "pythia-tiny"]


def gptlab(*args: str) -> str:
    """What the command prints; a failing command fails the test with its code."""
    printed = io.StringIO()
    with torch.enable_grad(), contextlib.redirect_stdout(printed):  # the CLI turns gradients off for its process
        code = main(list(args))
    assert code == 0, (args, printed.getvalue()[-2000:])
    return printed.getvalue()


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    rng, folder = random.Random(0), tmp_path_factory.mktemp("topics")
    words = {"sport": ["goal", "match", "team"], "food": ["pizza", "salad", "soup"]}
    lines = ["message,topic", *(f"{' '.join(rng.choices(vocab, k=4))} today,{topic}"
                                for _ in range(30) for topic, vocab in words.items())]
    (folder / "topics.csv").write_text("\n".join(lines) + "\n")
    return folder / "topics.csv"


@pytest.mark.parametrize("preset", PRESETS)
def test_classify_instruct_dpo_and_perplexity_run_on_the_family(preset, topics, sixteen_records, tmp_path):
    gptlab("finetune", "classify", "--data", str(topics), "--text-column", "message", "--label-column", "topic",
           "--model", preset, "--train-layers", "lora", "--max-steps", "6", "--eval-every", "6",
           "--out", str(tmp_path / "classify"))
    summary = json.loads((tmp_path / "classify" / "summary.json").read_text())
    assert summary["labels"] == ["food", "sport"] and 0.0 <= summary["test_accuracy"] <= 1.0
    label = gptlab("classify", "--model", str(tmp_path / "classify"), "pizza soup today").split("\t")[0]
    assert label in summary["labels"]

    data = tmp_path / "sixteen.json"
    data.write_text(json.dumps(sixteen_records))
    gptlab("finetune", "instruct", "--data", str(data), "--val-data", str(data), "--test-data", str(data),
           "--model", preset, "--train-layers", "lora", "--max-steps", "4", "--eval-every", "4", "--batch-size", "4",
           "--response-tokens", "4", "--out", str(tmp_path / "instruct"))
    evals = [json.loads(line) for line in (tmp_path / "instruct" / "metrics.jsonl").read_text().splitlines()]
    assert any(math.isfinite(e.get("val_loss", math.nan)) for e in evals)

    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{**r, "chosen": r["output"], "rejected": "I do not know."} for r in sixteen_records]))
    gptlab("finetune", "dpo", "--data", str(pairs), "--model", str(tmp_path / "instruct"), "--max-steps", "2",
           "--eval-every", "2", "--batch-size", "4", "--train-fraction", "0.5", "--test-fraction", "0.25",
           "--response-tokens", "4", "--out", str(tmp_path / "dpo"))
    assert (tmp_path / "dpo" / "checkpoints" / "last" / "config.json").is_file()

    scored = json.loads(gptlab("perplexity", "--model", preset, "--data", "the-verdict", "--max-tokens", "200",
                               "--json"))
    assert math.isfinite(scored["loss"]) and scored["tokens"] > 100
