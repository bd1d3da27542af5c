"""`gptlab convert SRC OUT.gguf --to gguf`: the file reads back through gptlab's GGUF reader and through
transformers' (`gguf_file=`) with the source's logits, carries the source's chat template, and comes with
an Ollama Modelfile; what llama.cpp could not run as gptlab does is refused in one line.

Tiny models with small vocabularies (1,024 of SmolLM2's tokens; a 300-token BPE trained here): GGUFReader
reads a vocabulary string by string, seconds for 50k tokens."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from e2e.commands import gptlab
from family_checks import save_tiny
from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.checkpoint.native import save_checkpoint
from gptlab.config import GPTConfig
from gptlab.loading import load_model
from gptlab.model import GPT
from gptlab.prompts import prompt_style
from gptlab.tokenizer import BPETokenizer, CharTokenizer, train_bpe
from gptlab.tokenizer.patterns import PATTERNS

VOCAB = 1024  # the `small_tokenizer_json` fixture's
SHAPE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=1e4)
IDS = [1, 17, 300, 45, 999, 2, 512, 64, 3, 700, 80, 5]
Q8_0_BOUND = 0.15  # largest |logit| change q8_0 may make here (logits of about ±1.5); measured 0.074
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is 2+2?"}]


def convert(source: Path | str, dest: Path, *flags: str) -> str:
    result = gptlab("convert", str(source), str(dest), "--to", "gguf", *flags)
    assert result.returncode == 0, result.stderr
    return result.stdout


def refusal(source: Path | str, dest: Path, *flags: str) -> str:
    """The one line a refused export prints, checked to write nothing."""
    result = gptlab("convert", str(source), str(dest), "--to", "gguf", *flags)
    assert result.returncode != 0 and not dest.exists()
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        out = model(torch.tensor([ids]))
    return out if isinstance(out, torch.Tensor) else out.logits


def transformers_gguf(path: Path, **config):
    """transformers' model of a GGUF file; `config`: fields its reader leaves at a default that does not fit."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                **config).eval()


