"""The book readers' files through the CLI: OpenAI's GPT-2 folders (`gptlab download`, `generate`, `info`),
`gptlab convert`, and the book's `.pth` models (`generate`, `classify --labels`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from book_gpt import book_greedy, book_model
from e2e.commands import gptlab
from gptlab.tokenizer import GPT2Tokenizer
from hf_models import PROMPTS, hf_greedy
from openai_files import DATA_FILE, Host, closed_port, hf_model_from_arrays, model_files, openai_folder, saved

# GPT-2's shape at one layer, so the heads come from the width as for the book's files: a 50,257-token vocabulary
BOOK_GPT2 = dict(vocab_size=50257, context_length=32, emb_dim=768, n_heads=12, n_layers=1, qkv_bias=True)


def one_error_line(out: subprocess.CompletedProcess) -> str:
    """The `error:` line of a failed command, checked to be its only one and without a traceback."""
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    return errors[0]


def completion_ids(model: str | Path, prompt: str, tokens: int) -> list[int]:
    out = gptlab("generate", "--model", str(model), "--prompt", prompt, "--temperature", "0", "--max-new-tokens",
                 str(tokens), "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["finish_reason"] == "length"
    return result["completion_ids"]


def test_an_openai_folder_generates_as_transformers_does_and_shows_its_info(tmp_path):
    folder = openai_folder(tmp_path, "vocab50257")
    ids = GPT2Tokenizer().encode(PROMPTS[0])
    assert completion_ids(folder, PROMPTS[0], 8) == hf_greedy(hf_model_from_arrays(folder), ids, 8)
    out = gptlab("info", str(folder), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["source"] == "openai-tf" and info["config"]["n_layer"] == 2
    assert info["parameters"] == sum(array.size for array in saved(folder).values())  # the head is tied


def test_download_resumes_checks_and_converts(gpt2_host, tmp_path):
    gpt2_host.cut_after[f"/models/774M/{DATA_FILE}"] = [10_000]
    out = gptlab("download", "gpt2-774M", "--dir", str(tmp_path / "gpt2"), "--url", gpt2_host.url,
                 "--format", "safetensors")
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "gpt2" / "774M"
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == model_files()
    assert [r for path, r in gpt2_host.requests if path.endswith(DATA_FILE)] == [None, "bytes=10000-"]
    assert DATA_FILE in out.stderr  # its progress bar
    converted = tmp_path / "gpt2" / "774M-safetensors"
    assert f"OpenAI's files are in {folder}" in out.stdout and f"gptlab checkpoint {converted}" in out.stdout
    assert f"gptlab generate --model {converted}" in out.stdout
    assert sorted(path.name for path in converted.iterdir()) == ["config.json", "manifest.json", "model.safetensors"]
    info = json.loads(gptlab("info", str(converted), "--json").stdout)
    assert info["source"] == "checkpoint" and info["config"]["n_layer"] == 11


def test_download_of_corrupt_weights_is_refused_unless_unverified(tmp_path):
    files = model_files()
    data = bytearray(files[DATA_FILE])
    data[-3] ^= 0x10
    with Host({**files, DATA_FILE: bytes(data)}) as served:
        args = ("download", "774M", "--dir", str(tmp_path), "--url", served.url)
        assert "tensor 'model/wte' fails its crc32c check" in one_error_line(gptlab(*args))
        assert gptlab(*args, "--no-verify").returncode == 0


def test_download_offline_unreachable_or_wrong_says_so_in_one_line(gpt2_host, tmp_path):
    offline = one_error_line(gptlab("download", "124M", "--dir", str(tmp_path), env={"GPTLAB_OFFLINE": "1"}))
    assert "checkpoint could not be downloaded (downloads are switched off" in offline
    assert f"put it at {tmp_path / '124M' / 'checkpoint'}" in offline
    unreachable = one_error_line(gptlab("download", "355M", "--dir", str(tmp_path), "--url",
                                        f"http://127.0.0.1:{closed_port()}/m"))
    assert "refused" in unreachable and "Download it by hand from http://127.0.0.1" in unreachable
    wrong_size = one_error_line(gptlab("download", "124M", "--dir", str(tmp_path), "--url", gpt2_host.url))
    assert "hparams.json" in wrong_size and "serves 81 bytes, expected 90" in wrong_size  # pinned from the book
    assert "unknown GPT-2 size 'gpt2-2B'" in one_error_line(gptlab("download", "gpt2-2B"))


def perplexity_loss(model: Path, text: Path) -> float:
    out = gptlab("perplexity", "--model", str(model), "--data", str(text), "--context", "16", "--max-tokens", "16",
                 "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["loss"]


def test_convert_to_gptlab_and_hf_folders_that_load_again(tmp_path):
    source = openai_folder(tmp_path, "vocab50257")
    text = tmp_path / "text.txt"
    text.write_text(" ".join(PROMPTS), encoding="utf-8")
    ids = torch.tensor([GPT2Tokenizer().encode(text.read_text())[:16]])
    with torch.no_grad():
        reference = float(hf_model_from_arrays(source)(ids, labels=ids).loss)
    expected = completion_ids(source, PROMPTS[1], 8)
    for target in ("gptlab", "hf"):
        dest = tmp_path / f"as-{target}"
        out = gptlab("convert", str(source), str(dest), "--to", target)
        assert out.returncode == 0, out.stderr
        assert str(dest) in out.stdout and "model.safetensors" in out.stdout
        assert completion_ids(dest, PROMPTS[1], 8) == expected
        assert perplexity_loss(dest, text) == pytest.approx(reference, abs=1e-5)
    assert "already exists" in one_error_line(gptlab("convert", str(source), str(tmp_path / "as-hf")))


def test_the_books_pretrained_pth_generates_its_greedy_tokens(tmp_path):
    reference = book_model(**BOOK_GPT2)
    torch.save(reference.state_dict(), tmp_path / "gpt2-small124M.pth")
    ids = GPT2Tokenizer().encode(PROMPTS[2])
    expected = book_greedy(reference, ids, 10, BOOK_GPT2["context_length"])
    assert completion_ids(tmp_path / "gpt2-small124M.pth", PROMPTS[2], 10) == expected


def test_the_books_classifier_pth_classifies_with_the_labels_given(tmp_path):
    reference = book_model(classes=2, **BOOK_GPT2)
    model = tmp_path / "review_classifier.pth"
    torch.save(reference.state_dict(), model)
    texts = ["WIN a FREE vacation now!!! Call 09061701461", "Hey, are we still meeting today?"]
    for pad_to in (None, 24):  # the book's classify_review pads with <|endoftext|> to the training length
        padding = [[50256] * (pad_to - len(GPT2Tokenizer().encode(t))) if pad_to else [] for t in texts]
        with torch.no_grad():  # the book reads the last position's logits
            expected = [reference(torch.tensor([GPT2Tokenizer().encode(t) + pad]))[0, -1].softmax(-1)
                        for t, pad in zip(texts, padding)]
        flags = ("--pad-to", str(pad_to)) if pad_to else ()
        out = gptlab("classify", "--model", str(model), "--labels", "ham,spam", "--json", *flags, *texts)
        assert out.returncode == 0, out.stderr
        for result, probabilities in zip(map(json.loads, out.stdout.splitlines()), expected, strict=True):
            assert result["label"] == ["ham", "spam"][int(probabilities.argmax())]
            assert result["probability"] == pytest.approx(float(probabilities.max()), abs=1e-4)
            assert list(result["probabilities"]) == ["ham", "spam"]
    plain = gptlab("classify", "--model", str(model), texts[1])
    assert plain.returncode == 0 and plain.stdout.split("\t")[0] in ("0", "1")
    wrong = one_error_line(gptlab("classify", "--model", str(model), "--labels", "a,b,c", "hi"))
    assert "--labels a,b,c names 3 classes, but" in wrong and "has 2" in wrong
    too_long = one_error_line(gptlab("classify", "--model", str(model), "--pad-to", "33", "hi"))
    assert "pad_to must be between 1 and the model's context (32), not 33" in too_long
    no_hf = one_error_line(gptlab("convert", str(model), str(tmp_path / "hf"), "--to", "hf"))
    assert "a classifier (2 classes) has no Hugging Face causal-LM form" in no_hf


def test_a_texts_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("first line\ncaf\u00e9 au lait\n".encode("latin-1"))
    error = one_error_line(gptlab("classify", "--model", "gpt-tiny", "--file", str(tmp_path / "latin1.txt")))
    assert f"{tmp_path / 'latin1.txt'}:2: not UTF-8 text" in error
