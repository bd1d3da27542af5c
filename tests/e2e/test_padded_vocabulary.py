"""A model whose embedding has more rows than its tokenizer has tokens (Qwen2.5, Phi-3 and Pythia pad
theirs) generates only ids the tokenizer has, in every path: `gptlab generate`, the Python API and
`gptlab serve`. The padded rows are rigged to win nearly every pick, so each test fails without the cut."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from e2e.commands import gptlab
from e2e.servers import Server, start_server
from gptlab import generate, load_model
from hf_models import save_padded_hf_llama

PROMPT = "Once upon a time"
TOKENS = 256  # the tokenizer's ids; the model has 64 more


@pytest.fixture(scope="module")
def padded(tmp_path_factory) -> Path:
    return save_padded_hf_llama(tmp_path_factory.mktemp("padded-llama"))


@pytest.fixture(scope="module")
def server(padded, tmp_path_factory) -> Iterator[Server]:
    running = start_server(str(padded), tmp_path_factory.mktemp("server") / "server.log", "--name", "padded")
    yield running
    assert running.stop() == 0


def generated_ids(padded: Path, temperature: str, max_new_tokens: int) -> dict:
    out = gptlab("generate", "--model", str(padded), "--prompt", PROMPT, "--temperature", temperature,
                 "--seed", "0", "--max-new-tokens", str(max_new_tokens), "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_cli_samples_1000_tokens_and_greedy_picks_only_the_tokenizers_ids(padded):
    sampled = generated_ids(padded, "1.0", 1000)
    assert len(sampled["completion_ids"]) == 1000 and sampled["finish_reason"] == "length"
    assert max(sampled["completion_ids"]) < TOKENS and len(set(sampled["completion_ids"])) > 100
    greedy = generated_ids(padded, "0", 40)
    assert len(greedy["completion_ids"]) == 40 and max(greedy["completion_ids"]) < TOKENS
    model = load_model(str(padded))  # the Python API: the same greedy text, and 1,000 sampled tokens
    assert generate(model, PROMPT, temperature=0, max_new_tokens=40) == greedy["completion"]
    assert generate(model, PROMPT, temperature=1.0, max_new_tokens=1000, seed=1) != ""


def test_server_samples_1000_tokens_and_reports_only_the_tokenizers_ids(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    sampled = client.completions.create(model="padded", prompt=PROMPT, temperature=1.0, max_tokens=1000, seed=0,
                                        logprobs=5, echo=True)  # the echoed prompt's alternatives too
    assert sampled.usage.completion_tokens == 1000 and sampled.choices[0].finish_reason == "length"
    scored = sampled.choices[0].logprobs
    assert len(scored.tokens) == len(scored.top_logprobs) == sampled.usage.prompt_tokens + 1000
    greedy = client.chat.completions.create(model="padded", messages=[{"role": "user", "content": PROMPT}],
                                            temperature=0, max_tokens=40, logprobs=True, top_logprobs=5)
    assert greedy.usage.completion_tokens == 40
