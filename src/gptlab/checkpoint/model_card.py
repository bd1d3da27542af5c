"""`README.md` for a Hugging Face folder gptlab writes: the Hub files a model by the card's YAML header
(license, base model, tags), and people read the rest: what it is, how it was trained, what it scored,
how to load it. `huggingface-cli upload` then publishes a folder that renders as a model page."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCardData

from gptlab.config import GPTConfig
from gptlab.files import BUILTIN_MODELS, REGISTRY
from gptlab.models import PRESETS, family_of

# hub names and licenses of the pretrained models gptlab starts from by a name of its own
BUILTIN_BASES = {"smollm2": ("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0")}
# OpenAI's GPT-2 by (n_embd, n_layer): its files carry no name, their shapes say which one it is
GPT2_BASES = {(768, 12): "openai-community/gpt2", (1024, 24): "openai-community/gpt2-medium",
              (1280, 36): "openai-community/gpt2-large", (1600, 48): "openai-community/gpt2-xl"}
GPT2_VOCABULARY = 50257


@dataclass(frozen=True)
class CardFacts:
    """What a model card says, gathered by whoever writes the folder."""

    name: str  # the card's title: the folder's name
    source: str  # the model as the user named it to convert (a preset, built-in, path or hub name)
    description: str  # what was loaded, as gptlab says it ("run runs/sft (best checkpoint)")
    config: GPTConfig
    parameters: int
    run: dict[str, Any] | None = None  # the config.json of the run that trained it
    results: dict[str, Any] | None = None  # that run's summary.json
    lora: bool = False  # trained as LoRA adapters, exported merged


def model_card(facts: CardFacts) -> str:
    """The card's text: the Hub's YAML header, then a page for people."""
    start = str(facts.run.get("model", "")) if facts.run else facts.source
    base, license_ = base_model(start, facts.config)
    tags = ["gptlab", _family(facts.config)] + ([str(facts.run["task"])] if facts.run else [])
    tags += ["lora"] if facts.lora else []
    header = ModelCardData(license=license_, base_model=base, library_name="transformers",
                           pipeline_tag="text-generation", tags=tags).to_yaml()
    return "\n".join([f"---\n{header}\n---", f"# {facts.name}", "", *_about(facts, start, base),
                      *_training(facts.run), *_results(facts.results), *_usage(facts.name)])


def base_model(spec: str, config: GPTConfig) -> tuple[str | None, str | None]:
    """The hub name and license of the pretrained model `spec` names, where gptlab can tell: a built-in, a hub
    name, OpenAI's GPT-2 (by its shape); a preset starts from random weights and has none."""
    if spec in BUILTIN_BASES and not Path(spec).exists():
        return BUILTIN_BASES[spec]
    if spec in PRESETS or spec in BUILTIN_MODELS or not spec:
        return None, None
    if "/" in spec and not Path(spec).expanduser().exists() and not spec.startswith((".", "/", "~")):
        return spec, None
    if _family(config) == "gpt2" and config.vocab_size == GPT2_VOCABULARY:
        name = GPT2_BASES.get((config.n_embd, config.n_layer))
        if name is not None:
            return name, "mit"
    return None, None


def _family(config: GPTConfig) -> str:
    family = family_of(config)
    return family.name if family is not None else "gpt"


def _about(facts: CardFacts, start: str, base: str | None) -> list[str]:
    c = facts.config
    trained = f"fine-tuned from `{base or start}`" if facts.run and start else "converted"
    how = " with LoRA (the adapters merged into the weights)" if facts.lora else ""
    return [f"A {_family(c)} model of {facts.parameters / 1e6:,.1f}M parameters, {trained}{how} by "
            f"gptlab from {facts.description}.", "",
            "| layers | width | heads | KV heads | context | vocabulary |", "|---|---|---|---|---|---|",
            f"| {c.n_layer} | {c.n_embd} | {c.n_head} | {c.n_kv_head or c.n_head} | {c.context_length} "
            f"| {c.vocab_size} |", ""]


def _training(run: dict[str, Any] | None) -> list[str]:
    """The run's data and its whole config.json: `gptlab <task> --config config.json` replays it."""
    if not run:
        return []
    data = run.get("data")
    sets = data if isinstance(data, list) else [data] if data else []
    named = [f"- `{name}`" + (f": {REGISTRY[name].url}" if name in REGISTRY else "") for name in map(str, sets)]
    return ["## Training", "", "Data:", "", *named, "",
            "The run's `config.json` (replay it with the gptlab command of its task and `--config`):", "",
            "```json", json.dumps(run, indent=2), "```", ""]


def _results(summary: dict[str, Any] | None) -> list[str]:
    """The run's summary.json, its numbers and words (lists and tables stay in the file)."""
    if not summary:
        return []
    rows = [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |"
            for key, value in summary.items() if isinstance(value, (int, float, str)) and not isinstance(value, bool)]
    return ["## Results", "", "| | |", "|---|---|", *rows, ""]


def _usage(name: str) -> list[str]:
    return ["## Use", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'model = AutoModelForCausalLM.from_pretrained("{name}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")', "```", "",
            f"or `gptlab chat --model {name}`.", ""]
