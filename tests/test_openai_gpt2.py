"""OpenAI GPT-2 folders (TensorFlow checkpoints written by TensorFlow) load exactly and match transformers."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gptlab.checkpoint import openai_gpt2
from gptlab.checkpoint.native import save_checkpoint
from gptlab.checkpoint.openai_gpt2 import load_openai_folder, openai_to_hf
from gptlab.config import GPTConfig
from gptlab.generation import GenerationSettings, generate
from gptlab.loading import load_model
from gptlab.tokenizer import tokenizer_from_dict
from hf_models import PROMPTS, hf_greedy
from openai_files import DATA_FILE, hf_model_from_arrays, hf_name, openai_folder, saved


@pytest.fixture()
def tiny(tmp_path) -> Path:
    return openai_folder(tmp_path, "tiny11")


@pytest.fixture()
def real_vocab(tmp_path) -> Path:
    return openai_folder(tmp_path, "vocab50257")


def test_a_folder_is_a_model_and_every_weight_is_bit_exact(tiny):
    loaded = load_model(str(tiny))
    assert loaded.source == "openai-tf" and not loaded.random_weights
    params, arrays = dict(loaded.model.named_parameters()), saved(tiny)
    assert len(params) == len(arrays)  # the head is tied: no extra tensor
    for tf_name, array in arrays.items():
        name = hf_name(tf_name).removeprefix("transformer.")
        expected = torch.from_numpy(array[0].T.copy() if array.ndim == 3 else array)  # Conv1D (in, out) -> (out, in)
        assert torch.equal(params[name].detach(), expected), name
    assert loaded.model.lm_head.weight is loaded.model.wte.weight


def test_weights_stay_memory_mapped_from_the_data_file(tiny):
    model, _ = load_openai_folder(tiny)
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps")
    pointer = model.h[4].mlp.c_fc.weight.data_ptr()
    for line in maps.read_text().splitlines():
        span, *rest = line.split()
        low, high = (int(x, 16) for x in span.split("-"))
        if low <= pointer < high:
            assert rest[-1].endswith(DATA_FILE), line
            return
    pytest.fail("the weight is in no mapping")


@pytest.mark.parametrize("name", ["tiny11", "vocab50257"])
def test_logits_match_transformers(tmp_path, name):
    folder = openai_folder(tmp_path, name)
    ours, theirs = load_model(str(folder)).model, hf_model_from_arrays(folder)
    vocab = ours.config.vocab_size
    ids = torch.randint(0, vocab, (2, ours.config.context_length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max() < 1e-5


def test_greedy_generation_matches_transformers(tiny):
    ours, theirs = load_model(str(tiny)).model, hf_model_from_arrays(tiny)
    prompt = [5, 17, 42, 3]
    settings = GenerationSettings(max_new_tokens=20, temperature=0)
    assert list(generate(ours, prompt, settings)) == hf_greedy(theirs, prompt, 20)


def test_text_through_the_folders_own_tokenizer(real_vocab):
    loaded = load_model(str(real_vocab))
    ids = loaded.tokenizer.encode(PROMPTS[0])
    assert ids == [15496, 11, 616, 1438, 318]  # GPT-2's ids for "Hello, my name is"
    settings = GenerationSettings(max_new_tokens=8, temperature=0)
    assert list(generate(loaded.model, ids, settings)) == hf_greedy(hf_model_from_arrays(real_vocab), ids, 8)
    assert loaded.tokenizer.to_dict() == {"type": "gpt2"}  # the published files: nothing to record


def test_edited_tokenizer_files_are_recorded_and_rebuilt(tiny):
    encoder = json.loads((tiny / "encoder.json").read_text(encoding="utf-8"))
    (tiny / "encoder.json").write_text(json.dumps(encoder, indent=1), encoding="utf-8")  # same tokens, other bytes
    tokenizer = load_model(str(tiny)).tokenizer
    description = tokenizer.to_dict()
    assert description == {"type": "gpt2", "encoder": str((tiny / "encoder.json").resolve()),
                           "vocab": str((tiny / "vocab.bpe").resolve())}
    assert tokenizer_from_dict(description).encode("Hello there") == tokenizer.encode("Hello there")
    (tiny / "vocab.bpe").unlink()
    with pytest.raises(FileNotFoundError, match="tokenizer vocab file .*vocab.bpe.* is missing"):
        tokenizer_from_dict(description)


def test_converted_once_to_a_gptlab_checkpoint(tiny, tmp_path):
    loaded = load_model(str(tiny))
    save_checkpoint(loaded.model, loaded.tokenizer, tmp_path / "converted")
    again = load_model(str(tmp_path / "converted"))
    assert json.loads((tmp_path / "converted" / "config.json").read_text())["tokenizer"] == {"type": "gpt2"}
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(again.model(ids), loaded.model(ids))


def test_checkpoint_file_names_the_prefix(tiny):
    for path in tiny.glob("model.ckpt.*"):
        path.rename(tiny / path.name.replace("model.ckpt", "model-1000"))
    (tiny / "checkpoint").write_text('model_checkpoint_path: "/elsewhere/model-1000"\n')
    assert load_model(str(tiny)).model.config.n_layer == 11


def test_hparams_that_disagree_with_the_tensors(tiny):
    hparams = json.loads((tiny / "hparams.json").read_text())
    (tiny / "hparams.json").write_text(json.dumps({**hparams, "n_layer": 12, "n_ctx": 1024}))
    mismatch = r"model\.ckpt\.index: n_layer is 12 but the tensors have 11; n_ctx is 1024 but the tensors have 32"
    with pytest.raises(ValueError, match=r"hparams\.json does not match the checkpoint .*" + mismatch):
        load_model(str(tiny))
    (tiny / "hparams.json").write_text(json.dumps({**hparams, "n_head": 3}))
    with pytest.raises(ValueError, match=r"hparams\.json: invalid GPTConfig: n_embd \(8\) must be divisible"):
        load_model(str(tiny))


@pytest.mark.parametrize("missing", ["hparams.json", "encoder.json", DATA_FILE])
def test_a_missing_file_is_named(tiny, missing):
    (tiny / missing).unlink()
    with pytest.raises((FileNotFoundError, ValueError), match=missing.replace(".", r"\.")):
        load_openai_folder(tiny)


def test_unknown_variable_is_named():
    arrays = {"model/wte": np.zeros((4, 2), np.float32), "model/h0/attn/extra": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match=r"x\.index: unknown variable\(s\) model/h0/attn/extra; an OpenAI GPT-2"):
        openai_to_hf(arrays, GPTConfig(), "x.index")


def test_crc_is_checked_at_load_when_it_is_fast(tiny, monkeypatch):
    data = tiny / DATA_FILE
    raw = bytearray(data.read_bytes())
    raw[100] ^= 0x04
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"tensor 'model/h0/attn/c_attn/w' fails its crc32c check"):
        load_openai_folder(tiny, verify=True)
    monkeypatch.setattr(openai_gpt2, "using_fast_crc32c", lambda: False)
    assert load_openai_folder(tiny)[0].config.n_layer == 11  # unchecked: ~50 s per 124M load in pure Python
    monkeypatch.setattr(openai_gpt2, "using_fast_crc32c", lambda: True)
    with pytest.raises(ValueError, match="fails its crc32c check"):
        load_openai_folder(tiny)
