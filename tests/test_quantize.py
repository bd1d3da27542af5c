"""Weight-only int8/int4 layers: close to the float layer, exact through their portable state dict."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gptlab import quantize
from gptlab.quantize import (
    Int4Linear,
    Int8Linear,
    Quantization,
    empty_layer,
    pack_int4,
    quantize_model,
    quantized_layer,
    unpack_int4,
)

# Relative error ||y_q - y|| / ||y|| on N(0, 0.02) weights: int8 rounds to 1/127 of each row's largest
# weight (about 0.5% here), int4 to 1/15 of each group's range (about 8%).
TOLERANCE = {"int8": 0.01, "int4": 0.12}


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want).norm() / want.norm())


@pytest.mark.parametrize("scheme", ["int8", "int4"])
@pytest.mark.parametrize("bias", [False, True])
def test_a_quantized_layer_stays_close_to_the_float_one(scheme, bias):
    torch.manual_seed(0)
    linear = nn.Linear(128, 200, bias=bias)  # 200 rows: int4 pads them to 208
    nn.init.normal_(linear.weight, 0.0, 0.02)
    x = torch.randn(2, 20, 128)  # 40 rows: int8 dequantizes into a matmul above 16, so both paths run
    layer = quantized_layer(linear, Quantization(scheme))
    assert _relative_error(layer(x[:1, :5]), linear(x[:1, :5]).detach()) < TOLERANCE[scheme]
    y = layer(x)
    assert y.shape == (2, 20, 200) and y.dtype == torch.float32
    assert _relative_error(y, linear(x).detach()) < TOLERANCE[scheme]


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_a_strided_input_is_accepted(scheme):
    """Decoding a batch feeds the head `hidden[:, -1]`, a view whose rows are not adjacent."""
    torch.manual_seed(4)
    linear = nn.Linear(64, 32)
    layer = quantized_layer(linear, Quantization(scheme))
    hidden = torch.randn(3, 5, 64)
    assert torch.equal(layer(hidden[:, -1]), layer(hidden[:, -1].contiguous()))


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_the_state_dict_reloads_into_an_empty_layer_exactly(scheme):
    torch.manual_seed(1)
    linear = nn.Linear(64, 48)
    layer = quantized_layer(linear, Quantization(scheme))
    state = layer.state_dict()
    assert not state[f"weight_{scheme}"].is_floating_point()
    reloaded = empty_layer(linear, Quantization(scheme))
    reloaded.load_state_dict(state, assign=True)
    x = torch.randn(5, 64)
    assert torch.equal(reloaded(x), layer(x))


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_weights_at_an_unaligned_address_load_and_compute(scheme):
    """safetensors places tensors 8-byte aligned; the int8 kernel crashed on such weights."""
    torch.manual_seed(3)
    linear = nn.Linear(576, 960, bias=False)
    layer = quantized_layer(linear, Quantization(scheme))
    state = {}
    for key, tensor in layer.state_dict().items():
        buffer = torch.empty(tensor.numel() * tensor.element_size() + 8, dtype=torch.uint8)[8:]
        state[key] = buffer.view(tensor.dtype).view(tensor.shape).copy_(tensor)  # 8 bytes past an aligned start
    reloaded = empty_layer(linear, Quantization(scheme))
    reloaded.load_state_dict(state, assign=True)
    x = torch.randn(15, 576)
    assert torch.equal(reloaded(x), layer(x))


def test_int8_dequantizes_many_rows_a_slice_of_the_weight_at_a_time(monkeypatch):
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(nn.Linear(64, 100))
    x = torch.randn(40, 64)  # above the kernel's rows: the dequantized path
    whole = layer(x)
    monkeypatch.setattr(quantize, "DEQUANTIZE_CHUNK", 64 * 16)  # 16 output rows a slice: 7 slices, the last short
    sliced = layer(x)
    torch.testing.assert_close(sliced, whole)
    kernel = torch.cat([layer(x[i : i + 8]) for i in range(0, 40, 8)])  # the row-by-row kernel, 8 rows a call
    torch.testing.assert_close(sliced, kernel, rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("group_size", [32, 64])
def test_int4_dequantizes_many_rows_into_the_kernels_product(group_size):
    """Prefill (over 64 rows) reads the kernel's packed codes itself; it must agree with the kernel."""
    torch.manual_seed(0)
    layer = Int4Linear.from_linear(nn.Linear(192, 320), group_size)  # 320 rows: 5 blocks of 64
    x = torch.randn(100, 192)
    assert 100 > quantize.INT4_KERNEL_MAX_ROWS
    kernel = torch.cat([layer(x[i : i + 50]) for i in range(0, 100, 50)])  # 50 rows a call: the kernel
    torch.testing.assert_close(layer(x), kernel, rtol=2e-2, atol=2e-2)
    if not quantize.cpu_int4_layout_is_known():  # a CPU whose kernel packs otherwise (AVX2): the kernel throughout
        assert torch.equal(layer(x), torch.cat([layer(x[:50]), layer(x[50:])]))
        return
    dense = quantize.dequantize_int4_cpu(layer.packed, group_size, layer.scales_and_zeros)  # (in, rows)
    codes = unpack_int4(layer.packed, 192, 320).float().view(320, -1, group_size)
    scales, zeros = layer.scales_and_zeros.float().unbind(-1)  # (groups, rows) each
    want = ((codes - 8) * scales.t()[..., None] + zeros.t()[..., None]).view(320, 192)
    torch.testing.assert_close(dense.float().t(), want, rtol=1e-2, atol=1e-3)


