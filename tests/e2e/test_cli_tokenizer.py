"""`gptlab tokenizer train` and `gptlab tokenize` as a user runs them, and a model pretrained with a
tokenizer trained here: saved in its checkpoint, reloaded, generating."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tokenizers import Tokenizer as HFTokenizer

from e2e import commands

BIN = Path(sys.executable).parent


def gptlab(*args: str) -> subprocess.CompletedProcess:
    return commands.gptlab(*args, env={"OMP_NUM_THREADS": "1", "TIKTOKEN_CACHE_DIR": ""})


@pytest.fixture(scope="module")
def verdict_bpe(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bpe") / "verdict-bpe"
    done = gptlab("tokenizer", "train", "--data", "the-verdict", "--vocab-size", "600", "--out", str(folder))
    assert done.returncode == 0, done.stderr
    assert "verdict-bpe: 600 ids (256 bytes, 343 merges, 1 special)" in done.stdout
    return folder


def ids_of(tokenizer: str, *source: str) -> list[int]:
    done = gptlab("tokenize", "--tokenizer", tokenizer, *source, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["ids"]


def test_training_twice_gives_the_same_files_which_tiktoken_and_hf_run_alike(verdict_bpe: Path, tmp_path: Path,
                                                                              data_dir: Path) -> None:
    again = gptlab("tokenizer", "train", "--data", str(data_dir / "the-verdict.txt"), "--vocab-size", "600",
                   "--out", str(tmp_path / "verdict-bpe"))
    assert again.returncode == 0, again.stderr
    for name in ("bpe.json", "encoder.json", "vocab.bpe", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "verdict-bpe" / name).read_bytes() == (verdict_bpe / name).read_bytes(), name
    ranks = data_gym_to_mergeable_bpe_ranks(str(verdict_bpe / "vocab.bpe"), str(verdict_bpe / "encoder.json"))
    pattern = json.loads((verdict_bpe / "bpe.json").read_text())["pattern"]
    fast = tiktoken.Encoding("verdict-bpe", pat_str=pattern, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 599})
    hf = HFTokenizer.from_file(str(verdict_bpe / "tokenizer.json"))
    sample = tmp_path / "sample.txt"
    sample.write_text("Every effort moves you <|endoftext|> naïve 🙂\n\n  it's done.\t", encoding="utf-8")
    for name, path in (("sample", sample), ("the-verdict", data_dir / "the-verdict.txt")):
        text = path.read_text(encoding="utf-8")
        ids = ids_of(str(verdict_bpe), "--file", str(path))
        assert ids == fast.encode(text, allowed_special="all") == hf.encode(text).ids, name
    decoded = gptlab("tokenize", "--tokenizer", str(verdict_bpe), "--decode", ",".join(map(str, ids)), "--json")
    assert json.loads(decoded.stdout) == {"text": text}  # the last text: The Verdict


def test_tokenize_shows_ids_tokens_and_counts() -> None:
    shown = gptlab("tokenize", "--text", "Hello, world 🦜")  # the parrot's 4 bytes fall into three tokens
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == ["15496,11,995,12520,99,250", '15496\t"Hello"', '11\t","', '995\t" world"',
                                         '12520\t" \\\\xf0\\\\x9f"', '99\t"\\\\xa6"', '250\t"\\\\x9c"']
    assert ids_of("gpt2-scratch", "--text", "Hello, world 🦜") == [15496, 11, 995, 12520, 99, 250]
    assert gptlab("tokenize", "--tokenizer", "gpt2-scratch", "--text", "Hello, world", "--count").stdout == "3\n"
    assert gptlab("tokenize", "--decode", "15496,11").stdout == "Hello,\n"
    assert ids_of("char", "--text", "abba") == [0, 1, 1, 0]
    terminal = pexpect.spawn(str(BIN / "gptlab"), ["tokenize", "--text", "Hello, world"], encoding="utf-8",
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    terminal.expect(pexpect.EOF)
    assert terminal.before.splitlines()[-1] == ("\033[48;5;153mHello\033[0m\033[48;5;223m,\033[0m"
                                                "\033[48;5;157m world\033[0m")  # a colour per token


@pytest.mark.parametrize(("args", "message"), [
    (["tokenizer", "train", "--data", "the-verdict", "--vocab-size", "256", "--out", "{tmp}/x"],
     "error: vocab size 256 is below the 256 single bytes + 1 special token(s); give a vocab size of at least 257"),
    (["tokenizer", "train", "--data", "{tmp}/empty.txt", "--vocab-size", "300", "--out", "{tmp}/x"],
     "error: the training text is empty: there is nothing to learn merges from; give files with text"),
    (["tokenizer", "train", "--data", "{tmp}/latin1.txt", "--vocab-size", "300", "--out", "{tmp}/x"],
     "error: {tmp}/latin1.txt:2: not UTF-8 text (byte 6: invalid continuation byte); re-save the file as UTF-8"),
    (["tokenizer", "train", "--data", "{tmp}/missing.txt", "--vocab-size", "300", "--out", "{tmp}/x"],
     "error: {tmp}/missing.txt: no such text file, and not a registered data set"),
    (["tokenize", "--tokenizer", "{tmp}/missing", "--text", "a"], "error: unknown tokenizer '{tmp}/missing'"),
    (["tokenize", "--decode", "15496,x"], "error: --decode '15496,x': expected token ids separated by commas"),
])
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes(b"ok\ncaf\xe9 au lait\n")
    done = gptlab(*(a.format(tmp=tmp_path) for a in args))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(message.format(tmp=tmp_path)), done.stderr
    assert not (tmp_path / "x").exists()


def test_a_model_pretrained_with_a_trained_tokenizer_keeps_it(verdict_bpe: Path, tmp_path: Path) -> None:
    tokenizer = tmp_path / "mine"
    shutil.copytree(verdict_bpe, tokenizer)
    run = tmp_path / "run"
    done = gptlab("pretrain", "--data", "the-verdict", "--tokenizer", str(tokenizer), "--model", "gpt-tiny",
                  "--context-length", "32", "--batch-size", "4", "--max-steps", "30", "--eval-every", "30",
                  "--eval-batches", "2", "--lr", "3e-3", "--sample-tokens", "4", "--out", str(run))
    assert done.returncode == 0, done.stderr
    recorded = json.loads((run / "checkpoints" / "last" / "config.json").read_text())
    assert recorded["model"]["vocab_size"] == 600 and recorded["tokenizer"]["type"] == "bpe"
    assert recorded["tokenizer"] == json.loads((tokenizer / "bpe.json").read_text())
    shutil.rmtree(tokenizer)  # the checkpoint holds the whole vocabulary: the folder is no longer needed
    info = gptlab("info", str(run))
    assert "tokenizer:    verdict-bpe (vocab 600)" in info.stdout, info.stderr
    generated = gptlab("generate", "--model", str(run), "--prompt", "I had always thought", "--max-new-tokens", "6",
                       "--temperature", "0", "--json")
    assert generated.returncode == 0, generated.stderr
    result = json.loads(generated.stdout)
    assert len(result["completion_ids"]) == 6 and max(result["completion_ids"]) < 600
    exported = gptlab("convert", str(run), str(tmp_path / "hf"), "--to", "hf")  # its tokenizer.json goes along
    assert exported.returncode == 0, exported.stderr
    from_hf = gptlab("generate", "--model", str(tmp_path / "hf"), "--prompt", "I had always thought",
                     "--max-new-tokens", "6", "--temperature", "0", "--json")
    assert json.loads(from_hf.stdout)["completion_ids"] == result["completion_ids"], from_hf.stderr
