import pytest
import torch
import torch.nn.functional as F

from gptlab import model as model_module
from gptlab.config import GPTConfig
from gptlab.model import GPT, KVCache, attend, causal_mask, explicit_attention

CONFIG = GPTConfig(vocab_size=97, context_length=64, n_layer=2, n_head=4, n_embd=32)


def make_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**CONFIG.to_dict(), **overrides})).eval()


def test_gpt2_parameter_names():
    names = set(make_model().state_dict())
    for expected in ["wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.weight",
                     "h.0.attn.c_attn.bias", "h.1.attn.c_proj.weight", "h.0.ln_2.bias",
                     "h.1.mlp.c_fc.weight", "h.1.mlp.c_proj.bias", "ln_f.weight", "lm_head.weight"]:
        assert expected in names


def test_lm_head_is_tied_to_token_embedding():
    model = make_model()
    assert model.lm_head.weight is model.wte.weight
    untied = make_model(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_parameters() == model.num_parameters() + 97 * 32


def test_forward_shapes_and_causality():
    model = make_model()
    idx = torch.randint(0, 97, (3, 10))
    logits = model(idx)
    assert logits.shape == (3, 10, 97)
    changed = idx.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 97
    # positions before 7 cannot see the change; position 7 and later do
    assert torch.equal(model(changed)[:, :7], logits[:, :7])
    assert not torch.allclose(model(changed)[:, 7:], logits[:, 7:])


def test_short_bf16_attention_on_cpu_takes_the_faster_explicit_path():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 16, dtype=torch.bfloat16) for _ in range(3))
    routed = attend(q, k, v, None, 0.0, "sdpa")
    assert torch.equal(routed, attend(q, k, v, None, 0.0, "math"))
    reference = attend(q.float(), k.float(), v.float(), None, 0.0, "sdpa")
    assert (routed.float() - reference).abs().max() < 0.03  # bf16 keeps 8 bits of mantissa
    long = [torch.randn(1, 4, 300, 16, dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]
    fused, explicit = attend(*long, None, 0.0, "sdpa"), attend(*long, None, 0.0, "math")  # training, 300 keys: fused
    assert not torch.equal(fused, explicit) and (fused.float() - explicit.float()).abs().max() < 0.03


@pytest.mark.parametrize("with_mask", [False, True])
def test_bf16_prefill_on_cpu_attends_a_block_of_queries_at_a_time(with_mask, monkeypatch):
    """Inference over up to MAX_BLOCKED_KEYS keys: 128 queries at a time over the keys they may see."""
    torch.manual_seed(0)
    T, S = 300, 340  # three blocks, the last short; 40 cached keys before the queries
    q = torch.randn(2, 4, T, 16, dtype=torch.bfloat16)
    k, v = (torch.randn(2, 2, S, 16, dtype=torch.bfloat16) for _ in range(2))  # grouped: 2 query heads per key head
    mask = None
    if with_mask:  # the second row's first 10 keys are padding
        mask = causal_mask(T, S, q.device).expand(2, 1, T, S).clone()
        mask[1, :, :, :10] = False
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=False, enable_gqa=True,
                                               attn_mask=causal_mask(T, S, q.device) if mask is None else mask)
    blocked = attend(q, k, v, mask, 0.0, "sdpa", grouped=True)
    assert (blocked.float() - reference).abs().max() < 0.03  # bf16 keeps 8 bits of mantissa
    assert torch.equal(blocked, attend(q, k, v, mask, 0.0, "math", grouped=True))
    whole = explicit_attention(q, k, v, mask, 0.0)  # all 300 queries in one product
    assert (blocked.float() - whole.float()).abs().max() < 0.03
    monkeypatch.setattr(model_module, "MAX_BLOCKED_KEYS", 256)  # more keys than that: the fused kernel
    fused = attend(q, k, v, mask, 0.0, "sdpa", grouped=True)
    assert not torch.equal(fused, blocked) and (fused.float() - reference).abs().max() < 0.03


def test_sdpa_and_explicit_softmax_attention_agree():
    model = make_model()
    idx = torch.randint(0, 97, (2, 40))
    sdpa = model(idx)
    model.set_attention("math")
    math_path = model(idx)
    assert (sdpa - math_path).abs().max() < 1e-5


def test_cached_logits_match_uncached_for_every_step():
    """Chunked prefill into one slot, then one-token steps of both rows at their own positions."""
    model = make_model()
    idx = torch.randint(0, 97, (2, 48))
    full = model(idx)
    for impl in ("sdpa", "math"):
        model.set_attention(impl)
        cache = KVCache.allocate(model.config, batch_size=2)
        with torch.no_grad():
            for row in range(2):  # prefill 16, then a chunk of 7 at position 16
                first = model.lm_head(model.prefill(idx[row : row + 1, :16], cache, [row]))
                second = model.lm_head(model.prefill(idx[row : row + 1, 16:23], cache, [row], start=16))
                assert (torch.cat([first, second], dim=1) - full[row : row + 1, :23]).abs().max() < 1e-5
            for t in range(23, 48):
                positions = torch.tensor([t, t])
                step = model.decode_step(idx[:, t], positions, cache, span=cache.max_len)  # (2, V)
                assert (step - full[:, t]).abs().max() < 1e-5


