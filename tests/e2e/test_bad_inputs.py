"""Every bad input the CLI can meet ends in at most three lines on stderr, no traceback, and the file
(and line or record) named; odd but legal values just work. One process per case (forked: e2e/commands.py);
the last two tests run the console script itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from e2e.commands import gptlab
from gptlab.checkpoint.native import save_checkpoint
from gptlab.files import builtin_model_path
from gptlab.model import GPT
from gptlab.models import preset_config
from gptlab.tokenizer import GPT2Tokenizer

BIN = Path(sys.executable).parent
CLASSIFY_TRAIN = ["--model", "gpt-tiny", "--max-steps", "1", "--batch-size", "2", "--eval-batches", "1",
                  "--warmup-steps", "0"]


@dataclass(frozen=True)
class Case:
    """A command on files `make` writes into a folder, and what it must end in."""

    name: str
    make: Callable[[Path, Path], list[str]]  # (folder, a tiny checkpoint) -> the command's arguments
    code: int  # exit status
    names: tuple[str, ...] = ()  # texts stderr must hold (the file, the line, the field); "{dir}" is the folder
    stdin: str | None = None  # typed in (a prompt too long for an argument: Linux caps one at 128 KiB)


def _checkpoint(folder: Path, tiny: Path, config: Callable[[dict], None] | None = None,
                weights: Callable[[dict], dict] | None = None) -> Path:
    """A copy of the tiny checkpoint with its config.json and/or its weights changed."""
    copy = folder / "model"
    copy.mkdir()
    saved = json.loads((tiny / "config.json").read_text())
    if config is not None:
        config(saved)
    (copy / "config.json").write_text(json.dumps(saved))
    tensors = load_file(str(tiny / "model.safetensors"))
    save_file(weights(tensors) if weights is not None else tensors, str(copy / "model.safetensors"))
    return copy


def _lora_entry(base: str | None, drop: str | None = None) -> Callable[[dict], None]:
    def change(saved: dict) -> None:
        lora = {"rank": 4, "alpha": 8.0, "targets": ["attn.c_attn"], "base": base}
        saved["lora"] = {key: value for key, value in lora.items() if key != drop}
    return change


def _generate(model: Path | str, *flags: str) -> list[str]:
    return ["generate", "--model", str(model), "--prompt", "Hello", "--max-new-tokens", "2", "--seed", "1",
            "--device", "cpu", *flags]


def respond_with_max_batch_0(folder: Path, tiny: Path) -> list[str]:
    records = folder / "records.json"
    records.write_text(json.dumps([{"instruction": "Say hi.", "input": "", "output": "hi"}]))
    return ["respond", "--model", str(tiny), "--data", str(records), "--out", str(folder / "out.json"),
            "--max-batch", "0"]


def serve_with_temperature_3(folder: Path, tiny: Path) -> list[str]:
    return ["serve", "--model", str(tiny), "--port", "0", "--temperature", "3"]


def serve_with_no_request_time(folder: Path, tiny: Path) -> list[str]:
    return ["serve", "--model", str(tiny), "--port", "0", "--request-timeout", "0"]


def bad_float_in_run_config(folder: Path, tiny: Path) -> list[str]:
    config = folder / "config.json"
    config.write_text(json.dumps({"task": "pretrain", "data": ["the-verdict"], "model": "gpt-tiny",
                                  "train": {"lr": "fast"}}))
    return ["pretrain", "--config", str(config), "--out", str(folder / "run")]


def bad_float_in_checkpoint_config(folder: Path, tiny: Path) -> list[str]:
    return _generate(_checkpoint(folder, tiny, config=lambda c: c["model"].update(layer_norm_eps="tiny")))


def lora_entry_missing_a_field(folder: Path, tiny: Path) -> list[str]:
    return _generate(_checkpoint(folder, tiny, config=_lora_entry("gpt-tiny", drop="alpha")))


def lora_base_names_itself(folder: Path, tiny: Path) -> list[str]:
    return _generate(_checkpoint(folder, tiny, config=_lora_entry(str(folder / "model"))))


def lora_bases_in_a_loop(folder: Path, tiny: Path) -> list[str]:
    first = _checkpoint(folder, tiny, config=_lora_entry(str(folder / "second")))
    second = first.with_name("second")
    second.mkdir()
    for name in ("model.safetensors", "config.json"):
        (second / name).write_bytes((first / name).read_bytes())
    entry = json.loads((second / "config.json").read_text())
    entry["lora"]["base"] = str(first)
    (second / "config.json").write_text(json.dumps(entry))
    return _generate(first)


def all_nan_weights(folder: Path, tiny: Path) -> list[str]:
    return _generate(_checkpoint(folder, tiny, weights=lambda t: {k: torch.full_like(v, float("nan"))
                                                                   for k, v in t.items()}))


def int64_weights(folder: Path, tiny: Path) -> list[str]:
    return _generate(_checkpoint(folder, tiny, weights=lambda t: {k: v.long() for k, v in t.items()}))


def gguf_cut_to_1kb(folder: Path, tiny: Path) -> list[str]:
    cut = folder / "cut.gguf"
    with builtin_model_path("smollm2").open("rb") as whole:
        cut.write_bytes(whole.read(1024))
    return _generate(cut)


def truncated_safetensors(folder: Path, tiny: Path) -> list[str]:
    copy = _checkpoint(folder, tiny)
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[: len(data) // 2])
    return _generate(copy)


def hf_shard_index_outside_the_folder(folder: Path, tiny: Path) -> list[str]:
    hf = folder / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 16,
                                                "n_positions": 128, "vocab_size": 50257}))
    outside = folder / "secret.safetensors"
    save_file({"wte.weight": torch.zeros(2, 2)}, str(outside))
    index = {"weight_map": {"wte.weight": "../secret.safetensors"}}
    (hf / "model.safetensors.index.json").write_text(json.dumps(index))
    return _generate(hf)


def _classify_data(folder: Path, name: str, text: str) -> list[str]:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return ["finetune", "classify", "--data", str(path), *CLASSIFY_TRAIN, "--out", str(folder / "run")]


def csv_cell_over_131072_characters(folder: Path, tiny: Path) -> list[str]:
    rows = "".join(f'"{word} {i}",{i % 2}\n' for i in range(20) for word in ("ham", "spam"))
    return _classify_data(folder, "long.csv", f'text,label\n"{"a" * 140_000}",0\n{rows}')


def jsonl_nested_100k_deep(folder: Path, tiny: Path) -> list[str]:
    deep = "[" * 100_000 + "]" * 100_000
    return _classify_data(folder, "deep.jsonl", '{"text": "fine", "label": 0}\n{"text": ' + deep + ', "label": 1}\n')


def jsonl_text_is_a_number(folder: Path, tiny: Path) -> list[str]:
    return _classify_data(folder, "number.jsonl", '{"text": "fine", "label": 0}\n{"text": 5, "label": 1}\n')


def malformed_jsonl_line(folder: Path, tiny: Path) -> list[str]:
    return _classify_data(folder, "broken.jsonl", '{"text": "fine", "label": 0}\n{"text": "cut\n')


def empty_text_file_used_twice(folder: Path, tiny: Path) -> list[str]:
    empty = folder / "empty.txt"
    empty.write_text("")
    return ["pretrain", "--data", str(empty), str(empty), "--model", "gpt-tiny", "--out", str(folder / "run")]


def classify_file_not_utf8(folder: Path, tiny: Path) -> list[str]:
    texts = folder / "texts.txt"
    texts.write_bytes(b"fine\ncaf\xe9\n")
    return ["classify", "--model", str(tiny), "--file", str(texts)]


def classify_subset_of_nothing(folder: Path, tiny: Path) -> list[str]:
    return ["finetune", "classify", "--data", "sms-spam", "--subset", "0", "--out", str(folder / "run")]


def missing_model(folder: Path, tiny: Path) -> list[str]:
    return _generate(folder / "nowhere")


def unknown_preset(folder: Path, tiny: Path) -> list[str]:
    return _generate("gpt-huge")


def tiny_temperature(folder: Path, tiny: Path) -> list[str]:
    return _generate(tiny, "--temperature", "1e-300")


def tiny_top_p(folder: Path, tiny: Path) -> list[str]:
    return _generate(tiny, "--top-p", "1e-46")


def a_million_spaces_as_the_prompt(folder: Path, tiny: Path) -> list[str]:
    return ["generate", "--model", "gpt-tiny", "--max-new-tokens", "1", "--device", "cpu"]  # the prompt on stdin


CASES = [
    Case("bad float in a run's config.json", bad_float_in_run_config, 1, ("{dir}/config.json", "lr", "'fast'")),
    Case("bad float in a checkpoint's config.json", bad_float_in_checkpoint_config, 1,
         ("{dir}/model/config.json", "layer_norm_eps")),
    Case("LoRA entry missing a field", lora_entry_missing_a_field, 1, ("{dir}/model/config.json", "alpha")),
    Case("LoRA base naming its own folder", lora_base_names_itself, 1, ("{dir}/model", "loop")),
    Case("LoRA bases in a loop", lora_bases_in_a_loop, 1, ("{dir}/model", "{dir}/second", "loop")),
    Case("all-NaN weights", all_nan_weights, 1, ("{dir}/model/model.safetensors", "NaN")),
    Case("int64 weights", int64_weights, 1, ("{dir}/model/model.safetensors", "int64")),
    Case("GGUF cut to 1 KB", gguf_cut_to_1kb, 1, ("{dir}/cut.gguf",)),
    Case("truncated safetensors", truncated_safetensors, 1, ("{dir}/model/model.safetensors", "truncated")),
    Case("HF shard index naming a file outside the folder", hf_shard_index_outside_the_folder, 1,
         ("{dir}/hf/model.safetensors.index.json", "../secret.safetensors")),
    Case("CSV cell over 131,072 characters", csv_cell_over_131072_characters, 0),
    Case("JSONL nested 100k deep", jsonl_nested_100k_deep, 1, ("{dir}/deep.jsonl:2", "nested")),
    Case('"text": 5 in JSONL', jsonl_text_is_a_number, 1, ("{dir}/number.jsonl:2", "'text'", "int")),
    Case("malformed JSONL line", malformed_jsonl_line, 1, ("{dir}/broken.jsonl:2", "not valid JSON")),
    Case("empty text file used twice", empty_text_file_used_twice, 1, ("{dir}/empty.txt", "empty")),
    Case("classify --file on non-UTF-8 text", classify_file_not_utf8, 1, ("{dir}/texts.txt:2", "UTF-8")),
    Case("classify --subset 0", classify_subset_of_nothing, 1, ("--subset", "above 0")),
    Case("missing model", missing_model, 1, ("{dir}/nowhere", "not found")),
    Case("unknown preset", unknown_preset, 1, ("gpt-huge", "not found")),
    Case("respond --max-batch 0", respond_with_max_batch_0, 1, ("max_batch must be at least 1, got 0",)),
    Case("serve --temperature 3", serve_with_temperature_3, 1, ("temperature must be from 0 to 2", "got 3")),
    Case("serve --request-timeout 0", serve_with_no_request_time, 1, ("request_timeout must be above 0",)),
    Case("temperature 1e-300", tiny_temperature, 0),
    Case("top_p 1e-46", tiny_top_p, 0),
    Case("1,000,000 spaces as the prompt", a_million_spaces_as_the_prompt, 0, ("left-truncated",),
         stdin=" " * 1_000_000 + "\n"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A random gpt-tiny checkpoint (and a two-class classifier of the same shape beside it)."""
    folder = tmp_path_factory.mktemp("tiny") / "checkpoint"
    torch.manual_seed(0)
    save_checkpoint(GPT(preset_config("gpt-tiny")), GPT2Tokenizer(), folder)
    return folder


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_bad_input_ends_in_one_clear_line(case: Case, tmp_path: Path, tiny: Path) -> None:
    args = case.make(tmp_path, tiny)
    done = gptlab(*args, input=case.stdin, env={"OMP_NUM_THREADS": "1"}, cwd=tmp_path, timeout=300)
    assert done.returncode == case.code, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if case.code:
        assert len(lines) <= 3, done.stderr[-3000:]
        assert lines[-1].startswith("error: "), done.stderr[-3000:]
    for text in case.names:
        assert text.replace("{dir}", str(tmp_path)) in done.stderr, done.stderr[-3000:]


