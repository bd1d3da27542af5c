import json

import pytest
import torch

from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.checkpoint.native import load_checkpoint, write_model_files
from gptlab.checkpoint.weights import read_safetensors
from gptlab.config import GPTConfig
from gptlab.loading import load_model
from gptlab.lora import DEFAULT_TARGETS, LoRALinear, LoRASettings, apply_lora, lora_state_dict, merge_lora
from gptlab.model import GPT
from gptlab.tokenizer import CharTokenizer
from gptlab.training.classify import with_class_head
from gptlab.training.layers import choose_trainable
from gptlab.training.loop import TrainSettings
from gptlab.training.reports import Event
from gptlab.training.sft import SFTConfig, run

CONFIG = GPTConfig(vocab_size=40, context_length=16, n_layer=2, n_head=2, n_embd=16)


def model_and_input(seed: int = 0) -> tuple[GPT, torch.Tensor]:
    torch.manual_seed(seed)
    return GPT(CONFIG).eval(), torch.randint(0, 40, (2, 10))


def test_wrapping_changes_nothing_until_training_and_trains_only_the_adapters():
    model, x = model_and_input()
    before = model(x)
    names = set(model.state_dict())
    settings = apply_lora(model, LoRASettings(rank=4, alpha=8))
    assert settings == LoRASettings(rank=4, alpha=8, targets=("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"))
    assert torch.equal(model(x), before)  # B starts at zero
    assert set(model.state_dict()) - names == {f"h.{i}.{t}.lora_{m}" for i in range(2) for t in settings.targets
                                               for m in "AB"}  # the weights keep their names
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert set(trainable) == set(lora_state_dict(model))
    # per block: c_attn 4*(16+48), attn.c_proj 4*(16+16), c_fc 4*(16+64), mlp.c_proj 4*(64+16)
    assert sum(trainable.values()) == 2 * 4 * (64 + 32 + 80 + 80)


def test_merged_weights_compute_what_the_adapters_did_and_the_base_stays_put():
    model, x = model_and_input()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, LoRASettings(rank=4, alpha=8))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        model(x).logsumexp(-1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    adapted = model(x)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in base.items())
    assert not torch.allclose(adapted, model_and_input()[0](x))
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert set(model.state_dict()) == set(base)
    assert torch.allclose(model(x), adapted, atol=1e-5)


def test_a_lora_checkpoint_loads_as_a_plain_merged_model(tmp_path):
    model, x = model_and_input()
    settings = apply_lora(model, LoRASettings(rank=2, alpha=4))
    with torch.no_grad():
        for tensor in lora_state_dict(model).values():
            tensor.normal_(0, 0.1)
    expected = model(x)
    tokenizer = CharTokenizer("abcdefghijklmnopqrstuvwxyz0123456789 .,!")
    write_model_files(model, tokenizer, tmp_path, CheckpointMeta(lora=settings))
    loaded, _, meta = load_checkpoint(tmp_path)
    assert meta.lora == settings and not any(isinstance(m, LoRALinear) for m in loaded.modules())
    assert torch.allclose(loaded(x), expected, atol=1e-5)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["lora"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match='holds LoRA adapters but .* has no "lora" settings'):
        load_checkpoint(tmp_path)


def test_a_lora_classifier_trains_its_new_head_in_full():
    classifier = with_class_head(GPT(CONFIG), 3)
    choose_trainable(classifier, "lora", LoRASettings(rank=2))
    trainable = {n for n, p in classifier.named_parameters() if p.requires_grad}
    assert {"lm_head.weight", "lm_head.bias"} <= trainable
    assert not trainable & {"wte.weight", "h.0.attn.c_attn.weight", "ln_f.weight"}


def interrupt_at(step: int):
    def on_event(event: Event) -> None:
        if event.kind == "step" and event.step == step:
            raise KeyboardInterrupt

    return on_event


def test_a_lora_sft_run_resumes_exactly_and_saves_a_loadable_model(tmp_path):
    records = [{"instruction": f"Say {w}.", "input": "", "output": f"{w} {w}"} for w in ("red", "blue", "green", "tea")]
    (tmp_path / "records.json").write_text(json.dumps(records * 4))

    def config(out: str) -> SFTConfig:
        return SFTConfig(data=str(tmp_path / "records.json"), out=str(tmp_path / out), model="gpt-tiny",
                         train_layers="lora", lora=LoRASettings(rank=4), response_tokens=0, train_fraction=0.75,
                         test_fraction=0,
                         train=TrainSettings(max_steps=12, batch_size=2, eval_every=4, lr=1e-2, warmup_steps=2,
                                             seed=3))

    straight = run(config("a"))
    assert run(config("b"), on_event=interrupt_at(6))["status"] == "interrupted"
    resumed = run(config("b"), resume=True)
    lines = [[json.loads(line) for line in (tmp_path / r / "metrics.jsonl").read_text().splitlines()] for r in "ab"]
    metrics = [[m for m in run_lines if "val_loss" in m] for run_lines in lines]  # the evaluations
    assert [m["val_loss"] for m in metrics[0]] == pytest.approx([m["val_loss"] for m in metrics[1]], abs=1e-6)
    assert metrics[0][-1]["val_loss"] < metrics[0][0]["val_loss"]
    assert resumed["best_val_loss"] == pytest.approx(straight["best_val_loss"], abs=1e-6)
    saved = read_safetensors(tmp_path / "a" / "checkpoints" / "best" / "model.safetensors")
    assert set(saved) == {f"h.{i}.{t}.lora_{m}" for i in range(2) for t in DEFAULT_TARGETS for m in "AB"}
    tuned = load_model(str(tmp_path / "a"))  # the adapters, put on the base again and merged
    untouched = load_model("gpt-tiny")
    assert json.loads((tmp_path / "a" / "checkpoints" / "best" / "config.json").read_text())["lora"]["rank"] == 4
    assert torch.equal(tuned.model.wte.weight, untouched.model.wte.weight)  # frozen, not adapted
    assert not torch.equal(tuned.model.h[0].attn.c_attn.weight, untouched.model.h[0].attn.c_attn.weight)  # merged
