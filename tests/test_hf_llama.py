"""Hugging Face Llama-family folders: SmolLM2 as `transformers` saves it loads with logits equal to
transformers' and tokens equal to HF `tokenizers`; our Llama models export to the same layout and load
back; what gptlab cannot read is refused in one line that names the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gptlab.checkpoint.hf import export_hf_folder
from gptlab.checkpoint.native import load_checkpoint, save_checkpoint
from gptlab.config import GPTConfig
from gptlab.loading import load_model
from gptlab.model import GPT
from gptlab.models import llama
from gptlab.tokenizer import hf_tokenizer, tokenizer_from_dict
from hf_models import save_random_hf_llama, tokenizer_texts

CHAT = "<|im_start|>user\nWhat is 12 + 30, in words?<|im_end|>\n<|im_start|>assistant\n"


def max_logit_difference(ours: GPT, folder: Path, ids: list[int]) -> float:
    """Largest |ours - transformers| over the logits of `ids`, with transformers reading `folder`."""
    from transformers import AutoModelForCausalLM

    theirs = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return (ours(torch.tensor([ids])) - theirs(torch.tensor([ids])).logits).abs().max().item()


def reference(tokenizer_json: Path):
    """HF `tokenizers` reading the same tokenizer.json; `.encode(text)` gives its ids without added specials."""
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(tokenizer_json))
    return lambda text: hf.encode(text, add_special_tokens=False).ids


def tiny_llama(tied: bool) -> GPT:
    """A random two-layer gptlab Llama (GQA, SmolLM2's vocabulary) with norms that are not all ones."""
    torch.manual_seed(5)
    model = GPT(GPTConfig(vocab_size=49152, context_length=64, n_layer=2, n_head=4, n_kv_head=2, n_embd=64,
                          mlp_hidden=96, rope_theta=50000.0, tie_embeddings=tied, **llama.BLOCKS)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.startswith(("ln_f", "h.0.ln_", "h.1.ln_")):
                param.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def smollm2_folder(hf_smollm2):
    return load_model(str(hf_smollm2))


def test_smollm2_folder_logits_equal_transformers(hf_smollm2, smollm2_folder):
    ids = smollm2_folder.tokenizer.encode(CHAT)
    assert max_logit_difference(smollm2_folder.model, hf_smollm2, ids) < 1e-4
    config = smollm2_folder.model.config
    assert (config.n_layer, config.n_head, config.kv_heads, config.n_embd, config.vocab_size) == (30, 9, 3, 576, 49152)
    assert (config.head_is_tied, config.rope_theta, smollm2_folder.source) == (True, 100000.0, "hf-folder")


def test_smollm2_folder_brings_its_own_tokenizer(hf_smollm2, smollm2_folder):
    ours, theirs = smollm2_folder.tokenizer, reference(hf_smollm2 / "tokenizer.json")
    for text in [*tokenizer_texts(), CHAT]:
        assert ours.encode(text) == theirs(text), text[:60]
        assert ours.decode(ours.encode(text)) == text
    specials = ours.encode("<|im_start|>user\nHi<|im_end|>")
    assert specials[0] == 1 and specials[-1] == 2 == ours.eos_id
    assert ours.to_dict() == {"type": "hf", "path": str((hf_smollm2 / "tokenizer.json").resolve())}
    assert tokenizer_from_dict(json.loads(json.dumps(ours.to_dict()))).encode(CHAT) == ours.encode(CHAT)


def test_smollm2_folder_chats_in_its_own_chat_template(hf_smollm2, smollm2_folder):
    meta, jinja = smollm2_folder.meta, hf_smollm2 / "chat_template.jinja"
    assert meta.prompt_style == "template" and meta.default_system is None  # the template writes its own default
    template = meta.chat_template
    assert (template.template, template.source) == (jinja.read_text(), str(jinja))
    assert (template.bos_token, template.eos_token, template.end_of_turn, template.stop_ids) == \
        ("<|im_start|>", "<|im_end|>", 2, (2,))


def test_the_cut_is_the_one_the_tokenizer_json_names(hf_smollm2, smollm2_folder, tmp_path):
    """transformers' GGUF reader writes GPT-2's plain byte-level cut: read as written, spaces before digits split."""
    data = json.loads((hf_smollm2 / "tokenizer.json").read_text())
    data["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    ours, theirs = hf_tokenizer(tmp_path / "tokenizer.json"), reference(tmp_path / "tokenizer.json")
    for text in ("x\n\n  99 bottles", "  42", "3.14159 and 2,718", "In 1908, Edith Wharton wrote"):
        assert ours.encode(text) == theirs(text), text
    assert ours.encode("  42") == [216, 216, 36, 34] and smollm2_folder.tokenizer.encode("  42") == [256, 36, 34]


@pytest.mark.parametrize("tied", [False, True])
def test_sharded_random_llama_folders_match_transformers(tmp_path, hf_smollm2, tied):
    folder = save_random_hf_llama(tmp_path / "tiny", hf_smollm2 / "tokenizer.json", seed=1, tied=tied,
                                  max_shard_size="5MB")
    assert len(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]) > 1
    loaded = load_model(str(folder))
    ids = loaded.tokenizer.encode("The Verdict, 1908: 42 pages." + CHAT)
    assert max_logit_difference(loaded.model, folder, ids) < 1e-4
    config = loaded.model.config
    assert (config.kv_heads, config.head_is_tied, config.rope_theta, config.mlp_hidden) == (2, tied, 50000.0, 96)


@pytest.mark.parametrize("tied", [False, True])
def test_export_of_a_llama_model_loads_in_transformers_and_back(tmp_path, smollm2_folder, tied):
    model, tokenizer = tiny_llama(tied), smollm2_folder.tokenizer
    folder = export_hf_folder(model, tmp_path / "hf", tokenizer)
    ids = tokenizer.encode(CHAT)
    assert max_logit_difference(model, folder, ids) < 1e-4
    names = set(load_file(folder / "model.safetensors"))
    assert {"model.embed_tokens.weight", "model.layers.1.self_attn.k_proj.weight", "model.layers.1.mlp.up_proj.weight",
            "model.layers.0.post_attention_layernorm.weight", "model.norm.weight"} <= names
    assert ("lm_head.weight" in names) == (not tied) and len(names) == 2 + 9 * 2 + (not tied)
    hf = json.loads((folder / "config.json").read_text())
    assert (hf["architectures"], hf["num_key_value_heads"], hf["tie_word_embeddings"], hf["eos_token_id"]) == \
        (["LlamaForCausalLM"], 2, tied, 2)
    again = load_model(str(folder))
    with torch.no_grad():
        assert torch.equal(again.model(torch.tensor([ids])), model(torch.tensor([ids])))
    assert again.tokenizer.encode(CHAT) == ids


def test_export_of_the_built_in_smollm2_carries_its_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    smollm2 = load_model("smollm2")
    folder = export_hf_folder(smollm2.model, tmp_path / "smollm2", smollm2.tokenizer, smollm2.meta.chat_template)
    ids = smollm2.tokenizer.encode(CHAT)
    assert max_logit_difference(smollm2.model, folder, ids) < 1e-4
    theirs = AutoTokenizer.from_pretrained(folder)
    for text in [*tokenizer_texts(records=50), CHAT]:
        assert theirs.encode(text, add_special_tokens=False) == smollm2.tokenizer.encode(text), text[:60]
    assert theirs.eos_token == "<|im_end|>"
    messages = [{"role": "user", "content": "What is 12 + 30, in words?"}]
    assert theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == \
        smollm2.meta.chat_template.render(messages)
    again = load_model(str(folder))
    assert again.tokenizer.encode(CHAT) == ids and again.meta.prompt_style == "template"
    assert (again.meta.chat_template.template, again.meta.chat_template.stop_ids) == \
        (smollm2.meta.chat_template.template, (2,))


def test_a_checkpoint_of_a_folder_model_carries_its_tokenizer(tmp_path, hf_smollm2):
    folder = save_random_hf_llama(tmp_path / "tiny", hf_smollm2 / "tokenizer.json")
    loaded = load_model(str(folder))
    save_checkpoint(loaded.model, loaded.tokenizer, tmp_path / "ckpt")
    shutil.rmtree(folder)  # the checkpoint holds its own tokenizer.json
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())["tokenizer"]
    assert saved == {"type": "hf", "path": "tokenizer.json", "name": "tiny"}
    _, tokenizer, _ = load_checkpoint(tmp_path / "ckpt")
    assert tokenizer.encode(CHAT) == loaded.tokenizer.encode(CHAT) and tokenizer.eos_id == loaded.tokenizer.eos_id == 2


@pytest.mark.parametrize("changes, message", [
    ({"model_type": "mamba"}, "model_type 'mamba' is not supported; gptlab reads Hugging Face folders of model_type "
                              "gpt2, llama, qwen2, "),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope scaling 'llama3' needs 'low_freq_factor'"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}, "rope scaling 'yarn' is not supported; gptlab "
                                                                   "reads 'linear' and 'llama3'"),
    ({"attention_bias": True}, "attention_bias / mlp_bias are not supported"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
])
def test_configs_gptlab_cannot_run_are_refused_naming_the_file(tmp_path, changes, message):
    (tmp_path / "config.json").write_text(json.dumps({**llama.config_to_hf(tiny_llama(False).config), **changes}))
    with pytest.raises(ValueError, match=f"^{tmp_path / 'config.json'}: {message}") as err:
        load_model(str(tmp_path))
    assert "\n" not in str(err.value)


def test_a_llama_folder_without_its_tokenizer_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(llama.config_to_hf(tiny_llama(False).config)))
    with pytest.raises(ValueError, match=f"^{tmp_path / 'tokenizer.json'}: missing; a llama-family Hugging Face "
                                         "folder needs the tokenizer saved beside the model"):
        load_model(str(tmp_path))


