"""Everything else works on every family: each `<family>-tiny` preset runs in the batching engine (8
mixed-length concurrent greedy requests through 3 rows equal each alone), in bfloat16, quantized to int8 and int4,
compiled, and trains (LoRA and full) with a falling loss. The families' own blocks are what is new here;
`test_families.py` and the `test_family_*` files prove them against transformers."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from e2e.commands import gptlab
from gptlab.engine import Engine, EngineLimits
from gptlab.generation import Completion, GenerationSettings
from gptlab.lora import LoRASettings, apply_lora, is_lora_key
from gptlab.model import GPT
from gptlab.models import FAMILIES, PRESETS, preset_config
from gptlab.quantize import Quantization, quantize_model
from gptlab.tokenizer import CharTokenizer

TINY = sorted(name for name in PRESETS if name.endswith("-tiny"))
TOKENIZER = CharTokenizer("abcdefghijklmnopqrstuvwxyz .,!?ABCDEFGHIJKLMNOPQRS")  # ids 0..49 of the model's 50,257
PROMPTS = [("the quick brown fox jumps " * 3)[: 1 + 4 * i] for i in range(16)]  # 1 to 61 characters


def tiny(name: str, seed: int = 0) -> GPT:
    """The preset with random weights large enough (std 0.1) that greedy picks are well separated."""
    torch.manual_seed(seed)
    model = GPT(preset_config(name, context_length=128)).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.1)
    return model


def ids_of(completion) -> list[int]:  # noqa: ANN001 (a Completion or an engine's)
    """The ids a completion generates, once its text has been read to the end."""
    "".join(completion)
    return completion.ids


def greedy_alone(model: GPT, prompt: str, settings: GenerationSettings) -> list[int]:
    return ids_of(Completion(model, TOKENIZER, TOKENIZER.encode(prompt), settings))


def test_every_family_has_a_tiny_preset():
    assert {family.name for family in FAMILIES} <= {preset_config(name).family for name in TINY} | {"gpt2"}


@pytest.mark.parametrize("name", TINY)
def test_eight_concurrent_greedy_requests_equal_each_alone(name):
    model = tiny(name)
    prompts = PROMPTS[::2]  # 1 to 57 characters; the longest with its tokens outgrows the first 64-long cache
    settings = [GenerationSettings(max_new_tokens=6 + (5 * i) % 14, temperature=0) for i in range(len(prompts))]
    engine = Engine(model, EngineLimits(max_batch=3, max_queue=8))  # rows join and leave mid-run
    try:
        completions = [engine.submit(TOKENIZER, TOKENIZER.encode(p), s) for p, s in zip(prompts, settings)]
        batched = [ids_of(completion) for completion in completions]
    finally:
        engine.close()
    assert batched == [greedy_alone(model, p, s) for p, s in zip(prompts, settings)]


@pytest.mark.parametrize("name", TINY)
def test_reduced_precision_and_quantized_models_stay_close_and_generate(name):
    model = tiny(name)
    ids = torch.tensor([TOKENIZER.encode(PROMPTS[-1])])
    with torch.no_grad():
        reference = model(ids).float().log_softmax(-1)
        int4 = ("int4",) if model.config.n_embd % 32 == 0 else ()  # int4 takes inputs in groups of 32
        for variant in ("bfloat16", "int8", *int4):
            other = copy.deepcopy(model).to(torch.bfloat16)
            if variant != "bfloat16":
                quantize_model(other, Quantization(variant))
            got = other(ids).float().log_softmax(-1)
            # the same distribution within the precision's error: L1 distance (twice the total variation) per
            # position. Measured: bf16 and int8 0.004-0.036 (0.11 where a MoE router flips an expert), int4
            # 0.13-0.35 (random 64-wide weights in groups of 32 are int4's worst case)
            bound = 0.45 if variant == "int4" else 0.15
            assert (got.exp() - reference.exp()).abs().sum(-1).max() < bound, variant
            assert len(greedy_alone(other, PROMPTS[3], GenerationSettings(max_new_tokens=5, temperature=0))) == 5


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("train_layers", ["lora", "all"])
def test_training_lowers_the_loss(name, train_layers):
    model = tiny(name).train()
    if train_layers == "lora":
        apply_lora(model, LoRASettings(rank=4))
        assert all(is_lora_key(n) for n, p in model.named_parameters() if p.requires_grad)
    batch = torch.randint(0, 50, (2, 24), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses


def test_compiled_decoding_equals_eager_on_the_new_blocks():
    """One model with every block that changes the decode step: a head width of its own, QK-norm, partial
    rotary with llama3 scaling, sliding windows with their own rope base, post-norms, a scaled embedding. (A
    mixture of experts routes by data-dependent shapes, which torch.compile breaks its graph on: eager only.)"""
    from gptlab.config import GPTConfig, RopeScaling

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50, context_length=96, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, head_size=16,
                       positions="rope", norm="rmsnorm", mlp="geglu", bias=False, qkv_bias=False, qk_norm="head",
                       rotary_fraction=0.5, rope_scaling=RopeScaling("llama3", 4.0, 1.0, 4.0, 16), sliding_window=6,
                       sliding_layers=(0,), local_rope_theta=100.0, norm_position="both", embedding_scale=32**0.5)
    model = GPT(config).eval()
    settings = GenerationSettings(max_new_tokens=12, temperature=0)
    eager = greedy_alone(model, PROMPTS[5], settings)
    model.compile_decode_step()
    assert greedy_alone(model, PROMPTS[5], settings) == eager


@pytest.mark.parametrize("name", ["qwen3-0.6b", "llama-3.2-1b"])
def test_info_shows_a_real_shape_without_allocating_it(name):
    out = gptlab("info", name, "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["config"]["family"] == name.split("-")[0] and info["parameters"] > 5e8
