import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from gptlab.checkpoint.hf import export_hf_folder
from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.checkpoint.native import load_checkpoint, save_checkpoint
from gptlab.config import GPTConfig
from gptlab.generation import GenerationSettings, generate
from gptlab.loading import load_model
from gptlab.model import GPT
from gptlab.models import preset_config
from gptlab.tokenizer import CharTokenizer, GPT2Tokenizer
from hf_models import PROMPTS, WIDTHS, hf_greedy, load_hf, save_random_hf_gpt2


def _check_parity(folder, greedy_tokens: int = 32) -> None:
    ours = load_model(str(folder)).model
    theirs = load_hf(folder)
    tok = GPT2Tokenizer()
    for prompt in PROMPTS:
        ids = torch.tensor([tok.encode(prompt)])
        with torch.no_grad():
            diff = (ours(ids) - theirs(ids).logits).abs().max().item()
        assert diff < 1e-4, f"{prompt!r}: max |logit difference| {diff}"
    ids = tok.encode(PROMPTS[0])
    ours_greedy = list(generate(ours, ids, GenerationSettings(max_new_tokens=greedy_tokens, temperature=0)))
    assert ours_greedy == hf_greedy(theirs, ids, greedy_tokens)


def test_gpt2_124m_matches_transformers(hf_gpt2_124m):
    _check_parity(hf_gpt2_124m)