def test_rows_prefilled_together_then_decoded_at_their_own_positions_equal_each_alone():
    """A short and a long prompt, prefilled right-padded into rows 2 and 0, then stepped together:
    each row equals its prompt alone; padding and stale places are never read."""
    model = make_model()
    short, long = torch.randint(0, 97, (1, 5)), torch.randint(0, 97, (1, 30))
    cache = KVCache.allocate(model.config, batch_size=3)
    for keys in cache.keys:
        keys.normal_()  # stale data in unused places must be masked out
    padded = torch.cat([torch.cat([short[:, :-1], torch.full((1, 25), 7)], dim=1), long[:, :-1]])  # (2, 29)
    with torch.no_grad():
        hidden = model.prefill(padded, cache, [2, 0])
        assert (model.lm_head(hidden[0, 3]) - model(short[:, :-1])[0, -1]).abs().max() < 1e-5
        rows = model.decode_step(torch.tensor([long[0, -1], 0, short[0, -1]]), torch.tensor([29, 0, 4]), cache,
                                 span=40)
        assert (rows[2] - model(short)[0, -1]).abs().max() < 1e-5
        assert (rows[0] - model(long)[0, -1]).abs().max() < 1e-5


def test_grouped_query_attention_reads_shared_heads_in_place_on_both_paths():
    model = make_model(n_kv_head=2, positions="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    idx = torch.randint(0, 97, (2, 20))
    sdpa = model(idx)
    model.set_attention("math")
    assert (model(idx) - sdpa).abs().max() < 1e-5
    cache = KVCache.allocate(model.config, batch_size=2)
    assert cache.keys[0].shape == (2, 2, 64, 8)  # two key/value heads cached, not four
    with torch.no_grad():
        model.prefill(idx[:1, :19], cache, [0])
        model.prefill(idx[1:, :10], cache, [1])
        step = model.decode_step(torch.tensor([idx[0, 19], idx[1, 10]]), torch.tensor([19, 10]), cache, span=32)
    assert (step[0] - sdpa[0, 19]).abs().max() < 1e-5
    assert (step[1] - model(idx[1:, :11])[0, -1]).abs().max() < 1e-5


def test_too_long_input_is_refused():
    import pytest

    with pytest.raises(ValueError, match="65 tokens exceeds the context length \\(64\\)"):
        make_model()(torch.zeros(1, 65, dtype=torch.long))


def test_flops_per_token_follows_6n_rule_for_training():
    model = make_model()
    n = model.num_parameters() - model.wpe.weight.numel()
    assert model.flops_per_token(seq_len=1) == 2 * n + 2 * 2 * 32
    assert model.flops_per_token(seq_len=1, training=True) == 3 * (2 * n + 2 * 2 * 32)


def test_dropout_only_in_training_mode():
    model = make_model(dropout=0.5)
    idx = torch.randint(0, 97, (1, 8))
    assert torch.equal(model(idx), model(idx))
    model.train()
    assert not torch.equal(model(idx), model(idx))


def test_set_dropout_changes_every_dropout_of_a_built_model():
    model = make_model(dropout=0.0).train()
    idx = torch.randint(0, 97, (1, 8))
    assert torch.equal(model(idx), model(idx))
    model.set_dropout(0.3)
    assert model.config.dropout == 0.3 and not torch.equal(model(idx), model(idx))
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.3}
    assert {block.attn.dropout for block in model.h} == {0.3}
    model.set_dropout(0.0)
    assert torch.equal(model(idx), model(idx))


def test_classifier_head_reads_the_last_real_token_under_right_padding():
    model = make_model(num_classes=3)
    assert model.lm_head.weight.shape == (3, 32) and model.lm_head.bias is not None
    assert model.lm_head.weight is not model.wte.weight
    short = torch.tensor([[5, 6, 7]])
    alone = model.classify(short, torch.tensor([3]))
    padded = torch.tensor([[5, 6, 7, 0, 0, 0], [1, 2, 3, 4, 5, 6]])
    both = model.classify(padded, torch.tensor([3, 6]))
    assert both.shape == (2, 3)
    assert (both[0] - alone[0]).abs().max() < 1e-5  # padding after the text changes nothing
    at_padding = model.lm_head(model.hidden(padded)[0, -1])
    assert (at_padding - alone[0]).abs().max() > 1e-4  # the book's last-position read would differ


def test_classifier_config_round_trips_through_a_checkpoint(tmp_path):
    from gptlab.checkpoint.native import load_checkpoint, save_checkpoint
    from gptlab.tokenizer import CharTokenizer

    model = make_model(num_classes=2, vocab_size=4)
    save_checkpoint(model, CharTokenizer("abcd"), tmp_path / "clf")
    loaded = load_checkpoint(tmp_path / "clf")[0]
    idx, lengths = torch.tensor([[0, 1, 2]]), torch.tensor([2])
    assert loaded.config.num_classes == 2
    assert torch.equal(loaded.classify(idx, lengths), model.classify(idx, lengths))


def test_flops_count_attention_over_the_keys_each_block_sees():
    """Attention costs heads x head width per key (a head width of its own counts), a windowed block at most
    its window of keys."""
    wide = GPT(GPTConfig(vocab_size=64, context_length=64, n_layer=2, n_head=4, n_embd=32, head_size=16))
    matmuls = 2 * (wide.num_parameters() - wide.wpe.weight.numel())
    assert wide.flops_per_token(seq_len=40) - matmuls == 2 * (40 + 40) * 4 * 16
    windowed = GPT(GPTConfig(vocab_size=64, context_length=64, n_layer=2, n_head=4, n_embd=32, sliding_window=8,
                             sliding_layers=(1,)))
    matmuls = 2 * (windowed.num_parameters() - windowed.wpe.weight.numel())
    assert windowed.flops_per_token(seq_len=40) - matmuls == 2 * (40 + 8) * 4 * 8
