"""Shared test set-up: the offline data mirror and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared_folders import built_once

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("GPTLAB_DATA_DIR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "GPTLAB_CACHE_DIR" not in os.environ:  # keep the user's ~/.cache/gptlab out of the tests
    import tempfile

    os.environ["GPTLAB_CACHE_DIR"] = tempfile.mkdtemp(prefix="gptlab-test-cache-")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["GPTLAB_DATA_DIR"])
    if not (path / "README.md").exists():
        pytest.fail(f"offline data mirror not found at {path}; set GPTLAB_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def hf_gpt2_124m(tmp_path_factory) -> Path:
    """A random-weight `transformers` GPT-2 124M saved with `save_pretrained` (seed 0)."""
    from hf_models import save_random_hf_gpt2

    return built_once(tmp_path_factory, "hf-gpt2",
                      lambda folder: save_random_hf_gpt2(folder, n_layer=12, n_embd=768, n_head=12))


@pytest.fixture(scope="session")
def hf_smollm2(tmp_path_factory) -> Path:
    """The built-in SmolLM2, read by `transformers` and saved as a Hugging Face Llama folder."""
    from hf_models import save_smollm2_hf_folder

    return built_once(tmp_path_factory, "hf-smollm2", save_smollm2_hf_folder)


@pytest.fixture(scope="session")
def small_tokenizer_json(tmp_path_factory, hf_smollm2) -> Path:
    """SmolLM2's first 1,024 tokens as a tokenizer.json: tiny models and GGUF files that load in a fraction
    of the time of its 49,152."""
    from gguf_files import small_vocabulary

    path = tmp_path_factory.mktemp("small-vocab") / "tokenizer.json"
    return small_vocabulary(hf_smollm2 / "tokenizer.json", 1024, path)


@pytest.fixture()
def gpt2_host():
    """A local HTTP host of OpenAI's seven GPT-2 files (the tiny11 fixture) at `.url`, for sizes 774M and 124M."""
    from openai_files import Host, model_files

    with Host(model_files()) as host:
        yield host
