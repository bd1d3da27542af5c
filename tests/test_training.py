import json

import pytest
import torch

from gptlab.checkpoint.manifest import verify_files
from gptlab.evaluation.metrics import read_metrics
from gptlab.loading import load_model
from gptlab.lora import LoRASettings
from gptlab.training import loop
from gptlab.training.classify import with_class_head
from gptlab.training.layers import choose_trainable
from gptlab.training.loop import TrainSettings
from gptlab.training.pretrain import PretrainConfig, run
from gptlab.training.reports import Event


def config(out, dropout: float = 0.1, **train) -> PretrainConfig:
    settings = dict(max_steps=12, batch_size=4, eval_every=4, eval_batches=2, warmup_steps=2, lr=3e-3, seed=7)
    return PretrainConfig(data=["the-verdict"], out=str(out), model="gpt-tiny", context_length=32, dropout=dropout,
                          sample_tokens=0, train=TrainSettings(**{**settings, **train}))


def metrics(out) -> list[dict]:
    return read_metrics(out).evaluations


def interrupt_at(step: int):
    def on_event(event: Event) -> None:
        if event.kind == "step" and event.step == step:
            raise KeyboardInterrupt

    return on_event


@pytest.mark.parametrize("stop_at", [6, 8])  # mid-way between evaluations, and right on one
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, stop_at):
    straight = run(config(tmp_path / "a"))
    assert run(config(tmp_path / "b"), on_event=interrupt_at(stop_at))["status"] == "interrupted"
    assert json.loads((tmp_path / "b" / "checkpoints" / "last" / "training.json").read_text())["step"] == stop_at
    resumed = run(config(tmp_path / "b"), resume=True)
    assert resumed["status"] == "completed" and resumed["steps"] == straight["steps"] == 12
    a, b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [4, 8, 12]
    for ra, rb in zip(a, b):
        for key in ("train_loss", "val_loss", "lr", "tokens"):
            assert ra[key] == pytest.approx(rb[key], abs=1e-6), (ra["step"], key)
    assert resumed["best_val_loss"] == pytest.approx(straight["best_val_loss"], abs=1e-6)
    # a training-loss line per step (the default log_every 1), each once, the same across the interruption
    a, b = read_metrics(tmp_path / "a").training, read_metrics(tmp_path / "b").training
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 13))
    assert [r["train_loss"] for r in a] == pytest.approx([r["train_loss"] for r in b], abs=1e-6)
    assert [r["lr"] for r in a] == pytest.approx([r["lr"] for r in b])


def test_loss_falls_and_the_best_checkpoint_tracks_val_loss(tmp_path):
    summary = run(config(tmp_path, max_steps=40, eval_every=10, dropout=0.0))
    records = metrics(tmp_path)
    assert records[-1]["train_loss"] < records[0]["train_loss"] - 0.5
    assert summary["best_val_loss"] == min(r["val_loss"] for r in records)
    assert summary["best_step"] == min(records, key=lambda r: r["val_loss"])["step"]
    assert summary["final_val_loss"] == records[-1]["val_loss"]
    assert set(summary) >= {"best_val_loss", "final_val_loss", "steps", "tokens", "wall_seconds", "tokens_per_second"}
    assert summary["tokens"] == 40 * 4 * 32


def test_eval_first_records_the_loss_before_training_and_keeps_it_across_a_resume(tmp_path):
    without = run(config(tmp_path / "a", max_steps=40, eval_every=10, dropout=0.0))
    assert without["initial_val_loss"] is None
    assert run(config(tmp_path / "b", max_steps=40, eval_every=10, dropout=0.0, eval_first=True),
               on_event=interrupt_at(15))["status"] == "interrupted"
    summary = run(config(tmp_path / "b", max_steps=40, eval_every=10, dropout=0.0, eval_first=True), resume=True)
    untrained = summary["initial_val_loss"]
    assert untrained > summary["best_val_loss"] + 0.5  # random weights: about ln(vocab) before any step
    assert summary["final_val_loss"] == pytest.approx(without["final_val_loss"], abs=1e-6)  # nothing else changed
    assert [r["step"] for r in metrics(tmp_path / "b")] == [10, 20, 30, 40]


def test_log_every_averages_its_steps_and_the_evaluation_closes_a_window(tmp_path):
    run(config(tmp_path / "each", max_steps=10, eval_every=5, dropout=0.0))
    run(config(tmp_path / "three", max_steps=10, eval_every=5, dropout=0.0, log_every=3))
    each, three = read_metrics(tmp_path / "each").training, read_metrics(tmp_path / "three").training
    assert [r["step"] for r in three] == [3, 5, 6, 9, 10]  # every 3 steps, and the steps before each evaluation
    loss = {r["step"]: r["train_loss"] for r in each}
    assert three[0]["train_loss"] == pytest.approx((loss[1] + loss[2] + loss[3]) / 3, abs=1e-6)
    assert three[1]["train_loss"] == pytest.approx((loss[4] + loss[5]) / 2, abs=1e-6)
    assert three[1]["tokens"] == 5 * 4 * 32 and three[1]["tokens_per_second"] > 0


