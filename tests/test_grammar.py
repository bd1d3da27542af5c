"""Constrained decoding: random weights under a grammar still write JSON that validates, row by row."""

import json

import jsonschema
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gptlab.config import GPTConfig
from gptlab.engine import Engine, EngineLimits
from gptlab.generation import Completion, GenerationSettings, generate_batch
from gptlab.grammar import GrammarError, OutputFormat, compile_grammar
from gptlab.model import GPT
from gptlab.tokenizer import CharTokenizer, get_tokenizer

TOKENIZER = get_tokenizer("gpt2")
CONTEXT = 512
PROMPT = TOKENIZER.encode("Answer in JSON:")


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=CONTEXT, n_layer=1, n_head=2,
                         n_embd=16)).eval()


@pytest.fixture(scope="module")
def engine(model):
    running = Engine(model, EngineLimits(max_batch=4))
    yield running
    running.close()


def leaf() -> st.SearchStrategy[dict]:
    integer = st.tuples(st.integers(-999, 999), st.integers(0, 999)).map(
        lambda pair: {"type": "integer", "minimum": pair[0], "maximum": pair[0] + pair[1]})
    return st.one_of(
        st.just({"type": "boolean"}), st.just({"type": "null"}), integer,
        st.integers(0, 3).map(lambda n: {"type": "string", "maxLength": n}),
        st.lists(st.one_of(st.integers(-50, 50), st.text("abcxyz", max_size=3)), min_size=1, max_size=3,
                 unique=True).map(lambda options: {"enum": options}),
    )


def composite(inner: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    array = st.tuples(inner, st.integers(0, 3)).map(lambda p: {"type": "array", "items": p[0], "maxItems": p[1]})
    obj = st.dictionaries(st.text("abcdef", min_size=1, max_size=4), inner, min_size=1, max_size=3).flatmap(
        lambda props: st.sets(st.sampled_from(sorted(props))).map(lambda required: {
            "type": "object", "properties": props, "required": sorted(required), "additionalProperties": False}))
    return st.one_of(array, obj)


SCHEMAS = st.recursive(leaf(), composite, max_leaves=6)


def longest(schema: dict) -> int:
    """Bytes of the longest document `schema` allows, written as the grammar writes JSON (", ", ": "); each
    string character counted as a 12-byte escaped surrogate pair, the worst case. Tokens are never fewer bytes."""
    if "enum" in schema:
        return max(12 * len(json.dumps(option)) for option in schema["enum"])
    kind = schema["type"]
    if kind == "object":
        return 2 + sum(12 * len(key) + 6 + longest(value) for key, value in schema["properties"].items())
    if kind == "array":
        return 2 + schema["maxItems"] * (longest(schema["items"]) + 2)
    if kind == "string":
        return 2 + 12 * schema["maxLength"]
    if kind == "integer":
        return max(len(str(schema["minimum"])), len(str(schema["maximum"])))
    return {"boolean": 5, "null": 4}[kind]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(schemas=st.lists(SCHEMAS.filter(lambda s: longest(s) <= CONTEXT - 32), min_size=1, max_size=4),
       seed=st.integers(0, 2**31))
def test_every_row_of_a_batch_writes_json_its_own_schema_validates(engine, schemas, seed):
    """Random weights, sampled at temperature 1: only the grammar makes the text JSON. The token budget
    is the schema's longest document, so every answer must end by itself, whole."""
    completions = [engine.submit(TOKENIZER, PROMPT, GenerationSettings(
        max_new_tokens=longest(schema), temperature=1.0, seed=seed + row,
        grammar=compile_grammar(TOKENIZER, OutputFormat("json_schema", schema)))) for row, schema in enumerate(schemas)]
    for schema, completion in zip(schemas, completions):
        text = "".join(completion)
        assert completion.finish_reason == "stop", (schema, text)
        jsonschema.validate(json.loads(text), schema)


def test_a_constrained_row_leaves_its_neighbours_as_they_are_alone(model, engine):
    """The mask is per row: an unconstrained request beside constrained ones samples what it samples alone,
    and the Python API's inline decoding writes what the engine writes for the same seed."""
    free = GenerationSettings(max_new_tokens=12, temperature=1.0, seed=7)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    constrained = GenerationSettings(max_new_tokens=20, temperature=1.0, seed=8,
                                     grammar=compile_grammar(TOKENIZER, OutputFormat("json_schema", schema)))
    alone = "".join(Completion(model, TOKENIZER, PROMPT, free))
    together = [engine.submit(TOKENIZER, PROMPT, s) for s in (constrained, free, constrained)]
    texts = ["".join(c) for c in together]
    assert texts[1] == alone
    assert json.loads(texts[0]) in ({"ok": True}, {"ok": False})
    assert texts[0] == "".join(Completion(model, TOKENIZER, PROMPT, constrained))


def test_the_python_apis_batch_decoding_ends_each_row_when_its_grammar_is_complete():
    """No stop ids at all: a row whose text is whole stops there while the others still write. Weights
    drawn wide, so that each prompt picks its own tokens greedily (and the rows end at different steps)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=TOKENIZER.vocab_size, context_length=64, n_layer=1, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 1.0)
    schema = {"type": "string", "maxLength": 6}
    grammar = compile_grammar(TOKENIZER, OutputFormat("json_schema", schema))
    rows = generate_batch(model, [PROMPT, PROMPT[:2], PROMPT[:1]], GenerationSettings(
        max_new_tokens=longest(schema), temperature=0, grammar=grammar))
    assert len({len(ids) for ids in rows}) > 1
    for ids in rows:
        jsonschema.validate(json.loads(TOKENIZER.decode(ids)), schema)


def test_json_mode_makes_an_object_or_runs_out_of_tokens(engine):
    """Any JSON object has no length bound: a random model may still be writing when its budget ends."""
    grammar = compile_grammar(TOKENIZER, OutputFormat("json_object"))
    for seed in range(4):
        completion = engine.submit(TOKENIZER, PROMPT, GenerationSettings(max_new_tokens=24, temperature=1.0,
                                                                         seed=seed, grammar=grammar))
        text = "".join(completion)
        assert text.startswith("{")
        if completion.finish_reason == "stop":
            assert isinstance(json.loads(text), dict)
        else:
            assert completion.finish_reason == "length" and len(completion.ids) == 24


@pytest.mark.parametrize("schema, part", [
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "/$defs/missing"),
    ({"type": "string", "pattern": "(?<=x)a"}, "look-around"),
    ({"type": "wheel"}, "wheel"),
])
def test_a_schema_the_engine_cannot_compile_is_refused_naming_the_part(schema, part):
    with pytest.raises(GrammarError, match="cannot be compiled") as refused:
        compile_grammar(TOKENIZER, OutputFormat("json_schema", schema))
    assert part in str(refused.value) and "\n" not in str(refused.value)


def test_a_tokenizer_without_an_end_token_is_refused_in_one_line():
    with pytest.raises(GrammarError, match="end-of-text"):
        compile_grammar(CharTokenizer("ab{}"), OutputFormat("json_object"))
