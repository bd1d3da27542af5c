"""Gemma 3 (text) against `transformers` (see `family_checks`) and llama.cpp's GGUF layout: a tiny random
model with both kinds of blocks (windowed with their own rotary base, and global with linearly scaled
rotary positions), a head width of its own and a query_pre_attn_scalar that is not the head width."""

from __future__ import annotations

import json

import pytest
import torch

from family_checks import check_family, max_logit_difference, prompt_ids, save_tiny
from gguf_files import hf_state, llama_cpp_metadata, llama_cpp_names, write_gguf
from gptlab.loading import load_model
from gptlab.models import gemma3, preset_config

VOCAB = 1024  # the `small_tokenizer_json` fixture's
SHAPE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
             head_dim=32, max_position_embeddings=128, sliding_window=8, rms_norm_eps=1e-6)
ROPES = {"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e5},
         "sliding_attention": {"rope_type": "default", "rope_theta": 1e3}}


def gemma3_config(**fields):
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(**{**SHAPE, "num_hidden_layers": 3, "sliding_window_pattern": 2,  # blocks 0, 2 windowed
                               "query_pre_attn_scalar": 24, "rope_parameters": ROPES, **fields})


@pytest.fixture(scope="module")
def gemma3_folder(tmp_path_factory, small_tokenizer_json):
    return save_tiny(tmp_path_factory.mktemp("gemma3"), gemma3_config(), small_tokenizer_json)


def test_gemma3_matches_transformers(gemma3_folder, tmp_path):
    config = check_family(gemma3_folder, tmp_path, "gemma3").model.config
    assert (config.sliding_window, config.sliding_layers, config.head_dim) == (8, (0, 2), 32)
    assert (config.rope_theta, config.rope_scaling.factor, config.local_rope_theta) == (1e5, 2.0, 1e3)
    assert config.attn_scale == pytest.approx(24**-0.5)


def test_transformers_4_spelling_reads_the_same(gemma3_folder):
    """Configs saved before transformers 5: the global rotary settings at the top, `rope_local_base_freq`,
    and the windowed blocks given by `sliding_window_pattern` alone."""
    saved = json.loads((gemma3_folder / "config.json").read_text())
    old = {key: value for key, value in saved.items() if key not in ("rope_parameters", "layer_types")}
    old.update(rope_theta=1e5, rope_scaling={"type": "linear", "factor": 2.0}, rope_local_base_freq=1e3)
    assert gemma3.config_from_hf(old, "config.json") == gemma3.config_from_hf(saved, "config.json")


@pytest.mark.parametrize(("field", "value", "says"), [
    ("attn_logit_softcapping", 50.0, "attn_logit_softcapping 50.0 is not supported"),
    ("final_logit_softcapping", 30.0, "final_logit_softcapping 30.0 is not supported"),
    ("hidden_activation", "silu", "hidden_activation 'silu' is not supported"),
    ("rope_parameters", {**ROPES, "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}},
     "sliding-window blocks are not supported"),
    ("rope_parameters", {**ROPES, "full_attention": {"rope_type": "yarn", "factor": 2.0, "rope_theta": 1e4}},
     "rope scaling 'yarn' is not supported"),
])
def test_what_gptlab_lacks_is_refused_in_one_line(gemma3_folder, tmp_path, field, value, says):
    folder = tmp_path / "bad"
    folder.mkdir()
    config = {**json.loads((gemma3_folder / "config.json").read_text()), field: value}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        load_model(str(folder))
    assert str(err.value).startswith(f"{folder / 'config.json'}: ") and says in str(err.value)
    assert "\n" not in str(err.value)


def test_gguf_from_the_same_weights_gives_equal_logits(tmp_path, small_tokenizer_json):
    # llama.cpp's rules, which a gemma3 GGUF cannot change: every sixth block global (here block 5),
    # windowed blocks' rotary base 10,000, scores scaled by 1 / sqrt(head width)
    hf = gemma3_config(num_hidden_layers=6, sliding_window_pattern=6, query_pre_attn_scalar=32, rope_parameters={
        "full_attention": ROPES["full_attention"], "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    folder = save_tiny(tmp_path / "hf", hf, small_tokenizer_json)
    # as convert_hf_to_gguf.py's Gemma3Model writes it: 1 added to every norm weight (Gemma's norms scale by
    # 1 + w), q/k rows as they are, the window and the global blocks' linear scaling in the metadata
    state = {name: t + 1 if name.endswith("norm.weight") else t for name, t in hf_state(folder).items()}
    metadata = {**llama_cpp_metadata(folder), "attention.sliding_window": 8, "rope.scaling.type": "linear",
                "rope.scaling.factor": 2.0}
    tensors = llama_cpp_names(state, "gemma3", 6)
    loaded = load_model(str(write_gguf(tmp_path / "tiny.gguf", "gemma3", metadata, tensors, small_tokenizer_json)))
    config = loaded.model.config
    assert "blk.0.post_ffw_norm.weight" in tensors and "blk.0.ffn_norm.weight" in tensors
    assert (config.family, config.vocab_size, config.sliding_layers, config.attn_scale, config.tie_embeddings) == (
        "gemma3", VOCAB, (0, 1, 2, 3, 4), None, True)
    assert max_logit_difference(loaded, folder, prompt_ids(VOCAB)) < 1e-4


def test_presets_have_the_published_shape():
    from gptlab.model import GPT

    config = preset_config("gemma-3-270m")
    assert (config.n_layer, config.n_embd, config.head_dim, config.kv_heads, config.vocab_size) == (
        18, 640, 256, 1, 262144)
    assert config.sliding_layers == (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16)
    with torch.device("meta"):
        assert GPT(config).num_parameters() == 268_098_176  # Google's "270M"


def test_the_text_part_of_a_gemma3_folder_loads(tmp_path, small_tokenizer_json):
    """Gemma 3 4B/12B/27B ship as `Gemma3ForConditionalGeneration` (vision tower + projector + this text model):
    gptlab reads the text model alone, whose logits on a text-only prompt are the conditional model's."""
    from transformers import Gemma3Config, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                                patch_size=14, intermediate_size=32)
    folder = save_tiny(tmp_path / "hf", Gemma3Config(text_config=gemma3_config(), vision_config=vision,
                                                     mm_tokens_per_image=4), small_tokenizer_json)
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["Gemma3ForConditionalGeneration"]
    loaded = load_model(str(folder))  # save_tiny's AutoModelForCausalLM is the conditional model for "gemma3"
    assert (loaded.model.config.family, loaded.model.config.sliding_layers) == ("gemma3", (0, 2))
    assert max_logit_difference(loaded, folder, prompt_ids(VOCAB)) < 1e-4
    # transformers 5 names the same tensors model.language_model.*, model.vision_tower.*, ... in memory
    as_saved = hf_state(folder)
    renamed = {name.replace("language_model.model.", "model.language_model.")
               .replace("vision_tower.", "model.vision_tower."): t for name, t in as_saved.items()}
    config = loaded.model.config
    ours, again = gemma3.hf_to_ours(as_saved, config), gemma3.hf_to_ours(renamed, config)
    assert ours.keys() == again.keys() == dict(loaded.model.named_parameters()).keys()  # no vision tensor
    assert all(torch.equal(ours[name], again[name]) for name in ours)