@pytest.mark.parametrize("preset", ["gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_two_layer_models_of_every_width_match_transformers(tmp_path, preset):
    n_embd, n_head = WIDTHS[preset]
    _check_parity(save_random_hf_gpt2(tmp_path, n_layer=2, n_embd=n_embd, n_head=n_head, seed=1), 8)


def test_export_round_trip_loads_in_transformers(tmp_path):
    torch.manual_seed(3)
    model = GPT(preset_config("gpt-tiny")).eval()
    folder = export_hf_folder(model, tmp_path / "hf")
    ids = torch.randint(0, 50257, (2, 20))
    with torch.no_grad():
        assert (load_hf(folder)(ids).logits - model(ids)).abs().max() < 1e-5
    assert (load_model(str(folder)).model(ids) - model(ids)).abs().max() == 0


def test_native_checkpoint_round_trip_keeps_tokenizer_and_meta(tmp_path):
    torch.manual_seed(4)
    model = GPT(GPTConfig(vocab_size=5, context_length=16, n_layer=1, n_head=1, n_embd=8, tie_embeddings=False))
    save_checkpoint(model, CharTokenizer("abcde"), tmp_path / "ckpt", CheckpointMeta(prompt_style="alpaca"))
    loaded, tokenizer, meta = load_checkpoint(tmp_path / "ckpt")
    assert tokenizer.to_dict() == {"type": "char", "chars": "abcde"} and meta.prompt_style == "alpaca"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not list(tmp_path.glob(".ckpt.*")), "temporary folders left behind"


def test_saving_again_replaces_the_checkpoint(tmp_path):
    model = GPT(preset_config("gpt-tiny"))
    save_checkpoint(model, GPT2Tokenizer(), tmp_path / "c")
    with torch.no_grad():
        model.ln_f.bias.fill_(1.0)
    save_checkpoint(model, GPT2Tokenizer(), tmp_path / "c")
    assert torch.equal(load_checkpoint(tmp_path / "c")[0].ln_f.bias, torch.ones(16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


@pytest.fixture()
def hf_tiny(tmp_path):
    return save_random_hf_gpt2(tmp_path / "tiny", n_layer=2, n_embd=16, n_head=2, vocab_size=64, n_positions=32)


def test_missing_key_is_named(hf_tiny):
    weights = load_file(hf_tiny / "model.safetensors")
    del weights["transformer.h.1.mlp.c_fc.weight"]
    save_file(weights, hf_tiny / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing key\(s\): h\.1\.mlp\.c_fc\.weight"):
        load_model(str(hf_tiny))


def test_unexpected_key_is_named(hf_tiny):
    weights = load_file(hf_tiny / "model.safetensors")
    weights["transformer.h.2.ln_1.weight"] = torch.ones(16)
    save_file(weights, hf_tiny / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"unexpected key\(s\): transformer\.h\.2\.ln_1\.weight"):  # as the file has it
        load_model(str(hf_tiny))


def test_wrong_shape_names_key_and_both_shapes(hf_tiny):
    weights = load_file(hf_tiny / "model.safetensors")
    weights["transformer.wpe.weight"] = torch.zeros(30, 16)
    save_file(weights, hf_tiny / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.safetensors: transformer\.wpe\.weight has shape \(30, 16\), "
                                         r"expected \(32, 16\)"):
        load_model(str(hf_tiny))


def test_config_that_does_not_match_the_weights(hf_tiny):
    config = json.loads((hf_tiny / "config.json").read_text())
    config["n_layer"] = 3
    (hf_tiny / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing key\(s\): h\.2\..*config does not match the weights"):
        load_model(str(hf_tiny))


def test_truncated_safetensors_file(hf_tiny):
    path = hf_tiny / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable safetensors file.*truncated"):
        load_model(str(hf_tiny))


def test_non_safetensors_file(hf_tiny):
    (hf_tiny / "model.safetensors").write_bytes(struct.pack("<Q", 12) + b"not json!!!!")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model(str(hf_tiny))


def test_legacy_pytorch_bin_is_read_without_pickle_code(tmp_path, hf_tiny):
    weights = load_file(hf_tiny / "model.safetensors")
    (hf_tiny / "model.safetensors").unlink()
    torch.save(weights, hf_tiny / "pytorch_model.bin")
    ids = torch.randint(0, 64, (1, 10))
    with torch.no_grad():
        assert (load_model(str(hf_tiny)).model(ids) - load_hf(hf_tiny)(ids).logits).abs().max() < 1e-5


def test_other_architectures_and_unknown_specs_are_refused(tmp_path, hf_tiny):
    config = json.loads((hf_tiny / "config.json").read_text())
    config["model_type"] = "mamba"  # llama folders load since families got a home (tests/test_hf_llama.py)
    (hf_tiny / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="model_type 'mamba' is not supported"):
        load_model(str(hf_tiny))
    with pytest.raises(ValueError, match="model 'no-such-model' not found: expected a preset"):
        load_model("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a model folder"):
        load_model(str(tmp_path / "empty"))


def test_hub_name_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message = "no folder named 'openai-community/gpt2-nonexistent', and could not get .*Offline"
    with pytest.raises(FileNotFoundError, match=message):
        load_model("openai-community/gpt2-nonexistent")


def test_gpt2_export_carries_its_vocabulary_files(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = GPT2Tokenizer()
    folder = export_hf_folder(GPT(preset_config("gpt-tiny")).eval(), tmp_path / "hf", tokenizer)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    assert AutoTokenizer.from_pretrained(folder).encode(PROMPTS[2]) == tokenizer.encode(PROMPTS[2])
    assert load_model(str(folder)).tokenizer.files == (folder.resolve() / "vocab.json", folder.resolve() / "merges.txt")


def _shard(hf_tiny, outside) -> dict:
    """hf_tiny's weights in two shards and an index, the second shard a link to a file elsewhere (as the
    hub's cache links every file of a folder to a blob)."""
    weights = load_file(hf_tiny / "model.safetensors")
    (hf_tiny / "model.safetensors").unlink()
    names = sorted(weights)
    save_file({k: weights[k] for k in names[:5]}, hf_tiny / "model-1.safetensors", metadata={"format": "pt"})
    save_file({k: weights[k] for k in names[5:]}, outside, metadata={"format": "pt"})
    (hf_tiny / "model-2.safetensors").symlink_to(outside)
    return {k: "model-1.safetensors" if i < 5 else "model-2.safetensors" for i, k in enumerate(names)}


def test_a_shard_index_names_files_in_its_folder_only(tmp_path, hf_tiny):
    weight_map = _shard(hf_tiny, tmp_path / "blob")
    index = hf_tiny / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    assert load_model(str(hf_tiny)).model.config.n_layer == 2  # a link inside the folder is the folder's file
    for escape in ("../blob", str(tmp_path / "blob"), "sub/../../blob"):
        index.write_text(json.dumps({"weight_map": {**weight_map, "wte.weight": escape}}))
        with pytest.raises(ValueError, match=f"shard '{escape}' lies outside the model folder"):
            load_model(str(hf_tiny))


@pytest.mark.parametrize("change, message", [  # one tensor changed
    (lambda t: t.long(), r"tensor \S+ holds int64 values, not floating point weights"),
    (lambda t: t.to(torch.bool), r"tensor \S+ holds bool values"),
    (lambda t: t.clone().fill_(float("inf")), "tensor h.1.mlp.c_fc.weight holds 1,024 NaN or infinite values of 1,024"),
])
def test_weights_that_are_not_finite_floats_are_refused_at_load(tmp_path, change, message):
    folder = save_checkpoint(GPT(preset_config("gpt-tiny")), GPT2Tokenizer(), tmp_path / "model")
    weights = load_file(folder / "model.safetensors")
    key = "h.1.mlp.c_fc.weight"
    save_file({**weights, key: change(weights[key])}, folder / "model.safetensors")
    with pytest.raises(ValueError, match=message):
        load_checkpoint(folder)


def test_a_checkpoint_config_value_of_the_wrong_type_names_the_file_and_field(tmp_path):
    folder = save_checkpoint(GPT(preset_config("gpt-tiny")), GPT2Tokenizer(), tmp_path / "model")
    saved = json.loads((folder / "config.json").read_text())
    for field, value, expected in (("n_layer", 2.5, "a whole number"), ("dropout", "0.1", "a number"),
                                   ("qkv_bias", 1, "true or false"), ("rope_theta", float("nan"), "a finite number")):
        (folder / "config.json").write_text(json.dumps({**saved, "model": {**saved["model"], field: value}}))
        with pytest.raises(ValueError, match=f"config.json, model, {field}: expected {expected}"):
            load_checkpoint(folder)
    (folder / "config.json").write_text(json.dumps({**saved, "labels": "spam"}))
    with pytest.raises(ValueError, match="config.json, labels: expected a list, got 'spam'"):
        load_checkpoint(folder)