@pytest.mark.parametrize("changes, message", [
    ({"pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": False}},
     "pre-tokenizer .*Split.* is not supported; gptlab knows gpt-2, smollm"),
    ({"normalizer": {"type": "NFKC"}}, 'normalizer {"type": "NFKC"} is not supported for byte-level BPE; gptlab '
                                       r"applies NFC \(Qwen, Pythia\) or none$"),
])
def test_tokenizers_gptlab_cannot_run_are_refused_naming_the_file(tmp_path, hf_smollm2, changes, message):
    data = json.loads((hf_smollm2 / "tokenizer.json").read_text())
    (tmp_path / "tokenizer.json").write_text(json.dumps({**data, **changes}))
    with pytest.raises(ValueError, match=f"^{tmp_path / 'tokenizer.json'}: {message}"):
        hf_tokenizer(tmp_path / "tokenizer.json")


def test_export_refuses_models_hugging_face_cannot_hold(tmp_path):
    mixed = GPT(GPTConfig(vocab_size=64, context_length=16, n_layer=1, n_head=2, n_embd=16, positions="rope"))
    with pytest.raises(ValueError, match="no model family holds positions=rope, norm=layernorm, mlp=gelu"):
        export_hf_folder(mixed, tmp_path / "mixed")
    classifier = GPT(GPTConfig(vocab_size=64, context_length=16, n_layer=1, n_head=2, n_embd=16, num_classes=2))
    with pytest.raises(ValueError, match="a classifier .2 classes. has no Hugging Face causal-LM form"):
        export_hf_folder(classifier, tmp_path / "classifier")
