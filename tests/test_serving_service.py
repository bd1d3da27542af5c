"""The model side of the server without HTTP: a batch of prompts against the engine's limits and the vocabulary."""

import pytest

from gptlab.engine import Engine, EngineLimits
from gptlab.loading import load_model
from gptlab.prompts import prompt_style
from gptlab.serving.api import APIError, CompletionBody, completion_request
from gptlab.serving.service import ModelService


@pytest.fixture(scope="module")
def service():
    loaded = load_model("gpt-tiny", seed=0)
    engine = Engine(loaded.model, EngineLimits(max_batch=2, max_queue=2))
    yield ModelService(loaded, prompt_style("alpaca"), "tiny", engine)
    engine.close(drain=False)


def refused(service: ModelService, body: dict) -> APIError:
    with pytest.raises(APIError) as error:
        service.completion(completion_request(CompletionBody.model_validate(body)))
    assert error.value.status == 400
    return error.value


def test_a_batch_larger_than_the_engine_ever_holds_is_a_400_not_a_429(service):
    """Four completions fit (2 decoding + 2 waiting); five never would, so retrying cannot help."""
    answer = service.completion(completion_request(CompletionBody.model_validate(
        {"prompt": [[1, 2], [3]], "n": 2, "max_tokens": 1, "temperature": 0})))
    assert [len(ids) for ids in answer.prompt_ids] == [2, 1] and len(answer.choices) == 4
    texts = ["".join(completion) for completion in answer.choices]  # prompt-major: greedy choices of a prompt agree
    assert texts[0] == texts[1] and texts[2] == texts[3]
    assert all(len(c.ids) <= 1 and c.finish_reason in ("stop", "length") for c in answer.choices)
    error = refused(service, {"prompt": [[1], [2], [3], [4], [5]], "max_tokens": 1})
    assert error.message == "this server holds at most 4 completions (--max-batch plus --max-queue); the request " \
                            "asks for 5"


def test_token_ids_outside_the_vocabulary_and_prompts_past_the_context_name_their_place(service):
    error = refused(service, {"prompt": [[1, 2], [3, 50257]], "max_tokens": 1})
    assert error.param == "prompt[1][1]" and "token id 50257 is not in this model's vocabulary (0..50256)" in \
        error.message
    context = service.loaded.model.config.context_length
    error = refused(service, {"prompt": [[1], [2] * context], "max_tokens": 1})
    assert error.param == "prompt[1]" and error.code == "context_length_exceeded"
