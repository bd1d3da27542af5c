"""Set-up shared by the end-to-end tests: a small instruction-tuned model that knows 16 records by heart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from e2e.commands import gptlab
from shared_folders import built_once

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white"]


@pytest.fixture(scope="session")
def sixteen_records() -> list[dict]:
    records = []
    for number, colour in enumerate(COLOURS):
        records.append({"instruction": f"Name a fruit that is {colour}.", "input": "",
                        "output": f"A {colour} fruit is number {number}."})
        records.append({"instruction": "Repeat the word.", "input": colour, "output": f"{colour} {colour} {colour}"})
    return records


@pytest.fixture(scope="session")
def overfit_run(tmp_path_factory, sixteen_records) -> tuple[Path, Path]:
    """A 2-layer, 64-wide model fine-tuned through the CLI on 16 records until it knows them by heart."""
    def train(folder: Path) -> None:
        data = folder / "sixteen.json"
        data.write_text(json.dumps(sixteen_records, indent=1))
        for args in (["pretrain", "--data", "the-verdict", "--model", "gpt-tiny", "--n-embd", "64", "--n-head", "4",
                      "--max-steps", "1", "--out", str(folder / "base")],
                     ["finetune", "instruct", "--data", str(data), "--val-data", str(data), "--test-data", str(data),
                      "--model", str(folder / "base"), "--out", str(folder / "sft"), "--max-steps", "150",
                      "--eval-every", "50", "--lr", "3e-3", "--min-lr", "3e-4", "--warmup-steps", "10",
                      "--weight-decay", "0", "--response-tokens", "20"]):
            done = gptlab(*args)
            assert done.returncode == 0, done.stderr

    folder = built_once(tmp_path_factory, "overfit", train)
    return folder / "sft", folder / "sixteen.json"


@pytest.fixture(scope="session")
def classifier_run(tmp_path_factory) -> Path:
    """A three-topic classifier trained through the CLI (a few seconds of training)."""
    def train(folder: Path) -> None:
        words = {"sport": ["goal", "match", "team", "score"], "food": ["pizza", "salad", "soup", "bread"],
                 "weather": ["rain", "sunny", "snow", "wind"]}
        rows = [f"{' '.join(vocab[(i + j) % 4] for j in range(4))} today,{topic}"
                for i in range(30) for topic, vocab in words.items()]
        (folder / "topics.csv").write_text("\n".join(["text,label", *rows]) + "\n")
        done = gptlab("finetune", "classify", "--data", str(folder / "topics.csv"), "--model", "gpt-tiny",
                      "--max-steps", "30", "--eval-every", "30", "--lr", "3e-3", "--out", str(folder / "run"))
        assert done.returncode == 0, done.stderr

    return built_once(tmp_path_factory, "topics", train) / "run"
