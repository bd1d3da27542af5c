"""--quantize int8|int4 on the commands that load a model, quantize= in the Python API, and quantized
checkpoints written by `gptlab convert --quantize` and loaded back."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch

from e2e.commands import gptlab
from gptlab import LoadedModel, load_model, save_checkpoint

PROMPT = "The capital of France is Paris, and the capital of Italy is"
# SmolLM2's last-position logits against float32: cosine similarity at least this, and the same top token.
# (Measured: bfloat16 0.9995, int8 0.998, int4 0.98.)
COSINE_FLOOR = {"bfloat16": 0.995, "int8": 0.99, "int4": 0.95}


def _last_logits(loaded: LoadedModel) -> torch.Tensor:
    ids = torch.tensor([loaded.tokenizer.encode(PROMPT)])
    with torch.no_grad():
        return loaded.model(ids)[0, -1].float()


@pytest.fixture(scope="module")
def smollm2() -> Callable[[str | None], LoadedModel]:
    """SmolLM2 as load_model gives it with each quantize= (None: float32), loaded once for this module."""
    loaded: dict[str | None, LoadedModel] = {}

    def load(quantize: str | None) -> LoadedModel:
        if quantize not in loaded:
            loaded[quantize] = load_model("smollm2", quantize=quantize)
        return loaded[quantize]

    return load


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_smollm2_quantized_stays_close_to_float32(quantize, smollm2):
    logits, float32 = _last_logits(smollm2(quantize)), _last_logits(smollm2(None))
    assert logits.argmax() == float32.argmax()
    assert torch.nn.functional.cosine_similarity(logits, float32, dim=0) > COSINE_FLOOR[quantize]


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_generate_quantized_through_the_cli_with_and_without_the_kv_cache(quantize):
    args = ["generate", "--model", "smollm2", "--quantize", quantize, "--prompt", "The capital of France is",
            "--temperature", "0", "--max-new-tokens", "12", "--json"]
    cached, uncached = gptlab(*args), gptlab(*args, "--no-kv-cache")
    assert cached.returncode == 0 and uncached.returncode == 0, cached.stderr + uncached.stderr
    completion = json.loads(cached.stdout)
    assert completion["completion"].startswith(" Paris")
    assert completion["completion_ids"] == json.loads(uncached.stdout)["completion_ids"]


def test_a_tiny_preset_generates_in_int8_through_the_cli():
    done = gptlab("generate", "--model", "gpt-tiny", "--quantize", "int8", "--prompt", "Every effort moves you",
                  "--temperature", "0", "--max-new-tokens", "8", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["completion_ids"]) == 8


def test_convert_quantize_writes_a_checkpoint_that_records_its_scheme(tmp_path, smollm2):
    done = gptlab("convert", "smollm2", str(tmp_path / "q"), "--quantize", "int8")
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "q" / "config.json").read_text())["quantization"]["scheme"] == "int8"
    assert torch.equal(_last_logits(load_model(str(tmp_path / "q"))), _last_logits(smollm2("int8")))
    info = json.loads(gptlab("info", str(tmp_path / "q"), "--json").stdout)
    assert info["quantization"]["scheme"] == "int8"
    assert info["size_mb"] < 200  # float32: 538 MB, bfloat16: 269 MB


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_a_saved_quantized_checkpoint_reloads_with_identical_logits(quantize, tmp_path, smollm2):
    loaded = smollm2(quantize)
    save_checkpoint(loaded.model, loaded.tokenizer, tmp_path / "q", loaded.meta)
    reloaded = load_model(str(tmp_path / "q"))
    assert reloaded.meta.quantization.scheme == quantize
    assert torch.equal(_last_logits(reloaded), _last_logits(loaded))


def test_info_reports_the_smaller_size():
    sizes = {q: json.loads(gptlab("info", "gpt2", "--json", *q).stdout)["size_mb"]
             for q in [(), ("--quantize", "int8")]}
    assert sizes[("--quantize", "int8")] < 0.42 * sizes[()]  # 203 of 498 MB: the embedding stays bfloat16


def test_a_quantized_model_cannot_train_or_become_a_hugging_face_folder(tmp_path):
    assert gptlab("convert", "gpt-tiny", str(tmp_path / "q"), "--quantize", "int8").returncode == 0
    train = gptlab("pretrain", "--model", str(tmp_path / "q"), "--data", "the-verdict", "--max-steps", "1",
                   "--out", str(tmp_path / "run"))
    assert train.returncode == 1 and "quantized (int8/int4 weights cannot train)" in train.stderr
    export = gptlab("convert", str(tmp_path / "q"), str(tmp_path / "hf"), "--to", "hf")
    assert export.returncode == 1 and "is quantized and --to hf writes float weights" in export.stderr


def test_int4_on_a_model_too_narrow_for_its_groups_says_to_use_int8():
    done = gptlab("generate", "--model", "gpt-tiny", "--quantize", "int4", "--prompt", "x")
    assert done.returncode == 1 and "use int8" in done.stderr
