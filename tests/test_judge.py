import json
import math
import socket

import pytest

from gptlab.data.instruction import Record
from gptlab.evaluation.judge import (
    JudgeClient,
    ScoredToken,
    agreement_with_rouge_l,
    judge_file,
    judge_prompt,
    parse_score,
    reply_score,
    responses_of,
    score_summary,
    weighted_score,
)


@pytest.mark.parametrize(("reply", "score"), [
    ("85", 85), ("Score: 85", 85), ("I would give it 100.", 100), ("0", 0), ("**72**/100", 72),
    ("3.5", None), ("Rated 250, no: 90", 90), ("", None),
    ("I cannot score this.", None), ("1000", None),
])
def test_parse_score_takes_the_first_whole_number_from_0_to_100(reply, score):
    assert parse_score(reply) == score


def test_judge_prompt_is_the_books_with_the_input_when_there_is_one():
    record = Record("Rewrite the sentence.", "The cat sat.", "The feline sat.", {})
    assert judge_prompt(record, "A cat sat.") == (
        "Given the input `Rewrite the sentence.\n\nThe cat sat.` and correct output `The feline sat.`, score the "
        "model response `A cat sat.` on a scale from 0 to 100, where 100 is the best score. Respond with the "
        "integer number only.")
    assert "input `Name a colour.` and" in judge_prompt(Record("Name a colour.", "", "Red.", {}), "Blue.")


def test_summary_counts_unparsable_replies_apart():
    assert score_summary([80, None, 60, 100]) == {"records": 4, "scored": 3, "unparsable": 1, "mean": 80.0,
                                                  "median": 80, "min": 60, "max": 100}
    assert score_summary([None]) == {"records": 1, "scored": 0, "unparsable": 1}


def test_records_without_a_response_are_named():
    records = [Record("a", "", "b", {"model_response": "c"}), Record("d", "", "e", {"instruction": "d"})]
    with pytest.raises(ValueError, match=r"answers.json, record 1: no string 'model_response' field"):
        responses_of(records, "model_response", "answers.json")


def test_an_unreachable_judge_is_one_clear_error():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = JudgeClient("ollama", "llama3", f"http://127.0.0.1:{port}", timeout=5)
    with pytest.raises(OSError, match=rf"cannot reach the judge at http://127.0.0.1:{port}/api/chat: .*ollama serve"):
        client.ask("hi")
    with pytest.raises(ValueError, match="unknown judge backend 'claude'"):
        JudgeClient("claude", "x")


class JudgeThatGoesAway(JudgeClient):
    """Scores 80 until it is asked about the third record."""

    def ask(self, prompt: str) -> str:
        if "Third" in prompt:
            raise OSError("the judge went away")
        return "Score: 80"


def test_a_judge_that_fails_midway_keeps_the_scores_so_far(tmp_path):
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([{"instruction": f"{n} question?", "input": "", "output": "A.",
                                    "model_response": "B."}
                                   for n in ("First", "Second", "Third")]))
    progress = []
    result = judge_file(JudgeThatGoesAway("ollama", "llama3"), str(answers),
                        on_scored=lambda done, total: progress.append((done, total)))
    assert isinstance(result.stopped, OSError) and progress == [(1, 3), (2, 3)]
    assert result.out == tmp_path / "answers-scores.json" and result.plot.read_bytes()[:4] == b"\x89PNG"
    written = json.loads(result.out.read_text())
    assert [r["score"] for r in written["records"]] == [80, 80]
    assert [r["rouge_l"] for r in written["records"]] == [0.0, 0.0]  # "B." against "A."
    assert written["summary"] == result.summary == {"judge": "ollama:llama3", **score_summary([80, 80]),
                                                    "rouge_l_mean": 0.0, "spearman_score_vs_rouge_l": None}


def test_agreement_with_rouge_l_ranks_scores_against_overlap():
    assert agreement_with_rouge_l([10, 50, 90, None], [0.1, 0.4, 0.8, 1.0]) == {
        "rouge_l_mean": 0.575, "spearman_score_vs_rouge_l": 1.0}  # the unscored reply counts in the mean only
    assert agreement_with_rouge_l([90, 50, 10], [0.1, 0.4, 0.8])["spearman_score_vs_rouge_l"] == -1.0
    assert agreement_with_rouge_l([80, 80, 80], [0.1, 0.4, 0.8])["spearman_score_vs_rouge_l"] is None
    assert agreement_with_rouge_l([], []) == {"rouge_l_mean": None, "spearman_score_vs_rouge_l": None}


def test_a_local_judge_is_asked_through_its_chat_template(tmp_path):
    from gptlab.generation import GenerationSettings, generate
    from gptlab.loading import load_model
    from gptlab.prompts import TemplateStyle
    from template_folders import MODELS, save_template_llama

    folder = save_template_llama(tmp_path / "judge", MODELS["qwen-2.5"])
    client = JudgeClient("local", str(folder))
    question = "Score the answer 'Red.' to 'Name a colour.' from 0 to 100."  # fits the tiny context with the reply
    reply = client.ask(question)
    loaded = load_model(str(folder))
    style = TemplateStyle(loaded.meta.chat_template)
    ids = loaded.tokenizer.encode(style.prompt(question))  # Qwen's default system message, then the question
    greedy = style.answer_settings(GenerationSettings(max_new_tokens=64, temperature=0)).stopping_for(loaded.tokenizer)
    assert reply == loaded.tokenizer.decode(list(generate(loaded.model, ids, greedy))).strip()
    assert client.url is None and client.ask(question) == reply  # loaded once, deterministic


def scored(*tokens: tuple[str, dict[str, float]]) -> list[ScoredToken]:
    """A reply's tokens, each with its alternatives given as probabilities."""
    return [ScoredToken(text, math.log(top.get(text, 1.0)), tuple((alt, math.log(p)) for alt, p in top.items()))
            for text, top in tokens]


def test_the_weighted_score_of_a_split_number_weighs_each_place_given_the_digits_written_before():
    """SmolLM2 and Llama write "85" as "8", "5": after "8", 85 .6 and 80 .4 (83); at the first place,
    that 83 .5, "7" (75) .3, "9" (95) .2."""
    reply = scored(('{"', {}), ("score", {}), ('":', {}), (" ", {}), ("8", {"8": .5, "7": .3, "9": .2, "x": .1}),
                   ("5", {"5": .6, "0": .4}), ("}", {}))
    assert weighted_score(reply) == 83.0


def test_the_weighted_score_reads_each_alternative_as_the_number_it_makes_within_100():
    """GPT-2 writes " 85" as one token: each alternative is a number (the space does not matter). After "1",
    "00" is 100 and "50" (150) is no score; a first "2" with the "00" written after it reads as 20."""
    reply = scored(("Score:", {}), (" 85", {" 85": .4, " 80": .2, "90": .2, "100": .1, "8": .1}), (".", {}))
    assert weighted_score(reply) == pytest.approx(85 * .4 + 80 * .2 + 90 * .2 + 100 * .1 + 8 * .1)
    assert weighted_score(scored(("1", {"1": .5, "2": .5}), ("00", {"00": .5, "50": .5}))) == 60.0
    assert weighted_score(scored(("No", {}), (" idea", {}))) is None
    assert weighted_score(scored(("250", {"250": 1.0}))) is None


@pytest.mark.parametrize("reply, score", [('{"score": 85}', 85), ('{"score": 85.5} 7', 7), ("Score: 40", 40),
                                          ('{"score": true}', None), ("[1]", 1)])
def test_a_reply_in_the_schemas_json_gives_its_score_and_free_text_its_first_number(reply, score):
    assert reply_score(reply) == score