def test_int4_rows_not_in_blocks_of_64_keep_the_kernel():
    torch.manual_seed(0)
    layer = Int4Linear.from_linear(nn.Linear(64, 200), 32)  # padded to 208 rows: not whole blocks of 64
    x = torch.randn(80, 64)
    assert torch.equal(layer(x), torch.cat([layer(x[:40]), layer(x[40:])]))


def test_int4_codes_come_back_exactly_from_the_kernel_layout():
    codes = torch.randint(0, 16, (208, 96), dtype=torch.uint8)
    assert torch.equal(unpack_int4(pack_int4(codes), 96, 208), codes)


def test_int4_needs_inputs_in_whole_groups():
    with pytest.raises(ValueError, match="groups of 32.*use int8"):
        Int4Linear(48, 16, bias=False, group_size=32)


def test_a_bad_scheme_or_group_is_refused():
    with pytest.raises(ValueError, match="int3"):
        Quantization("int3")
    with pytest.raises(ValueError, match="group size"):
        Quantization("int4", group_size=48)


def test_a_quantized_model_is_not_quantized_twice():
    from gptlab.config import GPTConfig
    from gptlab.model import GPT

    model = GPT(GPTConfig(vocab_size=64, context_length=16, n_layer=1, n_head=2, n_embd=32))
    quantize_model(model, Quantization("int8"))
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model, Quantization("int8"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the CUDA int4 layout and kernels")
def test_an_int4_layer_moves_to_cuda_and_computes_the_same():
    torch.manual_seed(2)
    linear = nn.Linear(128, 64)
    layer = quantized_layer(linear, Quantization("int4"))
    x = torch.randn(4, 128)
    on_gpu = layer.to("cuda")(x.cuda()).cpu()
    assert _relative_error(on_gpu, layer.to("cpu")(x)) < 0.01


def test_both_schemes_quantize_the_head_to_int8_by_default():
    from gptlab.config import GPTConfig
    from gptlab.model import GPT

    heads = {}
    for scheme in ("int8", "int4"):
        model = GPT(GPTConfig(vocab_size=64, context_length=16, n_layer=1, n_head=2, n_embd=32))
        quantize_model(model, Quantization(scheme))
        heads[scheme] = type(model.lm_head).__name__
    assert heads == {"int8": "Int8Linear", "int4": "Int8Linear"}  # the int4 head costs 5% perplexity
    # config.json files written before the head had a scheme said true (the scheme's own) or false (float)
    assert Quantization("int4", head=True).head == "int4" and Quantization("int8", head=False).head is None
    assert Quantization("int4", head=None).head is None
    with pytest.raises(ValueError, match="quantized head"):
        Quantization("int8", head="int2")


def test_a_quantization_record_with_a_boolean_head_still_reads():
    from gptlab.fields import settings_from_json

    assert settings_from_json(Quantization, {"scheme": "int4", "head": False}, "config.json").head is None
    assert settings_from_json(Quantization, {"scheme": "int8", "head": True}, "config.json").head == "int8"
    assert settings_from_json(Quantization, {"scheme": "int4", "head": "int8"}, "config.json").head == "int8"
