"""`gptlab finetune instruct`, `gptlab respond` and `gptlab chat` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pexpect

from e2e.commands import gptlab
from gptlab.evaluation.metrics import read_metrics
from gptlab.files import sha256_of

BIN = Path(sys.executable).parent  # the console script, for the chat tests' terminal


def test_tiny_model_trained_on_16_records_reproduces_them_through_respond(overfit_run, sixteen_records, tmp_path):
    run, data = overfit_run
    out = gptlab("respond", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "answers.json"))
    assert out.returncode == 0, out.stderr
    assert "wrote 16 responses (alpaca prompts)" in out.stdout
    answers = json.loads((tmp_path / "answers.json").read_text())
    assert [a["model_response"] for a in answers] == [r["output"] for r in sixteen_records]
    assert answers[1] == {**sixteen_records[1], "model_response": "red red red"}
    in_run = json.loads((run / "instruction-data-with-response.json").read_text())
    assert [a["model_response"] for a in in_run] == [r["output"] for r in sixteen_records]
    assert json.loads((run / "checkpoints" / "best" / "config.json").read_text())["prompt_style"] == "alpaca"


def ignore_ctrl_c() -> None:
    """As a parent that ignores SIGINT leaves it to its children (a test worker did, in CI)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_chat_answers_resets_changes_settings_and_quits(overfit_run):
    run, _ = overfit_run
    env = {**os.environ, "TERM": "dumb"}
    chat = pexpect.spawn(str(BIN / "gptlab"), ["chat", "--model", str(run), "--temperature", "0"],
                         env=env, encoding="utf-8", timeout=60, preexec_fn=ignore_ctrl_c)
    try:
        chat.expect("alpaca prompts")
        chat.expect(">>> ")
        chat.sendline("Name a fruit that is red.")
        chat.expect(r"A red fruit is number 0\.\r\n")
        chat.expect(">>> ")
        chat.sendline("/settings top_k=5 temperature=0")
        chat.expect("temperature=0.0 top_k=5")
        chat.sendline("/settings top_k=zero")
        chat.expect("error: top_k: 'zero' is not a number")
        chat.sendline("/reset")
        chat.expect(r"\(conversation forgotten\)")
        chat.sendline('"""')  # a pasted block, possibly over several lines
        chat.expect(r"\.\.\. ")
        chat.sendline("Name a fruit that is blue.")
        chat.sendline('"""')
        chat.expect(r"A blue fruit is number 1\.\r\n")
        chat.expect(">>> ")
        chat.sendintr()  # Ctrl-C at the prompt does not leave, even when the parent ignores SIGINT (see below)
        chat.expect(r"Ctrl-D or /quit to leave")
        chat.sendline("/quit")
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    assert chat.exitstatus == 0


def test_chat_leaves_on_ctrl_d(overfit_run):
    run, _ = overfit_run
    chat = pexpect.spawn(str(BIN / "gptlab"), ["chat", "--model", str(run)], env={**os.environ, "TERM": "dumb"},
                         encoding="utf-8", timeout=60)
    chat.expect(">>> ")
    chat.sendeof()
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0


def test_instruction_data_run_folder_is_complete(tmp_path):
    run = tmp_path / "instruct"
    out = gptlab("finetune", "instruct", "--data", "instruction-data", "--model", "gpt-tiny", "--out", str(run),
                 "--max-steps", "20", "--eval-every", "10", "--lr", "1e-3", "--response-tokens", "8")
    assert out.returncode == 0, out.stderr
    evals = read_metrics(run).evaluations
    assert [e["step"] for e in evals] == [10, 20] and evals[1]["val_loss"] < evals[0]["val_loss"]
    assert "sample:" in out.stderr
    responses = json.loads((run / "instruction-data-with-response.json").read_text())
    assert len(responses) == 110 and all(isinstance(r["model_response"], str) for r in responses)
    test = json.loads((run / "test.json").read_text())
    assert [r["instruction"] for r in responses] == [r["instruction"] for r in test]
    assert [len(json.loads((run / f"{s}.json").read_text())) for s in ("train", "test", "val")] == [935, 110, 55]
    assert (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / "summary.json").read_text())["responses"].endswith("instruction-data-with-response.json")
    assert json.loads((run / "config.json").read_text())["task"] == "instruct"


