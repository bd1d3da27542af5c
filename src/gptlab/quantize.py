"""Weight-only quantization: int8 (per output channel) and int4 (per group of 32 inputs) projections.

Batch-1 decoding reads every weight once per token, so its speed is bytes per token: int8 reads a
quarter of float32, int4 an eighth. The matmuls are PyTorch's own kernels
(`_weight_int8pack_mm`, `_weight_int4pack_mm[_for_cpu]`), which take bfloat16 activations: a
quantized layer casts its input to bfloat16 and its output back, so the rest of the model may stay
in any dtype. On CPU, many rows (prefill, large batches) are faster through a bfloat16 copy of the
weight made for that call (int8 a slice at a time; int4 from the kernel's packed codes). Only
inference: the integer weights cannot train.

A quantized layer's state dict is portable (plain int8 rows; int4 as two codes per byte, low nibble
first), so a quantized checkpoint saved on one device loads on another; the int4 kernels' own packed
layout is made at load, for the device the layer lives on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from gptlab.model import GPT

SCHEMES = ("int8", "int4")
COMPUTE_DTYPE = torch.bfloat16  # the activations the weight-only kernels take
PROJECTIONS = ("c_attn", "c_fc", "c_proj")  # in each block: attention's, and the MLP's or every expert's
INT4_ROWS = 16  # the int4 kernels need a multiple of 16 output rows (a head gets zero rows added)
# The CPU int8 kernel is a loop of matrix-vector products (time grows with the rows); above 16 rows
# dequantizing into one bfloat16 matmul is faster (2304x768 weight, 1 thread: 0.65 vs 0.47 ms at 32
# rows, 136 vs 16 ms at 512; BENCHMARKS.md).
KERNEL_MAX_ROWS = 16
# Dequantizing a whole LM head (49152x576) into a 57 MB bfloat16 copy costs 17 ms, more than the
# kernel's 32 rows; a slice of about a million weights at a time stays in the caches (BENCHMARKS.md).
DEQUANTIZE_CHUNK = 1 << 20
PACK_CHUNK = 64  # rows packed at a time: the kernels' int32 input stays small (packing is row-local)
# The CPU int4 kernel multiplies in float32 and costs the same per row at 512 rows as at 1; above 64
# rows (prefill) dequantizing the packed codes into one bfloat16 matmul is faster (3072x576 weight,
# 512 rows: 3.5 vs 8.7 ms; at 16 rows 1.0 vs 0.3 ms; BENCHMARKS.md).
INT4_KERNEL_MAX_ROWS = 64


@dataclass(frozen=True)
class Quantization:
    """Which weights become integers, and how (recorded in a quantized checkpoint's config.json)."""

    scheme: str  # "int8": one scale per output row; "int4": a scale and zero per group of inputs
    group_size: int = 32  # int4 only: inputs sharing a scale and zero (32, as llama.cpp's Q4_1; or 64)
    # how the LM head is stored (a tied head gets a quantized copy; the embedding stays): "int8" (the
    # default for both schemes: measured on SmolLM2, +0.3-0.8% perplexity and the fastest head), "int4"
    # (+5%), or None (float). Older config.json files say true (the scheme's own) or false (float).
    head: str | bool | None = "int8"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"quantize {self.scheme!r} is not one of {', '.join(SCHEMES)}")
        if isinstance(self.head, bool):
            object.__setattr__(self, "head", self.scheme if self.head else None)
        if self.head is not None and self.head not in SCHEMES:
            raise ValueError(f"quantized head {self.head!r} is not one of {', '.join(SCHEMES)} or None (float)")
        if self.group_size not in (32, 64):
            raise ValueError(f"quantization group size must be 32 or 64, got {self.group_size}")

    def for_head(self) -> Quantization:
        """How the LM head is quantized (call only when `head` is set)."""
        if not isinstance(self.head, str):
            raise ValueError("the LM head is not quantized")
        return Quantization(self.head, self.group_size, self.head)


class Int8Linear(nn.Module):
    """y = x W^T * scale (+ b) with W int8 (out, in) and one scale per output row."""

    weight_int8: Tensor  # buffers (registered in __init__)
    scales: Tensor
    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(out_features, dtype=COMPUTE_DTYPE, device=device))
        self.register_buffer("bias", torch.empty(out_features, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        """The int8 copy of `linear` (symmetric, round to nearest)."""
        weight = linear.weight.detach().float().contiguous()  # (out, in), row-major whatever the layout
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)  # (out,)
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, weight.device)
        layer.weight_int8 = (weight / scales[:, None]).round().clamp(-128, 127).to(torch.int8)
        layer.scales = scales.to(COMPUTE_DTYPE)
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
        align(state_dict, prefix, ("weight_int8", "scales"))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features).to(COMPUTE_DTYPE).contiguous()  # (N, in); the kernels need rows
        if flat.device.type == "cpu" and flat.shape[0] <= KERNEL_MAX_ROWS:
            y = torch.ops.aten._weight_int8pack_mm(flat, self.weight_int8, self.scales)
        else:  # dequantize into a bfloat16 matmul: many rows (prefill, big batches), or a GPU
            y = dequantized_matmul(flat, self.weight_int8, self.scales)
        y = y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)


