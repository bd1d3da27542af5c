import json
import math

import pytest
import torch

from gptlab.evaluation.metrics import (
    RunMetrics,
    classification_report,
    confusion_matrix,
    perplexity,
    read_metrics,
    rouge_l,
)
from gptlab.evaluation.plots import plot_run


def test_confusion_and_macro_scores_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    preds = torch.tensor([0, 0, 1, 1, 2, 2])
    assert confusion_matrix(preds, labels, 3) == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    report = classification_report(preds, labels, 3)
    assert report["accuracy"] == pytest.approx(4 / 6)
    # precision: 2/2, 1/2, 1/2; recall: 2/3, 1/2, 1/1
    assert report["precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert report["recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 * 1 / 1.5]
    assert report["f1"] == pytest.approx(sum(f1) / 3)


def test_a_class_never_predicted_scores_zero_not_nan():
    report = classification_report(torch.tensor([0, 0]), torch.tensor([0, 1]), 2)
    assert report["precision"] == pytest.approx(0.25) and report["f1"] == pytest.approx((2 / 3) / 2)


def test_perplexity():
    assert perplexity(math.log(50257)) == pytest.approx(50257)


def test_rouge_l_by_hand():
    # LCS of "the cat sat on the mat" and "the cat lay on a mat": the cat on mat (4 words of 6 each)
    assert rouge_l("The cat sat on the mat.", "the cat lay on a mat") == pytest.approx(4 / 6)
    # "police killed the gunman" vs "the gunman killed police": LCS 2 ("killed police" or "the gunman")
    reference, candidate = "police killed the gunman", "the gunman killed police"
    assert rouge_l(reference, candidate) == pytest.approx(2 / 4)
    assert rouge_l("Paris", "paris!") == 1.0
    assert rouge_l("Paris", "") == 0.0 and rouge_l("", "") == 0.0
    # precision and recall differ: 2 common words, 2 in the candidate, 5 in the reference
    assert rouge_l("a b c d e", "b d") == pytest.approx(2 * 1.0 * 0.4 / 1.4)


def test_metrics_jsonl_reads_back_as_training_lines_and_evaluations(tmp_path):
    assert read_metrics(tmp_path) == RunMetrics([], [])  # no run there yet
    training = [{"step": s, "tokens": 64 * s, "lr": 1e-3, "train_loss": 5.0 - s, "tokens_per_second": 9.0,
                 "elapsed": s} for s in (1, 2)]
    evaluation = {"val_loss": 3.5, "step": 2, "tokens": 128, "lr": 1e-3, "train_loss": 3.5, "tokens_per_second": 9.0,
                  "elapsed": 2}
    lines = [training[0], training[1], evaluation]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert read_metrics(tmp_path) == RunMetrics(training, [evaluation])
    # a run folder from before training lines: its evaluations' training loss is the curve
    (tmp_path / "metrics.jsonl").write_text(json.dumps(evaluation) + "\n")
    assert [path.name for path in plot_run(tmp_path)] == ["loss.png", "lr.png"]