def test_bad_records_are_one_line(tmp_path):
    (tmp_path / "bad.json").write_text('[{"instruction": "a", "output": "b"}, {"instruction": "c"}]')
    out = gptlab("finetune", "instruct", "--data", str(tmp_path / "bad.json"), "--model", "gpt-tiny",
                 "--out", str(tmp_path / "run"))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'bad.json'}, record 1: missing 'output' field " \
                                                  "(found: instruction)"


def test_lora_fine_tune_saves_a_merged_model_that_answers_as_in_training(overfit_run, tmp_path):
    base, data = overfit_run[0].parent / "base", overfit_run[1]
    run = tmp_path / "lora"
    out = gptlab("finetune", "instruct", "--data", str(data), "--val-data", str(data), "--test-data", str(data),
                 "--model", str(base), "--out", str(run), "--train-layers", "lora", "--lora-rank", "16",
                 "--lora-alpha", "32", "--max-steps", "60", "--eval-every", "30", "--lr", "1e-2",
                 "--weight-decay", "0", "--response-tokens", "20")
    assert out.returncode == 0, out.stderr
    evals = read_metrics(run).evaluations
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    assert json.loads((run / "checkpoints" / "best" / "config.json").read_text())["lora"] == \
        {"rank": 16, "alpha": 32.0, "targets": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
         "base": str(base / "checkpoints" / "best"),
         "base_sha256": sha256_of(base / "checkpoints" / "best" / "model.safetensors")}
    again = gptlab("respond", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "again.json"))
    assert again.returncode == 0, again.stderr
    in_run = json.loads((run / "instruction-data-with-response.json").read_text())
    assert json.loads((tmp_path / "again.json").read_text()) == in_run  # the merged weights answer alike
    assert len({r["model_response"] for r in in_run}) > 1  # the adapters learned something record-specific


def test_a_model_with_a_chat_template_is_tuned_and_asked_in_it(sixteen_records, tmp_path):
    """--prompt-style auto (the default) on a model whose files carry a chat template: the training prompts
    are the template's, the run keeps it, respond frames records by it; a template that does not parse is
    one line."""
    from template_folders import MODELS, save_template_llama

    folder = save_template_llama(tmp_path / "qwen", MODELS["qwen-2.5"])
    info = json.loads(gptlab("info", str(folder), "--json").stdout)
    assert (info["prompt_style"], info["chat_template"]) == ("template", str(folder / "tokenizer_config.json"))
    data, run = tmp_path / "sixteen.json", tmp_path / "run"
    data.write_text(json.dumps(sixteen_records))
    out = gptlab("finetune", "instruct", "--data", str(data), "--val-data", str(data), "--test-data", str(data),
                 "--model", str(folder), "--out", str(run), "--max-steps", "2", "--eval-every", "2",
                 "--batch-size", "4", "--response-tokens", "4")
    assert out.returncode == 0, out.stderr
    assert "(template prompts, prompt masked)" in out.stderr
    saved = json.loads((run / "checkpoints" / "best" / "config.json").read_text())
    assert saved["prompt_style"] == "template" and saved["chat_template"]["template"] == MODELS["qwen-2.5"].template
    again = gptlab("respond", "--model", str(run), "--data", str(data), "--out", str(tmp_path / "again.json"),
                   "--max-new-tokens", "4")
    assert again.returncode == 0 and "wrote 16 responses (template prompts)" in again.stdout, again.stderr

    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": "{{ messages[0] "}))
    bad = gptlab("chat", "--model", str(folder))
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [f"error: {folder}/tokenizer_config.json: the chat template does not "
                                               "parse (line 1: unexpected end of template, expected 'end of print "
                                               "statement'.)"]
