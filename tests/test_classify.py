import json

import pytest
import torch

from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.checkpoint.native import save_checkpoint
from gptlab.classifier import Encoded, classify_texts, predict
from gptlab.loading import load_model
from gptlab.model import GPT
from gptlab.models import preset_config
from gptlab.training.classify import ClassifyConfig, run, with_class_head
from gptlab.training.layers import choose_trainable
from gptlab.training.loop import TrainSettings


def test_train_layers_choose_what_trains():
    model = with_class_head(GPT(preset_config("gpt-tiny")), 3)
    choose_trainable(model, "last")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(("h.1.", "ln_f.", "lm_head."))}
    choose_trainable(model, "last-2")
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {"wte.weight", "wpe.weight"}
    choose_trainable(model, "all")
    assert all(p.requires_grad for p in model.parameters())
    for bad, message in [("first", "expected all, lora, last or last-K"), ("last-3", "the model has 2 blocks")]:
        with pytest.raises(ValueError, match=message):
            choose_trainable(model, bad)


def test_frozen_parameters_really_stay_unchanged(tmp_path):
    start = GPT(preset_config("gpt-tiny"), torch.Generator().manual_seed(0)).state_dict()  # as load_model draws it
    config = ClassifyConfig(data="sms-spam", out=str(tmp_path), model="gpt-tiny", train_layers="last",
                            train=TrainSettings(max_steps=6, batch_size=8, lr=1e-2, eval_every=3, eval_batches=1,
                                                warmup_steps=0, seed=0))
    run(config)
    trained = load_model(str(tmp_path / "checkpoints" / "last")).model.state_dict()
    for name in ("wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.0.mlp.c_fc.bias"):
        assert torch.equal(trained[name], start[name]), name
    assert not torch.equal(trained["h.1.mlp.c_fc.weight"], start["h.1.mlp.c_fc.weight"])
    assert trained["lm_head.weight"].shape == (2, 16)
    labels = [json.loads(line)["label"] for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert labels.count("spam") > 100


def test_the_report_scores_the_best_checkpoint_not_the_last_weights(tmp_path):
    """summary.json describes what `gptlab classify --model <run>` loads, not where training stopped."""
    config = ClassifyConfig(data="sms-spam", out=str(tmp_path), model="gpt-tiny", train_layers="all",
                            train=TrainSettings(max_steps=6, batch_size=8, lr=1e-2, eval_every=3, eval_batches=1,
                                                warmup_steps=0, seed=0))
    first = run(config)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in lines if "val_loss" in r]  # the evaluations
    top = max(r["val_accuracy"] for r in records)  # best/ = highest val accuracy, the later one on ties
    assert first["best_step"] == max(r["step"] for r in records if r["val_accuracy"] == top)
    last = load_model(str(tmp_path / "checkpoints" / "last"))
    names = last.meta.labels
    test = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    predicted = [names[i] for i in classify_texts(last, [r["text"] for r in test]).argmax(-1).tolist()]
    last_confusion = [[sum(r["label"] == a and p == b for r, p in zip(test, predicted)) for b in names] for a in names]
    with torch.no_grad():  # a "best" checkpoint that answers the opposite of the last weights
        last.model.lm_head.weight.neg_()
        last.model.lm_head.bias.neg_()
    save_checkpoint(last.model, last.tokenizer, tmp_path / "checkpoints" / "best",
                    CheckpointMeta(labels=names, max_length=last.meta.max_length))
    summary = run(config, resume=True)  # already at max_steps: nothing trains, the report runs again
    assert summary["test_confusion"] == [row[::-1] for row in last_confusion] != last_confusion
    assert summary["scored"].endswith("(best checkpoint)")
    assert json.loads((tmp_path / "summary.json").read_text())["test_confusion"] == summary["test_confusion"]


def test_predict_batches_by_length_and_returns_rows_in_their_own_order():
    torch.manual_seed(0)
    model = with_class_head(GPT(preset_config("gpt-tiny")), 3).eval()
    lengths = torch.tensor([9, 2, 7, 1, 9, 4, 3])
    ids = torch.randint(0, 50257, (7, 9)) * (torch.arange(9) < lengths[:, None])  # right-padded with 0
    one_by_one = [model(ids[i : i + 1, : lengths[i]], lengths=lengths[i : i + 1]).argmax(-1).item() for i in range(7)]
    data = Encoded(ids, lengths, torch.zeros(7, dtype=torch.long))
    assert predict(model, data, batch_size=3).tolist() == one_by_one
    assert len(set(one_by_one)) > 1  # the rows differ, so a shuffled order would show
