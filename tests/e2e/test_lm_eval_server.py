"""`gptlab serve` as lm-evaluation-harness's backend: batches of token ids in one request, every prompt scored
exactly as sent, and lm-eval's numbers over HTTP equal to its own Hugging Face backend's on the same weights."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from e2e.commands import gptlab
from e2e.servers import Server, start_server
from gptlab.tokenizer import GPT2Tokenizer

TASKS = Path(__file__).resolve().parents[1] / "fixtures" / "lm_eval"
PROMPT = "Below is an instruction that describes a task. Write a response that appropriately completes the request." \
         "\n\n### Instruction:\nName a fruit that is red.\n\n### Response:\n"
# the alpaca framing the 16-record model was fine-tuned with, as a chat template in its exported folder: the
# server and lm-eval's Hugging Face backend then frame chat messages alike
ALPACA_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}" + PROMPT.split("Name a")[0] +
                   "{{ m['content'] }}\n\n### Response:\n{% elif m['role'] == 'assistant' %}{{ m['content'] }}"
                   "<|endoftext|>{% endif %}{% endfor %}")


@pytest.fixture(scope="module")
def hf_folder(overfit_run, tmp_path_factory) -> Path:
    """The 16-record model exported as a Hugging Face folder, with its prompt style as a chat template."""
    folder = tmp_path_factory.mktemp("lm-eval") / "hf"
    done = gptlab("convert", str(overfit_run[0]), str(folder), "--to", "hf")
    assert done.returncode == 0, done.stderr
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "chat_template": ALPACA_TEMPLATE}))
    return folder


@pytest.fixture(scope="module")
def server(hf_folder, tmp_path_factory) -> Iterator[Server]:
    running = start_server(str(hf_folder), tmp_path_factory.mktemp("lm-eval-server") / "server.log", "--name", "tiny")
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def test_a_batch_in_any_of_the_four_forms_is_answered_in_one_response(client):
    tokenizer = GPT2Tokenizer()
    red, word = PROMPT, PROMPT.replace("Name a fruit that is red.", "Repeat the word.\n\n### Input:\nblue")
    alone = [client.completions.create(model="tiny", prompt=p, max_tokens=8, temperature=0).choices[0].text
             for p in (red, word)]
    assert alone == ["A red fruit is number 0.", "blue blue blue"]
    for prompt in ([red, word], [tokenizer.encode(red), tokenizer.encode(word)]):
        batch = client.completions.create(model="tiny", prompt=prompt, max_tokens=8, temperature=0, n=2)
        # OpenAI's order: prompt-major, n choices each
        assert [(c.index, c.text) for c in batch.choices] == [(0, alone[0]), (1, alone[0]), (2, alone[1]),
                                                               (3, alone[1])]
        assert batch.usage.prompt_tokens == len(tokenizer.encode(red)) + len(tokenizer.encode(word))
    echoed = client.completions.create(model="tiny", prompt=[red, word], max_tokens=8, temperature=0, n=2, echo=True)
    assert [c.text for c in echoed.choices] == [red + alone[0]] * 2 + [word + alone[1]] * 2
    one = client.completions.create(model="tiny", prompt=tokenizer.encode(red), max_tokens=8, temperature=0)
    assert [c.text for c in one.choices] == alone[:1]
    streamed = client.completions.create(model="tiny", prompt=[red, word], max_tokens=8, temperature=0, stream=True)
    texts = ["", ""]
    for chunk in streamed:
        texts[chunk.choices[0].index] += chunk.choices[0].text
    assert texts == alone


def test_token_ids_are_scored_exactly_as_sent(client):
    """Ids a tokenizer would never produce ("Na" "me" for "Name") reach the model as they are, as lm-eval's
    context + continuation do; the answer's logprobs end with the end-of-text id that stopped it."""
    tokenizer = GPT2Tokenizer()
    head, tail = PROMPT.split("Name")
    ids = [*tokenizer.encode(head), *tokenizer.encode("Na"), *tokenizer.encode("me"), *tokenizer.encode(tail)]
    assert ids != tokenizer.encode(PROMPT)
    scored = client.completions.create(model="tiny", prompt=[ids, tokenizer.encode(PROMPT)], max_tokens=1, echo=True,
                                       logprobs=1, temperature=0)
    split, whole = (c.logprobs for c in scored.choices)
    assert split.tokens[:len(ids)] == [tokenizer.decode([i]) for i in ids] and len(split.tokens) == len(ids) + 1
    assert scored.usage.prompt_tokens == len(ids) + len(tokenizer.encode(PROMPT))
    assert scored.choices[0].text.startswith(PROMPT) and split.token_logprobs[0] is None
    named = len(tokenizer.encode(head))  # where "Na" is scored, and "Name" in the other prompt
    assert split.token_logprobs[:named] == whole.token_logprobs[:named]
    assert split.tokens[named] == "Na" and whole.tokens[named] == "Name"
    assert split.token_logprobs[named] < whole.token_logprobs[named]  # not the token the model learnt
    answer = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=20, temperature=0, logprobs=1)
    logprobs = answer.choices[0].logprobs
    assert answer.choices[0].finish_reason == "stop" and answer.choices[0].text == "A red fruit is number 0."
    assert logprobs.tokens[-1] == "<|endoftext|>" and "".join(logprobs.tokens[:-1]) == answer.choices[0].text
    assert logprobs.token_logprobs[-1] == max(logprobs.top_logprobs[-1].values())  # greedy: the likeliest