def transformers_folder(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory, small_tokenizer_json, hf_smollm2) -> Path:
    """A tiny SmolLM2-shaped Llama (GQA, untied head) with SmolLM2's first 1,024 tokens and its chat template."""
    from transformers import LlamaConfig

    folder = save_tiny(tmp_path_factory.mktemp("llama"), LlamaConfig(**SHAPE, tie_word_embeddings=False),
                       small_tokenizer_json)
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        if (hf_smollm2 / name).is_file():
            shutil.copyfile(hf_smollm2 / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def llama_gguf(llama_folder, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llama-gguf") / "tiny-llama.gguf"
    assert "(llama; tensors: " in convert(llama_folder, path, "--quant", "f32")
    return path


def test_llama_gguf_has_the_sources_logits_in_gptlab_and_transformers(llama_folder, llama_gguf):
    source, back = load_model(str(llama_folder)), load_model(str(llama_gguf))
    eps = back.model.config.layer_norm_eps  # GGUF keeps float32
    assert eps == pytest.approx(1e-5) and replace(back.model.config, layer_norm_eps=1e-5) == source.model.config
    assert (logits(back.model, IDS) - logits(source.model, IDS)).abs().max().item() < 1e-5
    theirs = logits(transformers_gguf(llama_gguf), IDS)
    assert (theirs - logits(transformers_folder(llama_folder), IDS)).abs().max().item() < 1e-5
    text = "The 3 cats' café:\n  42 bottles"
    assert back.tokenizer.encode(text) == source.tokenizer.encode(text)


def test_llama_gguf_carries_the_chat_template_and_a_modelfile(llama_folder, llama_gguf):
    source, back = load_model(str(llama_folder)), load_model(str(llama_gguf))
    assert back.meta.chat_template.render(CONVERSATION) == source.meta.chat_template.render(CONVERSATION)
    assert back.meta.chat_template.stop_ids == source.meta.chat_template.stop_ids == (2,)  # <|im_end|>
    modelfile = llama_gguf.with_suffix(".Modelfile").read_text()
    assert modelfile.startswith("FROM ./tiny-llama.gguf\nTEMPLATE \"\"\"{{- range .Messages }}")
    assert '{{ "<|im_end|>\\n<|im_start|>assistant\\n" }}' in modelfile  # chatml, as SmolLM2's template is
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


def test_q8_0_keeps_logits_within_its_bound(llama_folder, tmp_path):
    path = tmp_path / "q8.gguf"
    assert "Q8_0" in convert(llama_folder, path, "--quant", "q8_0")
    source = logits(load_model(str(llama_folder)).model, IDS)
    ours, theirs = logits(load_model(str(path)).model, IDS), logits(transformers_gguf(path), IDS)
    assert 0 < (ours - source).abs().max().item() < Q8_0_BOUND
    assert (theirs - ours).abs().max().item() < 1e-4  # both read the same blocks


def test_qwen2_gguf_has_the_sources_logits(tmp_path, small_tokenizer_json):
    """Qwen2: q/k/v biases, a tied head (no output tensor), halves-rotated q/k rows kept as they are."""
    from transformers import Qwen2Config

    folder = save_tiny(tmp_path / "qwen2", Qwen2Config(**{**SHAPE, "rms_norm_eps": 1e-6}, tie_word_embeddings=True),
                       small_tokenizer_json)
    path = tmp_path / "qwen2.gguf"
    convert(folder, path, "--quant", "f32")
    back = load_model(str(path))
    assert (back.model.config.family, back.model.config.qkv_bias, back.model.config.tie_embeddings) == (
        "qwen2", True, True)
    source = logits(load_model(str(folder)).model, IDS)
    assert (logits(back.model, IDS) - source).abs().max().item() < 1e-5
    assert (logits(transformers_gguf(path), IDS) - source).abs().max().item() < 1e-4


@pytest.fixture(scope="module")
def small_bpe() -> BPETokenizer:
    from hf_models import tokenizer_texts

    return BPETokenizer(train_bpe(tokenizer_texts(40), 300, pattern=PATTERNS["gpt2"], name="small"))


def test_gpt2_gguf_has_the_sources_logits_and_its_style_as_template(tmp_path, small_bpe):
    """GPT-2 blocks (fused q/k/v, learned positions) with a BPE trained here, tuned in the chatml style: the
    file's template renders the ids gptlab's style gives. Context 1024: transformers' GGUF reader sizes
    GPT-2's position table so."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=small_bpe.vocab_size, context_length=1024, n_layer=2, n_head=2, n_embd=64)
    source = save_checkpoint(GPT(config), small_bpe, tmp_path / "gpt2", CheckpointMeta(prompt_style="chatml"))
    path = tmp_path / "gpt2.gguf"
    assert "(gpt2; tensors: " in convert(source, path, "--quant", "f32")
    ids = [i % small_bpe.vocab_size for i in IDS]
    expected = logits(load_model(str(source)).model, ids)
    back = load_model(str(path))
    assert (logits(back.model, ids) - expected).abs().max().item() < 1e-5
    assert (logits(transformers_gguf(path), ids) - expected).abs().max().item() < 1e-5
    style = prompt_style("chatml")
    system, first, answer, message = (m["content"] for m in CONVERSATION)
    framed = style.chat_ids(small_bpe, system, [(first, answer)], message)
    assert back.tokenizer.encode(back.meta.chat_template.render(CONVERSATION)) == framed
    assert 'PARAMETER stop "<|im_start|>"' in path.with_suffix(".Modelfile").read_text()


def test_what_llama_cpp_cannot_run_is_refused_in_one_line(tmp_path, small_bpe):
    chars = CharTokenizer("abcdefgh \n")
    tiny = GPTConfig(vocab_size=10, context_length=32, n_layer=1, n_head=2, n_embd=32)
    char_model = save_checkpoint(GPT(tiny), chars, tmp_path / "char")
    assert "the char tokenizer has no form llama.cpp runs" in refusal(char_model, tmp_path / "char.gguf")
    gpt4 = BPETokenizer(train_bpe(["a b c ab ab abc"] * 3, 260, pattern=PATTERNS["gpt4"], name="mine"))
    own_regex = save_checkpoint(GPT(GPTConfig(**{**tiny.__dict__, "vocab_size": gpt4.vocab_size})), gpt4,
                                tmp_path / "gpt4")
    assert "cuts text with its own regex, which llama.cpp has no name for" in refusal(own_regex, tmp_path / "r.gguf")
    mixed = GPTConfig(**{**tiny.__dict__, "vocab_size": small_bpe.vocab_size, "positions": "rope", "mlp": "swiglu"})
    no_family = save_checkpoint(GPT(mixed), small_bpe, tmp_path / "mixed")
    assert "a mix of blocks llama.cpp does not define" in refusal(no_family, tmp_path / "mixed.gguf")
    assert "is quantized (int8)" in refusal("gpt-tiny", tmp_path / "q.gguf", "--quantize", "int8")
    assert "name it NAME.gguf" in refusal("gpt-tiny", tmp_path / "tiny.bin")


def test_a_lora_run_exports_merged(tmp_path, small_bpe, sixteen_records):
    """A LoRA fine-tune's checkpoint holds adapters beside a base elsewhere: the GGUF file holds the merged
    model, whose logits are the run's and not the base's."""
    import json

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=small_bpe.vocab_size, context_length=128, n_layer=2, n_head=2, n_embd=64)
    base = save_checkpoint(GPT(config), small_bpe, tmp_path / "base")
    data = tmp_path / "sixteen.json"
    data.write_text(json.dumps(sixteen_records))
    run = tmp_path / "lora"
    tuned = gptlab("finetune", "instruct", "--data", str(data), "--val-data", str(data), "--model", str(base),
                   "--out", str(run), "--train-layers", "lora", "--max-steps", "3", "--eval-every", "3",
                   "--lr", "1e-2", "--batch-size", "4")
    assert tuned.returncode == 0, tuned.stderr
    path = tmp_path / "lora.gguf"
    convert(run, path, "--quant", "f32")
    ids = [i % small_bpe.vocab_size for i in IDS]
    expected = logits(load_model(str(run)).model, ids)
    assert (logits(load_model(str(path)).model, ids) - expected).abs().max().item() < 1e-5
    assert (logits(load_model(str(base)).model, ids) - expected).abs().max().item() > 1e-3
