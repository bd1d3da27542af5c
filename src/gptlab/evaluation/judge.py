"""LLM-as-a-judge: a larger model scores each response from 0 to 100 against the reference output.

The book's chapter 7 method: one prompt per record, asking for the integer only, with a fixed
seed and temperature 0. The judge is any model behind Ollama's `/api/chat` or an
OpenAI-compatible `/v1/chat/completions` (OpenAI, vLLM, llama.cpp, `gptlab serve`), reached with
the standard library's HTTP client, or a model gptlab loads here ("local"), asked as `gptlab chat`
asks it: through its chat template or prompt style.

An OpenAI-compatible judge is asked for `{"score": <integer 0..100>}` under a JSON schema
(`response_format`), so even a small model's every reply holds a score, and for the alternatives of
every token (`logprobs`), from which the probability-weighted score of G-Eval (Liu et al., 2023) is
read: steadier than one sampled number. A server that refuses either (a 400) is asked without it.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptlab.data.instruction import Record, load_records
from gptlab.evaluation.metrics import rouge_l

BACKENDS = ("ollama", "openai", "local")
LOCAL_REPLY_TOKENS = 64  # a local judge's reply: the score, and room for a few words around it
DEFAULT_URLS = {"ollama": "http://localhost:11434", "openai": "https://api.openai.com/v1"}
JUDGE_PROMPT = ("Given the input `{input}` and correct output `{output}`, score the model response "
                "`{response}` on a scale from 0 to 100, where 100 is the best score. "
                "Respond with the integer number only.")
SCORE_SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100}},
                "required": ["score"], "additionalProperties": False}
TOP_LOGPROBS = 20  # alternatives per token asked of an OpenAI-compatible judge (OpenAI's most)
# What an OpenAI-compatible judge is asked for besides its reply, most useful first; the first one the
# server accepts is kept (a 400 moves on to the next).
OPENAI_EXTRAS: tuple[dict[str, Any], ...] = (
    {"response_format": {"type": "json_schema", "json_schema": {"name": "score", "schema": SCORE_SCHEMA,
                                                                "strict": True}},
     "logprobs": True, "top_logprobs": TOP_LOGPROBS},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "score", "schema": SCORE_SCHEMA,
                                                                "strict": True}}},
    {"logprobs": True, "top_logprobs": TOP_LOGPROBS},
    {},
)
_INTEGER = re.compile(r"(?<![\d.])\d{1,3}(?!\d|\.\d)")  # not part of a longer or decimal number


def judge_prompt(record: Record, response: str) -> str:
    """The book's scoring prompt for one record and a model's response to it."""
    task = record.instruction + (f"\n\n{record.input}" if record.input else "")
    return JUDGE_PROMPT.format(input=task, output=record.output, response=response)


def parse_score(reply: str) -> int | None:
    """The first whole number from 0 to 100 in a judge's reply ("Score: 85" → 85), else None."""
    for match in _INTEGER.finditer(reply):
        if 0 <= int(match.group()) <= 100:
            return int(match.group())
    return None


def reply_score(reply: str) -> int | None:
    """The score of a reply: `{"score": N}` as the schema asks for it, else the first whole number from
    0 to 100 in free text."""
    try:
        score = json.loads(reply).get("score")
    except (ValueError, AttributeError):
        return parse_score(reply)
    return score if isinstance(score, int) and not isinstance(score, bool) and 0 <= score <= 100 \
        else parse_score(reply)


@dataclass(frozen=True)
class ScoredToken:
    """A token of a reply, as OpenAI's `logprobs.content` reports it: its text, its log-probability and
    the most likely alternatives at its place (text, log-probability)."""

    text: str
    logprob: float
    top: tuple[tuple[str, float], ...]


def weighted_score(tokens: Sequence[ScoredToken]) -> float | None:
    """G-Eval's probability-weighted score: the expected value of the number the reply starts, from the
    alternatives at each of its tokens; None when the reply holds no number from 0 to 100.

    A number may take several tokens ("85" is one token in GPT-2's vocabulary, "8" then "5" in Llama's
    and SmolLM2's). At each of them, every alternative made of digits counts with its probability: the
    token the judge wrote stands for the expected value of what follows it; another stands for the number
    it would make with the rest of the written digits, cut to stay within 0..100 (after "1", "0", "0",
    a first "8" reads as 80)."""
    start = next((i for i, token in enumerate(tokens) if any(c.isdigit() for c in token.text)), None)
    if start is None:
        return None
    number: list[ScoredToken] = []
    for token in tokens[start:]:
        if not _digits(token.text if number else token.text.strip()):
            break
        number.append(token)
    written = [token.text.strip() if place == 0 else token.text for place, token in enumerate(number)]
    if not written or int("".join(written)) > 100:
        return None
    return round(_expected(number, written, 0), 2)