@pytest.mark.parametrize(("prompt", "param", "message"), [
    ([[15, 16], [15, 50257]], "prompt[1][1]", "token id 50257 is not in this model's vocabulary (0..50256)"),
    ([50300], "prompt[0]", "token id 50300 is not in this model's vocabulary"),
    ([[15], [-1]], "prompt[1][0]", "greater than or equal to 0"),
    ([[15], "text"], "prompt", "a string, a list of strings, a list of token ids (integers) or a list of token-id"),
    ([[]], "prompt[0]", "at least 1 item"),
])
def test_bad_token_ids_are_400s_naming_the_place(client, prompt, param, message):
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="tiny", prompt=prompt, max_tokens=1)
    error = refused.value.body
    assert error["param"] == param and message in error["message"], error


def evaluate(model: str, model_args: str, tasks: list[str], monkeypatch, **options) -> dict[str, list]:
    """lm-eval on the local tasks in-process: each task's metric and each document's responses."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    monkeypatch.chdir(TASKS)  # the tasks' data_files are relative
    results = lm_eval.simple_evaluate(
        model=model, model_args=model_args, tasks=tasks, log_samples=True, device="cpu",
        task_manager=TaskManager(include_path=str(TASKS), include_defaults=False),
        random_seed=None, numpy_random_seed=None, torch_random_seed=None, **options)  # the process's RNGs stay
    return {task: [results["results"][task], [s["resps"] for s in samples]]
            for task, samples in results["samples"].items()}


def test_lm_eval_local_completions_equals_its_hugging_face_backend(server, hf_folder, monkeypatch):
    """lm-eval's defaults (token ids; batched, here 8 a request): loglikelihood per choice within float error,
    accuracy within one item, greedy answers equal."""
    tasks = ["gptlab_serve_choice", "gptlab_serve_answer"]
    served = evaluate("local-completions", f"model=tiny,base_url={server.url}/v1/completions,tokenizer={hf_folder},"
                                           "batch_size=8,max_length=128", tasks, monkeypatch)
    reference = evaluate("hf", f"pretrained={hf_folder},batch_size=16", tasks, monkeypatch)
    (ours, our_choices), (theirs, their_choices) = served["gptlab_serve_choice"], reference["gptlab_serve_choice"]
    assert abs(ours["acc,none"] - theirs["acc,none"]) <= 1 / 16 and theirs["acc,none"] >= 0.75
    flat = [(ll, greedy) for doc in our_choices for [(ll, greedy)] in doc]
    expected = [(ll, greedy) for doc in their_choices for [(ll, greedy)] in doc]
    assert len(flat) == 64 and [ll for ll, _ in flat] == pytest.approx([ll for ll, _ in expected], abs=1e-4)
    assert [greedy for _, greedy in flat] == [greedy for _, greedy in expected]
    (ours, our_answers), (theirs, their_answers) = served["gptlab_serve_answer"], reference["gptlab_serve_answer"]
    assert our_answers == their_answers and ours["exact_match,none"] == theirs["exact_match,none"] == 1.0


def test_lm_eval_local_chat_completions_equals_its_hugging_face_backend(server, hf_folder, monkeypatch):
    """Chat messages framed by the folder's template on the server, as lm-eval frames them in-process."""
    served = evaluate("local-chat-completions", f"model=tiny,base_url={server.url}/v1/chat/completions",
                      ["gptlab_serve_chat"], monkeypatch, apply_chat_template=True)
    reference = evaluate("hf", f"pretrained={hf_folder},batch_size=16", ["gptlab_serve_chat"], monkeypatch,
                         apply_chat_template=True)
    assert served["gptlab_serve_chat"][1] == reference["gptlab_serve_chat"][1]
    assert served["gptlab_serve_chat"][0]["exact_match,none"] == reference["gptlab_serve_chat"][0][
        "exact_match,none"] == 1.0