def test_library_code_leaves_the_global_rng_alone_and_draws_from_its_seeds(tmp_path):
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    run(config(tmp_path, max_steps=2, eval_every=2))  # a preset built from the seed, dropout, a checkpoint
    load_model(str(tmp_path))  # the run's checkpoint
    preset = load_model("gpt-tiny", seed=5)
    heads = [with_class_head(load_model("gpt-tiny").model, 3, torch.Generator().manual_seed(9)) for _ in range(2)]
    for head in heads:
        choose_trainable(head, "lora", LoRASettings(rank=2), torch.Generator().manual_seed(9))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(preset.model.wte.weight, load_model("gpt-tiny", seed=5).model.wte.weight)
    assert not torch.equal(preset.model.wte.weight, load_model("gpt-tiny", seed=6).model.wte.weight)
    assert torch.equal(heads[0].lm_head.weight, heads[1].lm_head.weight)
    assert torch.equal(heads[0].h[0].attn.c_attn.lora_A, heads[1].h[0].attn.c_attn.lora_A)


@pytest.mark.parametrize("native_bf16, same_as", [(True, "bf16-mixed"), (False, "32")])
def test_auto_precision_is_bf16_mixed_where_the_cpu_multiplies_bf16(tmp_path, monkeypatch, caplog, native_bf16,
                                                                   same_as):
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: native_bf16)
    caplog.set_level("INFO", logger="gptlab.training.loop")
    run(config(tmp_path / "auto", max_steps=4, eval_every=4, device="cpu"))
    assert f"precision {same_as} (auto for cpu" in caplog.text
    run(config(tmp_path / "chosen", max_steps=4, eval_every=4, device="cpu", precision=same_as))
    other = "32" if same_as == "bf16-mixed" else "bf16-mixed"
    run(config(tmp_path / "other", max_steps=4, eval_every=4, device="cpu", precision=other))
    auto, chosen, different = (metrics(tmp_path / name)[0] for name in ("auto", "chosen", "other"))
    assert auto["train_loss"] == chosen["train_loss"] and auto["val_loss"] == chosen["val_loss"]
    assert auto["val_loss"] != different["val_loss"]


def test_a_fresh_run_in_a_used_folder_forgets_the_previous_best(tmp_path):
    run(config(tmp_path, max_steps=4))
    assert (tmp_path / "checkpoints" / "best" / "model.safetensors").is_file()
    run(config(tmp_path, max_steps=4), on_event=interrupt_at(2))  # stopped before its first evaluation
    assert not (tmp_path / "checkpoints" / "best").exists()


def test_corrupted_checkpoint_is_reported_on_resume(tmp_path):
    run(config(tmp_path, max_steps=4))
    weights = tmp_path / "checkpoints" / "last" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checkpoints/last/model.safetensors: damaged: its sha256 is not the one"):
        run(config(tmp_path, max_steps=8), resume=True)


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    run(config(tmp_path, max_steps=4))
    last = tmp_path / "checkpoints" / "last"
    before = (last / "training.json").read_text()

    import gptlab.checkpoint.weights as weights  # every safetensors file of a checkpoint is written there

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(weights, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        run(config(tmp_path, max_steps=8), resume=True)
    assert (last / "training.json").read_text() == before
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best", "last"]
    verify_files(last)


def test_nothing_to_resume_and_too_short_text(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run(config(tmp_path / "fresh"), resume=True)
    short = tmp_path / "short.txt"
    short.write_text("only a few words here")
    cfg = config(tmp_path / "short")
    cfg.data = [str(short)]
    with pytest.raises(ValueError, match="training split: text too short: 4 tokens"):
        run(cfg)


def fail_at(step: int):
    def on_event(event: Event) -> None:
        if event.kind == "step" and event.step == step:
            raise RuntimeError("the task broke")

    return on_event


def test_every_ending_is_recorded_with_its_reason(tmp_path):
    assert run(config(tmp_path / "a", max_steps=4))["reason"] == "reached max_steps (4)"
    stopped = run(config(tmp_path / "b", max_steps=8), on_event=interrupt_at(6))
    assert (stopped["status"], stopped["reason"]) == ("interrupted", "interrupted (Ctrl-C) after step 6")
    with pytest.raises(RuntimeError, match="the task broke"):
        run(config(tmp_path / "c", max_steps=8), on_event=fail_at(6))
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert (summary["status"], summary["reason"], summary["steps"]) == ("failed", "RuntimeError: the task broke", 6)
    assert [r["step"] for r in metrics(tmp_path / "c")] == [4]
    assert json.loads((tmp_path / "c" / "checkpoints" / "last" / "training.json").read_text())["step"] == 4
