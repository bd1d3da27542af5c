"""GGUF import of the families whose Hugging Face form `test_families.py` proves: a tiny transformers model
written to GGUF the way llama.cpp's convert_hf_to_gguf.py writes its architecture (TextModel's metadata,
the `gguf` package's tensor names, q/k rows as they are) loads with transformers' logits."""

from __future__ import annotations

import pytest

from family_checks import max_logit_difference, prompt_ids, save_tiny
from gguf_files import hf_state, llama_cpp_metadata, llama_cpp_names, write_gguf
from gptlab.loading import load_model
from gptlab.models import qwen2

VOCAB = 1024  # the `small_tokenizer_json` fixture's
SHAPE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=1e6)


def qwen2_config():
    from transformers import Qwen2Config

    return Qwen2Config(**SHAPE, tie_word_embeddings=True)  # biases on q, k and v; a tied head: no output tensor


def qwen3_config():
    from transformers import Qwen3Config

    return Qwen3Config(**SHAPE, head_dim=32, tie_word_embeddings=False)  # heads 4 x 32 in a 64 stream


@pytest.mark.parametrize("arch, make_config", [("qwen2", qwen2_config), ("qwen3", qwen3_config)])
def test_gguf_loads_with_equal_logits(arch, make_config, tmp_path, small_tokenizer_json):
    folder = save_tiny(tmp_path / arch, make_config(), small_tokenizer_json)
    meta = llama_cpp_metadata(folder)
    tensors = llama_cpp_names(hf_state(folder), arch, meta["block_count"])
    loaded = load_model(str(write_gguf(tmp_path / f"{arch}.gguf", arch, meta, tensors, small_tokenizer_json)))
    config = loaded.model.config
    assert (config.family, config.vocab_size) == (arch, VOCAB)
    if arch == "qwen2":
        assert "blk.0.attn_q.bias" in tensors and (config.qkv_bias, config.tie_embeddings) == (True, True)
    if arch == "qwen3":
        assert meta["attention.key_length"] == 32 and (config.head_dim, config.qk_norm) == (32, "head")
    assert max_logit_difference(loaded, folder, prompt_ids(VOCAB)) < 1e-4


def test_bad_files_are_refused_in_one_line(tmp_path, small_tokenizer_json):
    path = write_gguf(tmp_path / "mamba.gguf", "mamba", {"block_count": 1}, {}, small_tokenizer_json)
    with pytest.raises(ValueError, match=r"^\S*mamba\.gguf: architecture 'mamba' is not supported; gptlab reads "
                                         r"GGUF files of gpt2, llama, .*qwen2, qwen3.*olmo2"):
        load_model(str(path))
    meta = {"qwen2.rope.scaling.type": "yarn", "qwen2.rope.scaling.factor": 4.0}  # Qwen2.5's long-context recipe
    with pytest.raises(ValueError, match=r"^q\.gguf: rope scaling 'yarn' is not supported"):
        qwen2.FAMILY.gguf.read_config(meta, {"token_embd.weight": (VOCAB, 64)}, "q.gguf")


def test_llama_31_rotary_factors_load_from_gguf(tmp_path, small_tokenizer_json):
    """Llama 3.1 and 3.2 GGUF files keep the llama3 rope scaling as llama.cpp computed it: one factor per
    rotary frequency in a `rope_freqs` tensor (each frequency divided by it), written here as its converter
    writes it, with q/k rows interleaved as for every llama file. Export refuses it in one line (a GGUF
    keeps no llama3 settings to write back)."""
    from transformers import LlamaConfig

    from gptlab.checkpoint.hf import export_hf_folder
    from gptlab.model import inverse_frequencies

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
    folder = save_tiny(tmp_path / "llama3", LlamaConfig(**SHAPE, rope_scaling=scaling, tie_word_embeddings=False),
                       small_tokenizer_json)
    hf = load_model(str(folder)).model.config
    plain, scaled = inverse_frequencies(hf.rotary_dims, hf.rope_theta), inverse_frequencies(
        hf.rotary_dims, hf.rope_theta, hf.rope_scaling)
    meta = llama_cpp_metadata(folder) | {"vocab_size": VOCAB}
    tensors = llama_cpp_names(hf_state(folder), "llama", meta["block_count"])
    rotated = [name for name in tensors if name.endswith(("attn_q.weight", "attn_k.weight"))]
    for name, heads in [(name, 4 if "attn_q" in name else 2) for name in rotated]:
        weight = tensors[name]  # llama.cpp's permute: rows (head, pair, i) -> (head, i, pair)
        tensors[name] = weight.reshape(heads, 2, weight.shape[0] // heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)
    tensors["rope_freqs.weight"] = plain / scaled
    loaded = load_model(str(write_gguf(tmp_path / "llama3.gguf", "llama", meta, tensors, small_tokenizer_json)))
    assert loaded.model.config.rope_scaling.kind == "factors"
    assert max_logit_difference(loaded, folder, prompt_ids(VOCAB)) < 1e-4
    with pytest.raises(ValueError, match="rotary factors read from a GGUF file .rope_freqs. have no Hugging Face"):
        export_hf_folder(loaded.model, tmp_path / "exported")
