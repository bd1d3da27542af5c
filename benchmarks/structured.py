"""What structured outputs cost: decode throughput at batch 8 with and without a JSON-schema grammar, same run.

One command, CPU, no network:

    .venv/bin/python benchmarks/structured.py                 # SmolLM2-135M (real weights), ~2 min
    .venv/bin/python benchmarks/structured.py --model gpt2    # GPT-2 124M, random weights, its 50k vocabulary

What is measured, in this process, through the engine `gptlab serve` runs (continuous batching): 8 prompts
submitted together, each decoding --tokens tokens greedily to the end of its budget (no end-of-text stop, and
a schema whose shortest document is longer than the budget, so every row runs every step in both settings),
free and under the schema, interleaved, the best of --repeats each. Reported: tokens/s of each and their
ratio (the target: constrained >= 0.90x free), and the grammar alone at batch 8, replayed over the
constrained run's tokens: the masks (`grammar.constrain`) and advancing each row's state, per step.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

from generate import contention_line, cpu_snapshot, machine_lines  # benchmarks/generate.py; puts src/ on the path
from gptlab.engine import Engine, EngineLimits
from gptlab.generation import GenerationSettings
from gptlab.grammar import Grammar, OutputFormat, compile_grammar, constrain
from gptlab.loading import LoadedModel, load_model

BATCH = 8
# a list of scored items, at least 64 of them: longer than any budget here, strings and numbers both
SCHEMA = {"type": "object", "properties": {"items": {"type": "array", "minItems": 64, "items": {
    "type": "object", "properties": {"name": {"type": "string"}, "score": {"type": "integer"}},
    "required": ["name", "score"], "additionalProperties": False}}},
    "required": ["items"], "additionalProperties": False}
TOPICS = ["fruits", "rivers", "cities", "birds", "metals", "planets", "poems", "tools"]


@dataclass
class Options:
    model: str = "smollm2"
    tokens: int = 64  # new tokens per row
    repeats: int = 3  # timed batches per setting, interleaved


def parse_args(argv: list[str] | None = None) -> Options:
    defaults = Options()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=defaults.model, help="any --model gptlab loads")
    p.add_argument("--tokens", type=int, default=defaults.tokens, help="new tokens per row")
    p.add_argument("--repeats", type=int, default=defaults.repeats, help="timed batches per setting")
    args = p.parse_args(argv)
    return Options(args.model, args.tokens, args.repeats)


def run_batch(engine: Engine, loaded: LoadedModel, grammar: Grammar | None,
              tokens: int) -> tuple[float, list[list[int]]]:
    """Seconds for 8 rows of `tokens` greedy tokens each, submitted together, and each row's ids."""
    tokenizer = loaded.tokenizer
    settings = GenerationSettings(max_new_tokens=tokens, temperature=0, end_of_text=False, grammar=grammar)
    started = time.perf_counter()
    completions = [engine.submit(tokenizer, tokenizer.encode(f"Score {topic} from 0 to 100, as JSON: "), settings)
                   for topic in TOPICS[:BATCH]]
    for completion in completions:
        for _ in completion:
            pass
        assert len(completion.ids) == tokens, (completion.finish_reason, len(completion.ids))
    return time.perf_counter() - started, [c.ids for c in completions]


def grammar_seconds(loaded: LoadedModel, grammar: Grammar, rows: list[list[int]]) -> tuple[float, float]:
    """Seconds per step of 8 rows that the grammar takes, replaying the rows' tokens through fresh states:
    `constrain` (the masks, applied to the logits) and advancing each row's state past its token."""
    import torch

    logits = torch.zeros(len(rows), loaded.model.config.vocab_size)
    states = [grammar.start() for _ in rows]
    masking = advancing = 0.0
    for step in range(len(rows[0])):
        started = time.perf_counter()
        constrain(logits, states, [()] * len(rows))
        masked = time.perf_counter()
        for state, ids in zip(states, rows):
            state.advance(ids[step])
        masking, advancing = masking + masked - started, advancing + time.perf_counter() - masked
    return masking / len(rows[0]), advancing / len(rows[0])


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    loaded = load_model(options.model)
    grammar = compile_grammar(loaded.tokenizer, OutputFormat("json_schema", SCHEMA))
    engine = Engine(loaded.model, EngineLimits(max_batch=BATCH))
    for line in machine_lines():
        print(line)
    print(f"model        {options.model}, batch {BATCH}, {options.tokens} new tokens per row, greedy, "
          f"vocabulary {loaded.tokenizer.vocab_size}")
    run_batch(engine, loaded, None, 8)  # warm up both paths once
    run_batch(engine, loaded, grammar, 8)
    before = cpu_snapshot()
    free, constrained, rows = [], [], []
    for _ in range(options.repeats):
        free.append(run_batch(engine, loaded, None, options.tokens)[0])
        seconds, rows = run_batch(engine, loaded, grammar, options.tokens)
        constrained.append(seconds)
    mask, advance = grammar_seconds(loaded, grammar, rows)
    after = cpu_snapshot()
    engine.close()
    made = BATCH * options.tokens
    free_rate, constrained_rate = made / min(free), made / min(constrained)
    print(f"free         {free_rate:8.1f} tok/s (best of {options.repeats}: {min(free):.2f} s)")
    print(f"json_schema  {constrained_rate:8.1f} tok/s (best of {options.repeats}: {min(constrained):.2f} s)")
    print(f"ratio        {constrained_rate / free_rate:.3f}x free (target >= 0.90x)")
    print(f"mask         {mask * 1e3:.3f} ms per step of {BATCH} rows ({mask * 1e3 / BATCH:.3f} ms per token); "
          f"advancing the states {advance * 1e3:.3f} ms per step")
    print(contention_line(before, after))
    print("example      " + loaded.tokenizer.decode(rows[0])[:120])


if __name__ == "__main__":
    main()
