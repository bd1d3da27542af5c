"""--dtype on the commands that load a model, and dtype= in the Python API."""

from __future__ import annotations

import json

import pytest
import torch

from e2e.commands import gptlab
from gptlab import ask, load_model


def test_info_reports_the_weights_in_the_dtype_asked_for():
    sizes = {}
    for dtype in ("float32", "bfloat16", "float16"):
        done = gptlab("info", "gpt2", "--dtype", dtype, "--json")
        assert done.returncode == 0, done.stderr
        sizes[dtype] = json.loads(done.stdout)["size_mb"]
    assert sizes["bfloat16"] == sizes["float16"] == pytest.approx(sizes["float32"] / 2, rel=1e-3)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_generate_runs_in_reduced_precision(dtype):
    done = gptlab("generate", "--model", "gpt-tiny", "--dtype", dtype, "--prompt", "Every effort moves you",
                  "--temperature", "0", "--max-new-tokens", "8", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["completion_ids"]) == 8


def test_a_bad_dtype_is_a_usage_error():
    done = gptlab("generate", "--model", "gpt-tiny", "--dtype", "float64", "--prompt", "x")
    assert done.returncode == 2 and "invalid choice: 'float64'" in done.stderr


def test_the_built_in_model_in_bfloat16_answers_as_in_float32():
    full, half = load_model("smollm2"), load_model("smollm2", dtype=torch.bfloat16)
    assert next(half.model.parameters()).dtype == torch.bfloat16
    ids = torch.tensor([full.tokenizer.encode("The capital of France is Paris, and the capital of Italy is")])
    with torch.no_grad():
        reference, reduced = full.model(ids)[0, -1], half.model(ids)[0, -1].float()
    assert reduced.argmax() == reference.argmax()
    assert torch.nn.functional.cosine_similarity(reduced, reference, dim=0) > 0.99
    assert "Paris" in ask(half, "What is the capital of France?", temperature=0, max_new_tokens=20)
