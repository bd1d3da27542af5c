import math

import pytest
import torch

from gptlab.config import GPTConfig
from gptlab.model import GPT
from gptlab.models import preset_config
from gptlab.training.loop import Task, _Dist, accumulate_gradients, clip_and_step
from gptlab.training.losses import lm_loss
from gptlab.training.optim import build_optimizer, lr_at, param_groups


def test_warmup_then_cosine_to_the_floor():
    values = [lr_at(s, max_lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110) for s in range(120)]
    assert values[0] == pytest.approx(0.1) and values[4] == pytest.approx(0.5) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0)
    assert values[60] == pytest.approx(0.55)  # halfway through the cosine
    assert values[35] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 0.25)))
    assert values[110] == values[119] == 0.1
    assert all(a >= b for a, b in zip(values[10:], values[11:]))


def test_decay_only_on_matrices():
    model = GPT(preset_config("gpt-tiny"))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    named = dict(model.named_parameters())
    assert any(p is named["wte.weight"] for p in decay["params"])
    assert any(p is named["h.0.ln_1.weight"] for p in no_decay["params"])
    assert any(p is named["h.0.attn.c_attn.bias"] for p in no_decay["params"])
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == model.num_parameters()


def _task(batches: torch.Tensor) -> Task:
    return Task(train_batch=lambda i: (batches[i, :, :-1], batches[i, :, 1:]), val_batch=None,
                loss=lambda m, b: lm_loss(m(b[0]), b[1]), count_tokens=lambda b: b[1].numel(),
                write_model=None)


def _grads(model: GPT) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_accumulating_4_batches_of_2_equals_one_batch_of_8():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, context_length=16, n_layer=2, n_head=2, n_embd=16))
    data = torch.randint(0, 50, (8, 17))
    cpu, off = torch.device("cpu"), torch.autocast("cpu", enabled=False)
    loss8, _ = accumulate_gradients(model, _task(data[None]), 0, 1, _Dist(), cpu, off)
    big = _grads(model)
    model.zero_grad()
    loss2x4, tokens = accumulate_gradients(model, _task(data.view(4, 2, 17)), 0, 4, _Dist(), cpu, off)
    assert tokens == 8 * 16 and loss2x4 == pytest.approx(loss8, abs=1e-6)
    for name, grad in _grads(model).items():
        assert (grad - big[name]).abs().max() < 1e-6, name


def test_clipping_caps_the_global_norm():
    model = torch.nn.Linear(4, 4)
    optimizer = build_optimizer(model, lr=0.0, weight_decay=0.0)
    model.weight.grad = torch.full((4, 4), 3.0)
    model.bias.grad = torch.full((4,), 4.0)
    captured = {}
    optimizer.register_step_pre_hook(lambda opt, a, k: captured.update(
        norm=torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()))
    before = clip_and_step(model, optimizer, grad_clip=1.0)
    assert before == pytest.approx(math.sqrt(16 * 9 + 4 * 16))
    assert captured["norm"] == pytest.approx(1.0, abs=1e-5)
    assert model.weight.grad is None  # zeroed for the next step