def _expected(number: list[ScoredToken], written: list[str], place: int) -> float:
    """The expected score given the judge's first `place` tokens of the number."""
    if place == len(written):
        return float(int("".join(written)))
    before, after = "".join(written[:place]), "".join(written[place + 1:])
    weights: dict[str, float] = {}
    for text, logprob in number[place].top:
        text = text.strip() if place == 0 else text  # " 8" and "8" are the same digit
        if _digits(text) and text != written[place]:
            weights[text] = weights.get(text, 0.0) + math.exp(logprob)
    total = math.exp(number[place].logprob)
    value = total * _expected(number, written, place + 1)
    for text, p in weights.items():
        rest = after
        while rest and int(before + text + rest) > 100:
            rest = rest[:-1]
        if int(before + text + rest) <= 100:
            value, total = value + p * int(before + text + rest), total + p
    return value / total


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


@dataclass(frozen=True)
class Verdict:
    """A judge's answer about one response: its reply, the score in it, and (when the judge sent
    logprobs) the probability-weighted score."""

    reply: str
    score: int | None
    weighted: float | None = None


class JudgeRefused(OSError):
    """The judge's server answered 400: it does not take something the request asked for."""


@dataclass
class JudgeClient:
    """Asks a judge model one question at a time, deterministically (temperature 0, fixed seed)."""

    backend: str  # "ollama", "openai" (any OpenAI-compatible server) or "local" (loaded here)
    model: str  # the judge's name on that server, e.g. "llama3" or "gpt-4o-mini"; local: any gptlab --model
    url: str | None = None  # server base URL; default: local Ollama, or OpenAI's API (unused locally)
    api_key: str | None = None  # sent as a Bearer token (OpenAI-compatible servers)
    seed: int = 123
    timeout: float = 300.0  # seconds per answer: a large judge on a CPU is slow
    verify: bool = True  # local: check a gptlab folder against its manifest.json before loading it
    _loaded: Any = field(default=None, init=False, repr=False)  # the local judge, loaded on its first question
    _extras: int = field(default=0, init=False, repr=False)  # OPENAI_EXTRAS[_extras]: what the server takes

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown judge backend {self.backend!r}; known: {', '.join(BACKENDS)}")
        if self.backend != "local":
            self.url = (self.url or DEFAULT_URLS[self.backend]).rstrip("/")

    def ask(self, prompt: str) -> str:
        """The judge's reply to one user message."""
        if self.backend == "local":
            return self._ask_here(prompt)
        messages = [{"role": "user", "content": prompt}]
        if self.backend == "ollama":
            body = {"model": self.model, "messages": messages, "stream": False,
                    "options": {"temperature": 0, "seed": self.seed, "num_ctx": 2048}}
            return self._post("/api/chat", body)["message"]["content"] or ""
        return self.verdict(prompt).reply

    def verdict(self, prompt: str) -> Verdict:
        """The judge's reply to one scoring question and its scores; an OpenAI-compatible judge is asked
        for JSON under `SCORE_SCHEMA` with logprobs, or as much of it as the server takes."""
        if self.backend != "openai":
            reply = self.ask(prompt)
            return Verdict(reply, parse_score(reply))
        endpoint = "/chat/completions" if self.url.endswith("/v1") else "/v1/chat/completions"
        body = {"model": self.model, "messages": [{"role": "user", "content": prompt}], "temperature": 0,
                "seed": self.seed}
        for extras in range(self._extras, len(OPENAI_EXTRAS)):
            try:
                choice = self._post(endpoint, {**body, **OPENAI_EXTRAS[extras]})["choices"][0]
            except JudgeRefused:
                if extras == len(OPENAI_EXTRAS) - 1:
                    raise
                continue
            self._extras = extras  # kept: a server that refused something refuses it every time
            reply = choice["message"]["content"] or ""
            content = (choice.get("logprobs") or {}).get("content") or []
            tokens = [ScoredToken(t["token"], t["logprob"],
                                  tuple((a["token"], a["logprob"]) for a in t.get("top_logprobs") or []))
                      for t in content]
            return Verdict(reply, reply_score(reply), weighted_score(tokens) if tokens else None)
        raise AssertionError("unreachable: the last request either answers or raises")

    def _ask_here(self, prompt: str) -> str:
        """The reply of the model `model` names, loaded in this process once: framed by its chat template
        or prompt style, greedy, as `gptlab.ask` answers."""
        from gptlab.api import ask  # torch and the model: only for this backend
        from gptlab.loading import load_model

        if self._loaded is None:
            self._loaded = load_model(self.model, verify=self.verify)
        return ask(self._loaded, prompt, temperature=0, seed=self.seed, max_new_tokens=LOCAL_REPLY_TOKENS)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", errors="replace")[:500]
            kind = JudgeRefused if err.code == 400 else OSError
            raise kind(f"judge at {self.url}{path} answered HTTP {err.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError) as err:
            hint = " (is `ollama serve` running, and the model pulled?)" if self.backend == "ollama" else ""
            raise OSError(f"cannot reach the judge at {self.url}{path}: {getattr(err, 'reason', err)}{hint}") from None


def judge_records(client: JudgeClient, records: list[Record], responses: list[str]) -> Iterator[dict[str, Any]]:
    """Each record as read, with the judge's reply, its parsed score (None when it has none), the
    probability-weighted score (when the judge sends logprobs) and the response's ROUGE-L against the
    correct output (a judge-free check of the same response)."""
    for record, response in zip(records, responses, strict=True):
        verdict = client.verdict(judge_prompt(record, response))
        weighted = {"weighted_score": verdict.weighted} if verdict.weighted is not None else {}
        yield {**record.original, "judge_reply": verdict.reply, "score": verdict.score, **weighted,
               "rouge_l": round(rouge_l(record.output, response), 4)}


def score_summary(scores: list[int | None]) -> dict[str, Any]:
    """Mean, median, spread and count of parsed scores, and how many replies had no score."""
    parsed = [s for s in scores if s is not None]
    summary: dict[str, Any] = {"records": len(scores), "scored": len(parsed), "unparsable": len(scores) - len(parsed)}
    if parsed:
        summary.update(mean=round(statistics.fmean(parsed), 2), median=statistics.median(parsed),
                       min=min(parsed), max=max(parsed))
    return summary


def agreement_with_rouge_l(scores: Sequence[float | None], rouge: list[float]) -> dict[str, Any]:
    """Mean ROUGE-L, and the Spearman rank correlation of the judge's scores with it over the
    scored responses: a judge that reads the responses should rank them roughly as word overlap
    with the correct output does (rho well above 0); a weak judge scores them at random (near 0).
    None where it is undefined (fewer than 3 scored, or constant scores)."""
    from scipy.stats import spearmanr  # scikit-learn's dependency; imported only when needed

    pairs = [(s, r) for s, r in zip(scores, rouge, strict=True) if s is not None]
    rho = None
    if len(pairs) >= 3 and len({s for s, _ in pairs}) > 1 and len({r for _, r in pairs}) > 1:
        rho = round(float(spearmanr([s for s, _ in pairs], [r for _, r in pairs])[0]), 3)  # [0]: any SciPy
    mean = round(statistics.fmean(rouge), 4) if rouge else None
    return {"rouge_l_mean": mean, "spearman_score_vs_rouge_l": rho}


def responses_of(records: list[Record], field: str, source: str) -> list[str]:
    """Each record's model response (`field`), or an error naming the first record without one."""
    responses = []
    for index, record in enumerate(records):
        response = record.original.get(field)
        if not isinstance(response, str):
            raise ValueError(f"{source}, record {index}: no string {field!r} field; make responses with "
                             "`gptlab respond` (or name the field with --response-field)")
        responses.append(response)
    return responses


@dataclass
class JudgeResult:
    """What `judge_file` wrote, and whether it got through every record."""

    summary: dict[str, Any]  # the file's "summary": judge, records, scored, unparsable, mean, median, min, max,
    # rouge_l_mean, spearman_score_vs_rouge_l
    out: Path  # the records with judge_reply and score, and the summary
    plot: Path  # the histogram of the scores
    stopped: BaseException | None = None  # Ctrl-C or a failing judge: the scores before it are saved


def judge_file(client: JudgeClient, responses: str, out: str | None = None,
               fields: tuple[str, str, str] = ("instruction", "input", "output"),
               response_field: str = "model_response",
               on_scored: Callable[[int, int], None] | None = None) -> JudgeResult:
    """Score every record of a responses file (e.g. a run's test-set responses) and write the
    scores, their summary and a histogram (default: beside it, as `<name>-scores.json/.png`).

    `on_scored(done, total)` follows the progress. A judge that fails midway, or Ctrl-C, keeps
    the scores so far: they are written, and the result says what stopped it.
    """
    records = load_records(responses, *fields)
    answers = responses_of(records, response_field, responses)
    source = Path(responses)
    path = Path(out) if out else source.with_name(f"{source.stem}-scores.json")
    rows: list[dict[str, Any]] = []
    stopped: BaseException | None = None
    try:
        for row in judge_records(client, records, answers):
            rows.append(row)
            if on_scored is not None:
                on_scored(len(rows), len(records))
    except (KeyboardInterrupt, OSError) as err:
        stopped = err
    return _write_scores(rows, f"{client.backend}:{client.model}", path, source.name, stopped)


def _write_scores(rows: list[dict[str, Any]], judge: str, path: Path, title: str,
                  stopped: BaseException | None) -> JudgeResult:
    """The scored records and their summary as JSON, and the histogram beside them."""
    from gptlab.evaluation.plots import score_histogram  # matplotlib: imported only when needed

    scores, rouge = [r["score"] for r in rows], [r["rouge_l"] for r in rows]
    summary = {"judge": judge, **score_summary(scores), **agreement_with_rouge_l(scores, rouge)}
    weighted = [r.get("weighted_score") for r in rows]
    if any(w is not None for w in weighted):
        values = [w for w in weighted if w is not None]
        rho = agreement_with_rouge_l(weighted, rouge)["spearman_score_vs_rouge_l"]
        summary["weighted"] = {"scored": len(values), "mean": round(statistics.fmean(values), 2),
                               "spearman_vs_rouge_l": rho}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"summary": summary, "records": rows}, indent=2, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    plot = score_histogram([r["score"] for r in rows if r["score"] is not None], path.with_suffix(".png"),
                           f"{title}: {judge}")
    return JudgeResult(summary, path, plot, stopped)
