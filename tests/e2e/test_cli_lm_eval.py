"""`gptlab evaluate`: lm-evaluation-harness in-process, giving lm-eval's own Hugging Face backend's numbers.

The model is the small instruction-tuned one of conftest.py (it knows 16 records by heart), so accuracy and
exact match are far from zero; the reference is the same weights exported with `gptlab convert --to hf` and
run by lm-eval's `hf` model. The tasks are local YAML files over local JSONL (tests/fixtures/lm_eval_tasks).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from e2e.commands import gptlab

pytest.importorskip("lm_eval")  # the eval extra, which the test extra includes

TASK_FOLDER = Path(__file__).resolve().parents[1] / "fixtures" / "lm_eval_tasks"
CHOICE, ANSWER, TEXTS = "gptlab_fruit_choice", "gptlab_fruit_answer", "gptlab_texts"


@pytest.fixture(scope="module")
def offline(tmp_path_factory) -> dict[str, str]:
    """No network, and `datasets`' cache in a folder of this module's own."""
    return {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "HF_DATASETS_CACHE": str(tmp_path_factory.mktemp("datasets-cache"))}


@pytest.fixture(scope="module")
def ours(overfit_run, offline, tmp_path_factory) -> tuple[dict[str, Any], Path, str]:
    """`gptlab evaluate` on the three tasks: the results it wrote to --output, that folder, and its table."""
    output = tmp_path_factory.mktemp("lm-eval") / "out"
    done = gptlab("evaluate", "--model", str(overfit_run[0]), "--tasks", f"{CHOICE},{ANSWER},{TEXTS}",
                  "--include-path", str(TASK_FOLDER), "--batch-size", "4", "--output", str(output),
                  cwd=TASK_FOLDER, env=offline)
    assert done.returncode == 0, done.stderr
    [results] = output.glob("*/results_*.json")
    return json.loads(results.read_text()), output, done.stdout


@pytest.fixture(scope="module")
def reference(overfit_run, offline, tmp_path_factory) -> dict[str, Any]:
    """lm-eval's `hf` backend on the same weights, exported to a Hugging Face folder by `gptlab convert`."""
    import datasets.config
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    folder = tmp_path_factory.mktemp("lm-eval-hf") / "hf"
    exported = gptlab("convert", str(overfit_run[0]), str(folder), "--to", "hf")
    assert exported.returncode == 0, exported.stderr
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(TASK_FOLDER)  # the task files name their data relative to the working folder
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", Path(offline["HF_DATASETS_CACHE"]))
        results = simple_evaluate(model="hf", model_args={"pretrained": str(folder), "dtype": "float32"},
                                  tasks=[CHOICE, ANSWER, TEXTS], batch_size=4, device="cpu",
                                  task_manager=TaskManager(include_path=str(TASK_FOLDER), include_defaults=False))
    assert results is not None
    return results


def _samples(output: Path, task: str) -> list[dict[str, Any]]:
    """The examples lm-eval wrote for `task` under --output, in document order."""
    files = list(output.glob(f"*/samples_{task}_*.jsonl"))
    assert len(files) == 1, sorted(output.rglob("*"))
    return sorted((json.loads(line) for line in files[0].read_text().splitlines()), key=lambda s: s["doc_id"])


def test_multiple_choice_gives_the_hf_backends_accuracy_and_log_likelihoods(ours, reference) -> None:
    results, output, _ = ours
    accuracy = results["results"][CHOICE]["acc,none"]
    assert accuracy >= 0.75  # the model knows the records: it picks their answers
    assert abs(accuracy - reference["results"][CHOICE]["acc,none"]) <= 1 / 16  # within one item of 16
    for mine, theirs in zip(_samples(output, CHOICE), reference["samples"][CHOICE], strict=True):
        assert [float(ll) for ll, _ in mine["filtered_resps"]] == pytest.approx(
            [ll for ll, _ in theirs["filtered_resps"]], abs=1e-3)


def test_generation_gives_the_hf_backends_answers_and_exact_match(ours, reference) -> None:
    results, output, _ = ours
    assert results["results"][ANSWER]["exact_match,none"] == reference["results"][ANSWER]["exact_match,none"]
    assert results["results"][ANSWER]["exact_match,none"] >= 0.5
    answers = [sample["filtered_resps"] for sample in _samples(output, ANSWER)]
    assert answers == [sample["filtered_resps"] for sample in reference["samples"][ANSWER]]


def test_rolling_perplexity_over_windows_of_the_context_matches_the_hf_backend(ours, reference) -> None:
    results, _, _ = ours
    for metric in ("word_perplexity,none", "bits_per_byte,none"):
        mine, theirs = results["results"][TEXTS][metric], reference["results"][TEXTS][metric]
        assert math.isfinite(mine) and mine == pytest.approx(theirs, rel=1e-4)


def test_the_results_are_lm_evals_files_and_table(ours) -> None:
    results, output, table = ours
    assert set(results["configs"]) == {CHOICE, ANSWER, TEXTS} and results["model_name"]
    assert len(list(output.glob("*/samples_*.jsonl"))) == 3
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("|gptlab_")}
    assert set(rows) == {CHOICE, ANSWER, TEXTS} and "acc" in rows[CHOICE] and "exact_match" in rows[ANSWER]


def test_json_prints_the_results_of_a_quantized_model(overfit_run, offline) -> None:
    done = gptlab("evaluate", "--model", str(overfit_run[0]), "--quantize", "int8", "--tasks", CHOICE,
                  "--limit", "4", "--json", "--include-path", str(TASK_FOLDER), cwd=TASK_FOLDER, env=offline)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert results["results"][CHOICE]["acc,none"] >= 0.75 and results["config"]["limit"] == 4


def test_an_unknown_task_is_one_line_with_close_names(offline) -> None:
    done = gptlab("evaluate", "--model", "gpt-tiny", "--tasks", "gptlab_fruit_choise",
                  "--include-path", str(TASK_FOLDER), cwd=TASK_FOLDER, env=offline)
    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: unknown lm-eval task 'gptlab_fruit_choise'; close names: gptlab_fruit_choice")


def test_a_task_whose_data_is_not_offline_is_one_line_naming_the_dataset(offline) -> None:
    done = gptlab("evaluate", "--model", "gpt-tiny", "--tasks", "gptlab_offline_missing",
                  "--include-path", str(TASK_FOLDER), cwd=TASK_FOLDER, env=offline)
    assert done.returncode == 1 and done.stdout == ""
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "task gptlab_offline_missing (data set gptlab-tests/no-such-dataset)" in line
    assert "not in the local cache while offline" in line


def test_without_lm_eval_the_command_says_how_to_install_it(monkeypatch, capsys) -> None:
    import gptlab.evaluation
    from gptlab.cli import main

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now fails as when it is not installed
    monkeypatch.delitem(sys.modules, "gptlab.evaluation.harness", raising=False)
    monkeypatch.delattr(gptlab.evaluation, "harness", raising=False)
    assert main(["evaluate", "--model", "gpt-tiny", "--tasks", CHOICE]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: gptlab evaluate needs lm-evaluation-harness: pip install 'gptlab[eval]'"]