def dequantized_matmul(x: Tensor, weight_int8: Tensor, scales: Tensor) -> Tensor:
    """x (N, in) bfloat16 times the int8 weight, dequantized into bfloat16; on CPU a slice of output
    rows at a time, so that each bfloat16 copy is still in the caches when the matmul reads it."""
    rows = weight_int8.shape[0] if x.device.type != "cpu" else max(1, DEQUANTIZE_CHUNK // weight_int8.shape[1])
    parts = [F.linear(x, w.to(COMPUTE_DTYPE)) * s for w, s in zip(weight_int8.split(rows), scales.split(rows))]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


class Int4Linear(nn.Module):
    """y = x dequant(W)^T (+ b), W as 4-bit codes q with dequant(W) = (q - 8) * scale + zero per group.

    Holds the kernels' packed layout (device-specific); the state dict holds the portable codes.
    """

    scales_and_zeros: Tensor  # buffers (registered in __init__)
    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, bias: bool, group_size: int,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        if in_features % group_size:
            raise ValueError(f"int4 needs inputs in groups of {group_size}; a layer has {in_features}: use int8")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.rows = -(-out_features // INT4_ROWS) * INT4_ROWS  # out_features padded with zero rows
        self.packed = pack_int4(torch.zeros(self.rows, in_features, dtype=torch.uint8, device=device))
        self.register_buffer("scales_and_zeros", torch.empty(in_features // group_size, self.rows, 2,
                                                             dtype=COMPUTE_DTYPE, device=device))
        self.register_buffer("bias", torch.empty(out_features, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int) -> Int4Linear:
        """The int4 copy of `linear`: per group, the range [min, max] in 16 even steps."""
        weight = linear.weight.detach().float().contiguous()  # (out, in), row-major whatever the layout
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size, weight.device)
        weight = F.pad(weight, (0, 0, 0, layer.rows - linear.out_features))  # (rows, in)
        groups = weight.reshape(layer.rows, -1, group_size)  # (rows, in / g, g)
        low, high = groups.amin(dim=-1, keepdim=True), groups.amax(dim=-1, keepdim=True)
        scales = ((high - low) / 15).clamp(min=1e-6)
        codes = ((groups - low) / scales).round().clamp(0, 15).to(torch.uint8).reshape(layer.rows, -1)
        zeros = low + 8 * scales  # the kernels dequantize (q - 8) * scale + zero
        layer.packed = pack_int4(codes)
        layer.scales_and_zeros = torch.cat([scales, zeros], dim=-1).transpose(0, 1).to(COMPUTE_DTYPE).contiguous()
        if linear.bias is not None:
            layer.bias = linear.bias.detach().clone()
        return layer

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(-1, self.in_features).to(COMPUTE_DTYPE).contiguous()  # (N, in); the kernels need rows
        if (flat.device.type == "cpu" and flat.shape[0] > INT4_KERNEL_MAX_ROWS and self.rows % PACK_CHUNK == 0
                and cpu_int4_layout_is_known()):
            y = flat @ dequantize_int4_cpu(self.packed, self.group_size, self.scales_and_zeros)  # (N, rows)
        else:
            y = int4_matmul(flat, self.packed, self.group_size, self.scales_and_zeros)  # (N, rows)
        y = y[:, : self.out_features].reshape(*x.shape[:-1], self.out_features).to(x.dtype)
        return y if self.bias is None else y + self.bias.to(x.dtype)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Int4Linear:
        """Moving the layer re-packs its codes for the new device (the packed layouts differ)."""
        before = self.packed.device
        if fn(torch.empty(0, dtype=torch.uint8, device=before)).device == before:
            return super()._apply(fn, recurse)  # type: ignore[no-untyped-call]  # torch leaves _apply untyped
        codes = unpack_int4(self.packed, self.in_features, self.rows)
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        self.packed = pack_int4(fn(codes))
        return self

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        codes = unpack_int4(self.packed, self.in_features, self.rows)  # (rows, in)
        destination[prefix + "weight_int4"] = codes[:, 0::2] | (codes[:, 1::2] << 4)  # (rows, in / 2)

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, local_metadata: dict[str, Any],
                              strict: bool, missing_keys: list[str], unexpected_keys: list[str],
                              error_msgs: list[str]) -> None:
        align(state_dict, prefix, ("scales_and_zeros",))
        two_per_byte = state_dict.pop(prefix + "weight_int4", None)
        if two_per_byte is None:
            missing_keys.append(prefix + "weight_int4")
        elif tuple(two_per_byte.shape) != (self.rows, self.in_features // 2):
            error_msgs.append(f"{prefix}weight_int4: shape {tuple(two_per_byte.shape)}, expected "
                              f"{(self.rows, self.in_features // 2)}")
        else:
            codes = torch.stack([two_per_byte & 15, two_per_byte >> 4], dim=-1).reshape(self.rows, -1)
            self.packed = pack_int4(codes)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


QUANTIZED_LAYERS = (Int8Linear, Int4Linear)
KERNEL_ALIGNMENT = 64  # bytes; PyTorch's own allocations are aligned so


def align(state_dict: dict[str, Tensor], prefix: str, names: tuple[str, ...]) -> None:
    """Copy the kernels' inputs that sit at an unaligned address (safetensors packs tensors 8-byte
    aligned); the CPU int8 kernel crashes on them (a segmentation fault in torch 2.13)."""
    for key in (prefix + name for name in names):
        tensor = state_dict.get(key)
        if tensor is not None and tensor.device.type == "cpu" and tensor.data_ptr() % KERNEL_ALIGNMENT:
            state_dict[key] = tensor.clone()


def pack_int4(codes: Tensor) -> Tensor:
    """Codes (rows, in) of 0..15 in the int4 kernel's layout for their device."""
    if codes.device.type == "meta":
        return torch.empty(codes.shape[0], codes.shape[1] // 2, dtype=torch.uint8, device="meta")
    if codes.device.type == "cuda":  # two codes per byte, high nibble first; k tiles of 16 inputs that fit `in`
        k_tiles = next(tiles for tiles in (8, 4, 2) if codes.shape[1] % (tiles * 16) == 0)
        return torch.ops.aten._convert_weight_to_int4pack((codes[:, ::2] << 4 | codes[:, 1::2]).contiguous(), k_tiles)
    if not has_cpu_int4():
        raise ValueError(f"int4 on the CPU needs torch >= 2.6 (its CPU int4 kernels), found {torch.__version__}: "
                         "quantize to int8, or pip install -U 'torch>=2.6'")
    return torch.cat([torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes[i : i + PACK_CHUNK].to(torch.int32), 1)
                      for i in range(0, codes.shape[0], PACK_CHUNK)])


def has_cpu_int4() -> bool:
    """Whether this torch has the CPU int4 kernels (2.6 split them from the other devices' and renamed them)."""
    return hasattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu")


def unpack_int4(packed: Tensor, in_features: int, rows: int) -> Tensor:
    """The codes (rows, in) uint8 back from the kernel's layout, read exactly through the kernel itself:
    unit scales and a zero of 8 dequantize to the codes, and the identity matrix reads them out."""
    if packed.device.type == "meta":
        return torch.empty(rows, in_features, dtype=torch.uint8, device="meta")
    units = torch.tensor([1.0, 8.0], dtype=COMPUTE_DTYPE, device=packed.device).expand(1, rows, 2).contiguous()
    sz = units.expand(in_features // 32, rows, 2).contiguous()
    codes = torch.empty(rows, in_features, dtype=torch.uint8, device=packed.device)
    for start in range(0, in_features, 32):  # 32 inputs at a time: a single group of 32, so no large identity
        block = torch.zeros(32, in_features, dtype=COMPUTE_DTYPE, device=packed.device)
        block[:, start : start + 32] = torch.eye(32, dtype=COMPUTE_DTYPE, device=packed.device)
        codes[:, start : start + 32] = int4_matmul(block, packed, 32, sz).t().to(torch.uint8)
    return codes


def int4_matmul(x: Tensor, packed: Tensor, group_size: int, scales_and_zeros: Tensor) -> Tensor:
    """x (N, in) bfloat16 times the int4 weight: (N, rows)."""
    if x.device.type == "cpu":
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_zeros)
    return torch.ops.aten._weight_int4pack_mm(x, packed, group_size, scales_and_zeros)


@functools.cache
def cpu_int4_layout_is_known() -> bool:
    """Whether this CPU's int4 kernel packs codes the way `dequantize_int4_cpu` reads them: PyTorch packs
    differently for AVX-512 than for AVX2 CPUs (seen on an AMD EPYC without AVX-512), so the layout is
    checked once on a small matrix, and where it differs the kernel itself does every product."""
    codes = torch.arange(PACK_CHUNK * 64, dtype=torch.int32).reshape(PACK_CHUNK, 64).remainder(13).to(torch.uint8)
    unit = torch.tensor([1.0, 8.0], dtype=COMPUTE_DTYPE).expand(64 // 32, PACK_CHUNK, 2).contiguous()
    return torch.equal(dequantize_int4_cpu(pack_int4(codes), 32, unit).t(), codes.to(COMPUTE_DTYPE))


def dequantize_int4_cpu(packed: Tensor, group_size: int, scales_and_zeros: Tensor) -> Tensor:
    """The bfloat16 weight, transposed (in, rows), from the CPU kernel's packed layout: per block of 64
    output rows, (in, 32) bytes whose low nibble is row j and high nibble row 32 + j of the block."""
    groups, rows = scales_and_zeros.shape[:2]
    in_features, blocks = groups * group_size, rows // PACK_CHUNK
    bytes_ = packed.view(blocks, in_features, PACK_CHUNK // 2)
    codes = torch.cat([bytes_ & 15, bytes_ >> 4], dim=-1).to(COMPUTE_DTYPE)  # (blocks, in, 64)

    def per_block(values: Tensor) -> Tensor:  # (groups, rows) -> (blocks, groups, 1, 64), as `codes` reads
        return values.reshape(groups, blocks, PACK_CHUNK).transpose(0, 1).unsqueeze(2).contiguous()

    scales = per_block(scales_and_zeros[..., 0])
    offsets = per_block(scales_and_zeros[..., 1] - 8 * scales_and_zeros[..., 0])  # (q - 8) * s + z = q * s + offset
    weight = torch.addcmul(offsets, codes.view(blocks, groups, group_size, PACK_CHUNK), scales)
    return weight.view(blocks, in_features, PACK_CHUNK).transpose(0, 1).reshape(in_features, rows)


def quantized_layer(linear: nn.Linear, quantization: Quantization) -> nn.Module:
    """The quantized copy of one Linear."""
    if quantization.scheme == "int8":
        return Int8Linear.from_linear(linear)
    return Int4Linear.from_linear(linear, quantization.group_size)


def empty_layer(linear: nn.Linear, quantization: Quantization) -> nn.Module:
    """An unfilled quantized layer shaped like `linear` (on the meta device), for loading a saved one."""
    bias = linear.bias is not None
    if quantization.scheme == "int8":
        return Int8Linear(linear.in_features, linear.out_features, bias, "meta")
    return Int4Linear(linear.in_features, linear.out_features, bias, quantization.group_size, "meta")


def targets(model: GPT, quantization: Quantization) -> Iterator[tuple[nn.Module, str, nn.Module, Quantization]]:
    """(parent, attribute, layer, how) for every layer `quantization` covers: the block projections
    (every expert's in a mixture; its router stays float, as llama.cpp keeps it: a small matrix whose
    rounding would change which experts a token goes to) and optionally the LM head (never a
    classifier's small class head)."""
    for block in model.h:
        for parent in block.modules():
            for attribute in PROJECTIONS:
                if hasattr(parent, attribute):
                    yield parent, attribute, getattr(parent, attribute), quantization
    if quantization.head and model.config.num_classes is None:
        yield model, "lm_head", model.lm_head, quantization.for_head()


def quantize_model(model: GPT, quantization: Quantization, skeleton: bool = False) -> GPT:
    """Swap the covered Linears of a GPT for quantized layers, one at a time (the float weight of each
    is freed as soon as its copy exists). `skeleton`: unfilled layers, for loading saved ones."""
    if is_quantized(model):
        raise ValueError("the model is already quantized")
    make = empty_layer if skeleton else quantized_layer
    for parent, attribute, linear, how in list(targets(model, quantization)):
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"cannot quantize {type(linear).__name__} layers (LoRA adapters? merge them first)")
        setattr(parent, attribute, make(linear, how))
    return model


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(module, QUANTIZED_LAYERS) for module in model.modules())


def refuse_training(model: nn.Module, what: str) -> None:
    """Integer weights have no gradients: say so before a training run starts, not in its first step."""
    if is_quantized(model):
        raise ValueError(f"{what} is quantized (int8/int4 weights cannot train); train or fine-tune the float "
                         "model it came from, then quantize the result (gptlab convert --quantize)")


def stored_bytes(model: nn.Module) -> int:
    """Bytes the model's weights take: every parameter and buffer (a quantized model's weights are buffers)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    own = sum(t.numel() * t.element_size() for t in tensors.values())
    packed = sum(m.packed.numel() for m in model.modules() if isinstance(m, Int4Linear))
    return own + packed
