"""The split float32 product and the reordered bfloat16 weight (`gptlab.linear`) equal `F.linear`
for every layout, bias and shape, and models keep the weight layout their dtype reads fastest."""

import copy

import pytest
import torch
import torch.nn.functional as F

from gptlab.linear import Linear, can_reorder_bf16, split_linear
from gptlab.loading import load_model


@pytest.mark.parametrize("chunks", [2, 4])
@pytest.mark.parametrize("input_major", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 48), (3, 5, 48)])
@pytest.mark.parametrize("outputs", [96, 97])  # 97: outputs left over after equal blocks
def test_split_linear_equals_linear(chunks, input_major, bias, shape, outputs):
    torch.manual_seed(0)
    weight = torch.randn(outputs, 48)
    if input_major:
        weight = weight.t().contiguous().t()
    b = torch.randn(outputs) if bias else None
    x = torch.randn(*shape)
    got = split_linear(x, weight, b, chunks)
    assert got.shape == (*shape[:-1], outputs)
    torch.testing.assert_close(got, F.linear(x, weight, b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 128, 129])
def test_linear_layer_on_two_threads_equals_linear(rows):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        layer = Linear(32, 64)
        x = torch.randn(rows, 32, requires_grad=True)
        y = layer(x)
        torch.testing.assert_close(y, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        y.sum().backward()  # differentiable either way
        assert layer.weight.grad is not None and x.grad is not None
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype, input_major", [(torch.float32, True), (torch.bfloat16, False)])
def test_loaded_projection_layout_follows_the_dtype(dtype, input_major):
    model = load_model("gpt-tiny", dtype=dtype).model
    weight = model.h[0].mlp.c_fc.weight  # (out, in) to autograd in both layouts
    assert weight.shape == (model.config.hidden_size, model.config.n_embd)
    assert weight.t().is_contiguous() is input_major and weight.is_contiguous() is not input_major


needs_reorder = pytest.mark.skipif(not can_reorder_bf16(), reason="needs oneDNN and a CPU with native bf16")


@needs_reorder
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 64), (3, 5, 64), (300, 64)])
def test_bf16_inference_reads_a_reordered_weight_with_the_same_results(bias, shape):
    torch.manual_seed(0)
    layer = Linear(64, 96, bias=bias).to(torch.bfloat16)
    x = torch.randn(*shape, dtype=torch.bfloat16)
    with torch.no_grad():
        got = layer(x)
    assert layer._reordered is not None and got.shape == (*shape[:-1], 96)
    torch.testing.assert_close(got, F.linear(x, layer.weight, layer.bias), rtol=1.6e-2, atol=1e-2)


@needs_reorder
def test_the_reordered_weight_follows_changes_to_the_weight_and_is_not_copied():
    torch.manual_seed(0)
    layer = Linear(32, 48).to(torch.bfloat16)
    x = torch.randn(2, 32, dtype=torch.bfloat16)
    with torch.no_grad():
        layer(x)
        layer.weight.mul_(-3)  # in place: same address, new version
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1.6e-2, atol=1e-2)
        layer.load_state_dict({"weight": torch.randn(48, 32), "bias": torch.zeros(48)})
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1.6e-2, atol=1e-2)
        twin = copy.deepcopy(layer)
        assert twin._reordered is None
        torch.testing.assert_close(twin(x), layer(x))


def test_bf16_with_gradients_keeps_the_plain_weight():
    layer = Linear(32, 48).to(torch.bfloat16)
    x = torch.randn(2, 32, dtype=torch.bfloat16, requires_grad=True)
    layer(x).float().sum().backward()
    assert layer._reordered is None and layer.weight.grad is not None
