"""OLMo 2 against `transformers` (see `family_checks`): post-norms on each branch's output and QK-norm over
all heads' width, from a Hugging Face folder and from a GGUF file written the way llama.cpp converts it;
OLMo 3 (a sliding window in some blocks), which llama.cpp writes as "olmo2", from GGUF."""

from __future__ import annotations

import pytest

from family_checks import check_family, max_logit_difference, prompt_ids, save_tiny
from gguf_files import hf_state, llama_cpp_metadata, llama_cpp_names, write_gguf
from gptlab.loading import load_model
from gptlab.models import olmo2
from gptlab.models.family import window_from_gguf

VOCAB = 1024  # the `small_tokenizer_json` fixture's
SHAPE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_key_value_heads=2, num_attention_heads=4,
             max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=500000.0,
             eos_token_id=2, pad_token_id=1)  # ids in the vocabulary (OLMo's defaults lie past it)


@pytest.fixture(scope="module")
def olmo2_folder(tmp_path_factory, small_tokenizer_json):
    from transformers import Olmo2Config

    config = Olmo2Config(**SHAPE, num_hidden_layers=2, tie_word_embeddings=False)
    return save_tiny(tmp_path_factory.mktemp("olmo2"), config, small_tokenizer_json)


def olmo2_gguf(folder, path, tokenizer_json, **metadata):
    """The folder as llama.cpp's Olmo2Model converter writes it: TextModel's keys, tensors renamed only."""
    meta = llama_cpp_metadata(folder)
    return write_gguf(path, "olmo2", {**meta, **metadata}, llama_cpp_names(hf_state(folder), "olmo2",
                                                                              meta["block_count"]), tokenizer_json)


def test_olmo2_matches_transformers(olmo2_folder, tmp_path):
    config = check_family(olmo2_folder, tmp_path, "olmo2").model.config
    assert (config.norm_position, config.qk_norm, config.tie_embeddings) == ("post", "full", False)


def test_olmo2_gguf_loads_with_equal_logits(olmo2_folder, tmp_path, small_tokenizer_json):
    loaded = load_model(str(olmo2_gguf(olmo2_folder, tmp_path / "olmo2.gguf", small_tokenizer_json)))
    assert (loaded.model.config.family, loaded.model.config.vocab_size) == ("olmo2", VOCAB)
    assert max_logit_difference(loaded, olmo2_folder, prompt_ids(VOCAB)) < 1e-4


def test_olmo3_gguf_reads_its_window_in_the_blocks_it_marks(tmp_path, small_tokenizer_json):
    from transformers import Olmo3Config

    kinds = ["sliding_attention", "full_attention", "sliding_attention"]
    folder = save_tiny(tmp_path / "olmo3", Olmo3Config(**SHAPE, num_hidden_layers=3, sliding_window=8,
                                                       layer_types=kinds), small_tokenizer_json)
    path = olmo2_gguf(folder, tmp_path / "olmo3.gguf", small_tokenizer_json, **{
        "attention.sliding_window": 8, "attention.sliding_window_pattern": [True, False, True]})
    loaded = load_model(str(path))
    assert (loaded.model.config.sliding_window, loaded.model.config.sliding_layers) == (8, (0, 2))
    assert max_logit_difference(loaded, folder, prompt_ids(VOCAB)) < 1e-4  # 40 tokens: past the window
    with pytest.raises(ValueError, match="sliding window"):
        olmo2.FAMILY.hf.write_config(loaded.model.config)


def test_refusals_are_one_line_naming_the_file():
    with pytest.raises(ValueError, match=r"^x/config\.json: attention_bias / mlp_bias are not supported"):
        olmo2.FAMILY.hf.read_config({"model_type": "olmo2", "attention_bias": True}, "x/config.json")
    with pytest.raises(ValueError, match=r"^m\.gguf: olmo2\.attention\.sliding_window_pattern 4 is not supported"):
        window_from_gguf({"olmo2.attention.sliding_window": 8, "olmo2.attention.sliding_window_pattern": 4},
                         "olmo2", "m.gguf")


def test_presets_have_the_published_shape():
    from gptlab.models import preset_config

    config = preset_config("olmo-2-1b")
    assert (config.n_layer, config.n_embd, config.head_dim, config.hidden_size, config.vocab_size) == (
        16, 2048, 128, 8192, 100352)
    assert (config.norm_position, config.qk_norm, config.family) == ("post", "full", "olmo2")
