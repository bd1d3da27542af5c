"""`gptlab convert RUN OUT --to hf` writes a model card: the Hub's YAML header (read back as the Hub reads it)
and a page that says what the model is, how it was trained and what it scored."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from e2e.commands import gptlab
from gptlab.checkpoint.model_card import base_model
from gptlab.config import GPTConfig
from gptlab.models import preset_config


@pytest.fixture(scope="module")
def card(overfit_run, tmp_path_factory) -> ModelCard:
    folder = tmp_path_factory.mktemp("card") / "colours-sft"
    done = gptlab("convert", str(overfit_run[0]), str(folder), "--to", "hf")
    assert done.returncode == 0, done.stderr
    return ModelCard.load(folder / "README.md")


def test_the_header_is_what_the_hub_files_the_model_by(card):
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert data["tags"] == ["gptlab", "gpt2", "instruct"]
    assert "base_model" not in data and "license" not in data  # a preset's random start: no base, no licence


def test_the_page_holds_the_runs_config_and_results(card, overfit_run):
    run, _ = overfit_run
    assert card.text.startswith("# colours-sft\n")
    replay = json.loads(card.text.split("```json\n", 1)[1].split("```", 1)[0])
    assert replay == json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert f"| best_val_loss | {summary['best_val_loss']:.4g} |" in card.text
    assert 'AutoModelForCausalLM.from_pretrained("colours-sft")' in card.text


def test_the_base_model_is_named_where_gptlab_can_tell():
    assert base_model("smollm2", GPTConfig()) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")
    assert base_model("Qwen/Qwen3-0.6B", GPTConfig()) == ("Qwen/Qwen3-0.6B", None)
    assert base_model("/models/124M", GPTConfig(family="gpt2")) == ("openai-community/gpt2", "mit")
    assert base_model("/models/355M", GPTConfig(n_layer=24, n_embd=1024, n_head=16, family="gpt2")) == (
        "openai-community/gpt2-medium", "mit")
    assert base_model("gpt2", preset_config("gpt2")) == (None, None)  # the preset: random weights
    assert base_model("/models/mine", preset_config("llama-tiny")) == (None, None)
