"""The public Python API (`from gptlab import ...`), as docs/python-api.md shows it."""

from __future__ import annotations

import gptlab
from e2e import commands
from gptlab import GenerationSettings, ask, generate, load_model, stream


def test_every_public_name_resolves_and_an_unknown_one_is_an_attribute_error():
    for name in gptlab.__all__:
        assert getattr(gptlab, name) is not None
    try:
        gptlab.not_a_name  # noqa: B018
    except AttributeError as err:
        assert "not_a_name" in str(err)
    else:
        raise AssertionError("an unknown name resolved")


def test_generate_gives_what_the_cli_gives(tmp_path):
    model = load_model("gpt-tiny", seed=0)
    text = generate(model, "Every effort moves you", max_new_tokens=12, temperature=0)
    settings = GenerationSettings(max_new_tokens=12, temperature=0)
    assert text == "".join(stream(model, "Every effort moves you", settings))
    cli = commands.gptlab("generate", "--model", "gpt-tiny", "--seed", "0", "--prompt", "Every effort moves you",
                          "--max-new-tokens", "12", "--temperature", "0", timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == "Every effort moves you" + text + "\n"


def test_ask_the_built_in_model_a_real_question():
    model = load_model("smollm2")
    assert "Paris" in ask(model, "What is the capital of France?", temperature=0, max_new_tokens=20)
    assert "Paris" in ask(model, "What is the capital of France?", system="Be brief.", temperature=0,
                          max_new_tokens=20)


def test_compile_is_asked_once_per_model_and_answers_as_without(monkeypatch):
    import torch

    model = load_model("gpt-tiny", seed=0)
    expected = generate(model, "Every effort moves you", max_new_tokens=8, temperature=0)
    answer = ask(model, "Hi", max_new_tokens=8, temperature=0)
    compiled: list[object] = []

    def traced(fn, **kwargs):  # stands in for torch.compile (slow here; the real one: test_cli_compile.py)
        compiled.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", traced)
    assert generate(model, "Every effort moves you", compile=True, max_new_tokens=8, temperature=0) == expected
    assert answer and ask(model, "Hi", compile=True, max_new_tokens=8, temperature=0) == answer
    assert len(compiled) == 1 and model.model.compiled_step is not None
