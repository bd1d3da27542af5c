import threading

import numpy as np
import pytest
import torch

from gptlab.data import reading
from gptlab.data.text import WindowSampler, split_tokens, token_stream
from gptlab.models.llama import LLAMA3_SPLIT
from gptlab.tokenizer import CharTokenizer, GPT2Tokenizer, hf_tokenizer, train_bpe


def test_the_verdict_tokenizes_to_the_books_count_and_is_cached():
    tokens = token_stream(["the-verdict"], GPT2Tokenizer())
    assert len(tokens) == 5145 and tokens.dtype == np.uint16
    again = token_stream(["the-verdict"], GPT2Tokenizer())
    assert isinstance(again, np.memmap) and np.array_equal(again, tokens)


def test_split_is_by_position():
    train, val = split_tokens(np.arange(100), 0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))


def test_windows_targets_are_inputs_shifted_and_each_window_is_seen_once_per_epoch():
    tokens = np.arange(1000, dtype=np.uint16)
    sampler = WindowSampler(tokens, context_length=10, batch_size=3, mode="windows", seed=0)
    assert sampler.num_windows == 99
    firsts = []
    for index in range(33):  # 99 windows / 3 per batch = one epoch
        x, y = sampler.batch(index)
        assert torch.equal(x[:, 1:], y[:, :-1]) and x.shape == (3, 10)
        firsts += x[:, 0].tolist()
    assert sorted(firsts) == list(range(0, 990, 10))
    assert torch.equal(sampler.batch(5)[0], sampler.batch(5)[0])  # a pure function of the index
    assert not torch.equal(sampler.batch(0)[0], sampler.batch(33)[0])  # epochs reshuffle


def test_stride_and_random_mode():
    tokens = np.arange(100, dtype=np.uint16)
    assert WindowSampler(tokens, 10, 2, "windows", stride=5).num_windows == 18
    sampler = WindowSampler(tokens, 10, 4, "random", seed=3)
    x, y = sampler.batch(7)
    assert torch.equal(x, sampler.batch(7)[0]) and not torch.equal(x, sampler.batch(8)[0])
    assert torch.equal(x + 1, y)


def test_text_shorter_than_a_window_is_explained():
    message = "text too short: 50 tokens, but one training window needs context_length \\+ 1 = 65"
    with pytest.raises(ValueError, match=message):
        WindowSampler(np.arange(50), context_length=64, batch_size=1)


def test_char_vocabulary_and_unknown_sources(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcabc\n")
    assert token_stream([str(path)], CharTokenizer.from_text("abc\n")).tolist() == [1, 2, 3, 1, 2, 3, 0]
    with pytest.raises(FileNotFoundError, match="no-such.txt: no such text file.*the-verdict"):
        token_stream(["no-such.txt"], GPT2Tokenizer())
    (tmp_path / "bad.txt").write_bytes(b"ok\xff\xfe")
    with pytest.raises(ValueError, match="bad.txt:1: not UTF-8 text \\(byte 2"):
        token_stream([str(tmp_path / "bad.txt")], GPT2Tokenizer())


def test_an_empty_file_is_named_every_time_it_is_used(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    for _ in range(2):  # the second use once met an empty token cache ("cannot mmap an empty file")
        with pytest.raises(ValueError, match=r"empty.txt: the file is empty"):
            token_stream([str(tmp_path / "empty.txt")], GPT2Tokenizer())


def _hf_bytelevel(folder, text: str, size: int):
    """A byte-level tokenizer.json with Llama 3's cut (punctuation keeps its line breaks), trained on `text`."""
    folder.mkdir(exist_ok=True)
    for name, content in train_bpe([text], size, pattern=LLAMA3_SPLIT.pattern).hf_files().items():
        (folder / name).write_text(content, encoding="utf-8")
    return hf_tokenizer(folder / "tokenizer.json")


def test_a_corpus_streamed_in_blocks_gives_the_ids_of_the_whole_text(monkeypatch, data_dir, tmp_path):
    monkeypatch.setattr(reading, "BLOCK", 4099)  # blocks end inside lines and inside characters
    shakespeare = (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")[:150_000]
    text = shakespeare + "naïve café ☕ 日本語, «quoted».\n" * 300 + "CRLF line.\r\nend  \n\nlast"
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # a byte-order mark, dropped as read_utf8 drops it
    for tokenizer in (GPT2Tokenizer(), _hf_bytelevel(tmp_path / "bpe", shakespeare[:20_000], 400),
                      CharTokenizer.from_text(text)):
        tokens = token_stream([str(path)], tokenizer)
        assert isinstance(tokens, np.memmap) and tokens.tolist() == tokenizer.encode(text), tokenizer.name


def test_the_token_cache_is_reused_until_a_file_or_the_tokenizer_changes(tmp_path):
    class Refusing(CharTokenizer):  # the same description, so the same cache entry; it must not be asked
        def encode(self, text: str) -> list[int]:
            raise AssertionError("tokenized again")

    path = tmp_path / "t.txt"
    path.write_text("abc\nabd\n")
    assert token_stream([str(path)], CharTokenizer("\nabcd")).tolist() == [1, 2, 3, 0, 1, 2, 4, 0]
    assert token_stream([str(path)], Refusing("\nabcd")).tolist() == [1, 2, 3, 0, 1, 2, 4, 0]
    path.write_text("abc\nabc\n")  # the file changed
    assert token_stream([str(path)], CharTokenizer("\nabcd")).tolist() == [1, 2, 3, 0, 1, 2, 3, 0]
    assert token_stream([str(path)], CharTokenizer("dcba\n")).tolist() == [3, 2, 1, 4, 3, 2, 1, 4]  # another one
    text = "the quick brown fox jumps over the lazy dog\n" * 20
    path.write_text(text)
    first = _hf_bytelevel(tmp_path / "hf", text, 300)  # a tokenizer.json edited in place: same path, new ids
    assert token_stream([str(path)], first).tolist() == first.encode(text)
    second = _hf_bytelevel(tmp_path / "hf", text, 270)
    assert token_stream([str(path)], second).tolist() == second.encode(text) != first.encode(text)


def test_under_torchrun_only_the_first_process_of_a_machine_tokenizes(tmp_path, monkeypatch):
    class Refusing(CharTokenizer):
        def encode(self, text: str) -> list[int]:
            raise AssertionError("a second process tokenized")

    path = tmp_path / "t.txt"
    path.write_text("abc\n")
    found: list[list[int]] = []
    monkeypatch.setenv("LOCAL_RANK", "1")
    waiting = threading.Thread(target=lambda: found.append(token_stream([str(path)], Refusing("\nabc")).tolist()))
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive() and not found  # rank 1 waits for the cache file
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert token_stream([str(path)], CharTokenizer("\nabc")).tolist() == [1, 2, 3, 0]
    waiting.join(5)
    assert found == [[1, 2, 3, 0]]  # and reads what rank 0 wrote