# `gptlab info gpt-tiny` with the model loader replaced by one that fails in a way nothing expects.
UNEXPECTED = """
import sys
import gptlab.cli.generate as generate
def load(args):
    def deeper(n): return deeper(n + 1)
    deeper(0)
generate.load = load
from gptlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("debug", [None, "--debug", "GPTLAB_DEBUG=1"])
def test_an_unexpected_error_is_one_line_and_its_traceback_is_one_flag_away(debug: str | None) -> None:
    env = {**os.environ, "GPTLAB_DEBUG": "1" if debug == "GPTLAB_DEBUG=1" else "0"}
    flags = ["--debug"] if debug == "--debug" else []
    done = subprocess.run([sys.executable, "-c", UNEXPECTED, *flags, "generate", "--model", "gpt-tiny"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1
    last = done.stderr.splitlines()[-1]
    assert last.startswith("error: unexpected RecursionError: maximum recursion depth exceeded")
    if debug is None:
        assert done.stderr.splitlines() == [last] and last.endswith("(run with --debug for the traceback)")
    else:
        assert done.stderr.startswith("Traceback") and "in deeper" in done.stderr


def test_a_usage_error_stays_exit_code_2() -> None:
    done = subprocess.run([str(BIN / "gptlab"), "generate", "--max-new-tokens", "many"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "usage:" in done.stderr
