"""`gptlab judge`: score instruction responses with a judge model; the run itself is `judge_file`'s."""

from __future__ import annotations

import argparse
import json
import os
import sys

from tqdm import tqdm

from gptlab.cli.common import add_record_field_flags
from gptlab.evaluation.judge import BACKENDS, JudgeClient, judge_file
from gptlab.evaluation.responses import RESPONSES_FILE

JUDGE = ("LLM-as-a-judge, as in the book's chapter 7: a judge model scores each model_response against the record's "
         "output from 0 to 100 (temperature 0, fixed seed). Writes the records with judge_reply and score, a summary, "
         "and a histogram PNG.")


def add_judge(commands: argparse._SubParsersAction) -> None:
    judge = commands.add_parser(
        "judge", help="score instruction responses 0-100 with a judge model (Ollama, OpenAI-compatible or local)",
        description=JUDGE)
    judge.add_argument("responses",
                       help=f"a JSON/JSONL file of records with model_response (e.g. a run's {RESPONSES_FILE})")
    judge.add_argument("--judge-model", required=True,
                       help="the judge's model name, e.g. llama3 (Ollama) or gpt-4o-mini; with --backend local, "
                            "any --model gptlab loads (smollm2, a Hugging Face instruct folder, a .gguf file)")
    judge.add_argument("--backend", choices=BACKENDS, default="ollama",
                       help="ollama (/api/chat), openai (any OpenAI-compatible /v1/chat/completions) or local (the "
                            "model loaded here, asked through its chat template; default ollama)")
    judge.add_argument("--url", default=None, help="server base URL (default: http://localhost:11434 for ollama, "
                                                    "https://api.openai.com/v1 for openai)")
    judge.add_argument("--api-key", default=None, help="Bearer token (openai default: $OPENAI_API_KEY)")
    judge.add_argument("--out", default=None, help="JSON file to write (default: <responses>-scores.json)")
    judge.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    judge.add_argument("--no-verify", dest="verify", action="store_false",
                       help="with --backend local: skip the check of a gptlab folder's files against its manifest.json")
    add_record_field_flags(judge)
    judge.add_argument("--response-field", default="model_response",
                       help="record field holding the response to score (default model_response)")
    judge.set_defaults(func=cmd_judge)


def cmd_judge(args: argparse.Namespace) -> int:
    api_key = args.api_key or (os.environ.get("OPENAI_API_KEY") if args.backend == "openai" else None)
    client = JudgeClient(args.backend, args.judge_model, args.url, api_key, verify=args.verify)
    bar: tqdm | None = None

    def on_scored(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="judging", unit="response", dynamic_ncols=True)
        bar.update(done - bar.n)

    try:
        result = judge_file(client, args.responses, args.out, (args.instruction_field, args.input_field,
                                                               args.output_field), args.response_field, on_scored)
    finally:
        if bar is not None:
            bar.close()
    summary, status = result.summary, 0
    if result.stopped is not None:
        status = 130 if isinstance(result.stopped, KeyboardInterrupt) else 1
        reason = "interrupted" if status == 130 else f"error: {result.stopped}"
        print(f"{reason}: saved the {summary['records']} scores so far", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        scored = (f"mean {summary['mean']:.2f} (median {summary['median']}, min {summary['min']}, max "
                  f"{summary['max']})" if summary["scored"] else "no scores")
        rho = summary["spearman_score_vs_rouge_l"]
        print(f"{summary['judge']} scored {summary['scored']}/{summary['records']} responses: {scored}; "
              f"{summary['unparsable']} replies without a score")
        if summary["rouge_l_mean"] is not None:
            print(f"ROUGE-L of the responses against the outputs: mean {summary['rouge_l_mean']:.3f}; rank "
                  f"agreement of the scores with it (Spearman): {_rho(rho)}")
        weighted = summary.get("weighted")
        if weighted is not None:
            print(f"probability-weighted scores (G-Eval, from the judge's logprobs) of {weighted['scored']} replies: "
                  f"mean {weighted['mean']:.2f}; Spearman with ROUGE-L: {_rho(weighted['spearman_vs_rouge_l'])}")
        print(f"wrote {result.out} and {result.plot}")
    return status


def _rho(rho: float | None) -> str:
    return "undefined" if rho is None else f"{rho:+.2f}"
