"""What a model family is: the record each file of `gptlab.models` fills in, and that the generic
readers and writers (`gptlab.checkpoint`, `gptlab.tokenizer`) ask instead of knowing families.

Plain data and pure functions on configs and tensors: this package imports only `config`, and torch
only where weights are converted, so the tokenizer (torch-free) and the checkpoint readers can consult
every family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from gptlab.config import GPTConfig, RopeScaling

if TYPE_CHECKING:
    from torch import Tensor

OFFSETS_ONLY = ("trim_offsets",)  # tokenizer.json settings that move character offsets, never ids
# settings `tokenizers` assumes where a file leaves them out (GPT-2's and Pythia's predate `use_regex`)
DEFAULT_SETTINGS = {"ByteLevel": {"use_regex": True}}
# the ByteLevel step after a Split that has already cut the text: bytes to characters, no regex of its own
BYTE_LEVEL_ONLY = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}


@dataclass(frozen=True)
class PreTokenizer:
    """How text is cut into pieces before BPE, under each name model files give that cut."""

    name: str  # llama.cpp's name, as a GGUF file writes it in `tokenizer.ggml.pre`
    pattern: str  # the cut as one regex, the way tiktoken runs it
    hf: dict[str, Any]  # the cut as Hugging Face `tokenizers` writes it (tokenizer.json "pre_tokenizer")

    def matches(self, found: str | dict[str, Any] | None) -> bool:
        """Whether a file's pre-tokenizer (a GGUF name or a tokenizer.json spec) is this cut."""
        if isinstance(found, str):
            return found == self.name
        return found is not None and _ids_only(found) == _ids_only(self.hf)


def regex_cut(name: str, pattern: str) -> PreTokenizer:
    """A cut by one regex, as `tokenizers` writes it: a Split keeping each match whole, then a regex-free
    ByteLevel (Llama 3, Qwen2, vocabularies trained here)."""
    split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
    return PreTokenizer(name, pattern, {"type": "Sequence", "pretokenizers": [split, BYTE_LEVEL_ONLY]})


def _ids_only(spec: Any) -> Any:
    """A tokenizer.json spec with the settings it leaves out filled in, without those that cannot change ids."""
    if isinstance(spec, dict):
        kind = spec.get("type")
        spec = {**DEFAULT_SETTINGS.get(kind, {}), **spec} if isinstance(kind, str) else spec
        return {k: _ids_only(v) for k, v in spec.items() if k not in OFFSETS_ONLY}
    if isinstance(spec, list):
        return [_ids_only(v) for v in spec]
    return spec


@dataclass(frozen=True)
class ChatDefaults:
    """How a family's chat models expect to be prompted when neither the user nor a checkpoint says."""

    prompt_style: str | None = None  # name of a prompt style (e.g. "chatml"); None: no chat format of its own
    default_system: str | None = None  # the system message its chat template inserts when none is given


@dataclass(frozen=True)
class HFFormat:
    """How the family reads and writes Hugging Face folders (`config.json` + safetensors)."""

    model_types: tuple[str, ...]  # config.json "model_type" values it reads
    read_config: Callable[[dict[str, Any], str], GPTConfig]  # (config.json, its path for errors) → our config
    write_config: Callable[[GPTConfig], dict[str, Any]]  # our config → a config.json transformers reads
    to_ours: Callable[[dict[str, Tensor], GPTConfig], dict[str, Tensor]]  # rename, transpose, fuse
    to_hf: Callable[[dict[str, Tensor], GPTConfig], dict[str, Tensor]]  # the inverse, for export


GGUFValue = int | float | bool | str  # a metadata value as GGUF stores one (ints as uint32, floats as float32)


@dataclass(frozen=True)
class GGUFFormat:
    """How the family reads llama.cpp's GGUF files, and writes them where llama.cpp runs its models."""

    architectures: tuple[str, ...]  # `general.architecture` values it reads; the first is the one it writes
    # (metadata, each tensor's shape by name (rows first, as torch has it), path) → our config
    read_config: Callable[[dict[str, Any], dict[str, tuple[int, ...]], str], GPTConfig]
    to_ours: Callable[[dict[str, Tensor], GPTConfig], dict[str, Tensor]]  # rename, unpermute, fuse
    # our config → the file's `<architecture>.…` metadata (full keys); None: gptlab does not write this family
    write_config: Callable[[GPTConfig], dict[str, GGUFValue]] | None = None
    to_gguf: Callable[[dict[str, Tensor], GPTConfig], dict[str, Tensor]] | None = None  # split, permute, rename


@dataclass(frozen=True)
class Family:
    """Everything gptlab knows about one model family; one file of `gptlab.models` per family."""

    name: str  # what `GPTConfig.family` says of a model of this family
    # "gpt2": GPT-2's published BPE; "file": the model file's own (a tokenizer.json, a GGUF vocabulary)
    vocabulary: Literal["gpt2", "file"]
    hf: HFFormat
    gguf: GGUFFormat | None = None
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → GPTConfig fields
    pre_tokenizers: tuple[PreTokenizer, ...] = ()  # cuts before BPE that this family brings
    chat: ChatDefaults = ChatDefaults()
    # whether a config that names no family has this family's blocks (configs written before they named one)
    holds: Callable[[GPTConfig], bool] | None = None


SCALED_ROPES_TODO = ("yarn", "longrope", "dynamic")  # rope scalings of other families that gptlab refuses


def rope_from_hf(hf: dict[str, Any], source: str) -> tuple[float, RopeScaling | None]:
    """The rotary base and scaling of a Hugging Face config.json, in transformers 4.x spelling
    (`rope_theta`, `rope_scaling`) or 5.x (`rope_parameters`); a scaling gptlab lacks is refused."""
    params = {**(hf.get("rope_scaling") or {}), **(hf.get("rope_parameters") or {})}
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind == "linear":
        return theta, RopeScaling("linear", float(params["factor"]))
    if kind == "llama3":
        try:
            return theta, RopeScaling("llama3", float(params["factor"]), float(params["low_freq_factor"]),
                                      float(params["high_freq_factor"]),
                                      int(params["original_max_position_embeddings"]))
        except KeyError as err:
            raise ValueError(f"{source}: rope scaling 'llama3' needs {err}") from None
    raise ValueError(f"{source}: rope scaling {kind!r} is not supported; gptlab reads 'linear' and 'llama3' "
                     f"(not yet {', '.join(SCALED_ROPES_TODO)})")


def rope_to_hf(config: GPTConfig) -> dict[str, Any]:
    """`rope_theta` and `rope_scaling` as a config.json writes them (transformers 4.x and 5.x read them)."""
    scaling = config.rope_scaling
    if scaling is None:
        return {"rope_theta": config.rope_theta, "rope_scaling": None}
    if scaling.kind == "factors":
        raise ValueError("rotary factors read from a GGUF file (rope_freqs) have no Hugging Face spelling; export "
                         "the model from its Hugging Face folder, whose config keeps the llama3 settings")
    written: dict[str, Any] = {"rope_type": scaling.kind, "factor": scaling.factor}
    if scaling.kind == "llama3":
        written.update(low_freq_factor=scaling.low_freq_factor, high_freq_factor=scaling.high_freq_factor,
                       original_max_position_embeddings=scaling.original_context)
    return {"rope_theta": config.rope_theta, "rope_scaling": written}


def rotary_fraction_from_hf(hf: dict[str, Any], default: float = 1.0) -> float:
    """The share of each head's dimensions that rotate: `partial_rotary_factor` (transformers 5 keeps it in
    `rope_parameters`; Phi-4-mini, GPT-NeoX) or GPT-NeoX's older `rotary_pct`; `default` where none is given."""
    params = hf.get("rope_parameters") or {}
    return float(params.get("partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", default))))


def window_from_hf(hf: dict[str, Any], n_layer: int, windowed: list[int] | None = None) -> dict[str, Any]:
    """`sliding_window` and `sliding_layers` of our config from a config.json: its `layer_types` where it
    lists them (transformers 5), else the blocks `windowed` (the family's rule; None: every block)."""
    window = hf.get("sliding_window")
    if "layer_types" in hf and hf["layer_types"] is not None:
        windowed = [i for i, kind in enumerate(hf["layer_types"]) if kind == "sliding_attention"]
    if window is None or windowed == []:
        return {"sliding_window": None, "sliding_layers": None}
    if windowed is None or windowed == list(range(n_layer)):
        return {"sliding_window": window, "sliding_layers": None}
    return {"sliding_window": window, "sliding_layers": tuple(windowed)}


def window_to_hf(config: GPTConfig) -> dict[str, Any]:
    """`sliding_window` and `layer_types` as transformers 5 reads them."""
    kinds = ["sliding_attention" if config.windowed(i) else "full_attention" for i in range(config.n_layer)]
    return {"sliding_window": config.sliding_window, "layer_types": kinds}


def window_from_gguf(meta: dict[str, Any], arch: str, source: str) -> dict[str, Any]:
    """`sliding_window` and `sliding_layers` from a GGUF file's `<arch>.attention.sliding_window` and
    `<arch>.attention.sliding_window_pattern`, one flag per block (absent: every block is windowed)."""
    flags = meta.get(f"{arch}.attention.sliding_window_pattern")
    if flags is not None and not isinstance(flags, list):
        raise ValueError(f"{source}: {arch}.attention.sliding_window_pattern {flags!r} is not supported; gptlab "
                         "reads one flag per block")
    windowed = None if flags is None else [i for i, flag in enumerate(flags) if flag]
    return window_from_hf({"sliding_window": meta.get(f"{arch}.attention.sliding_window")}, len(flags or []), windowed)


Parts = dict[str, list[tuple[str, tuple[int, ...]]]]
"""Our tensor name → the file's tensors (name, shape) that are stacked along rows to make it."""


def check_piece(name: str, tensor: Tensor, shape: tuple[int, ...]) -> Tensor:
    """`tensor`, the file's `name`, if it can be that weight: floating point and of `shape`. Checked before
    any transposing, regrouping or stacking, which would hide what the file holds (`torch.cat` turns an
    int64 q_proj beside float k/v into floats); the reader puts its path before the error."""
    if not tensor.is_floating_point():
        raise ValueError(f"{name} has dtype {str(tensor.dtype).removeprefix('torch.')}, expected a floating-point "
                         "tensor; the file is damaged or was not written for a model")
    if tuple(tensor.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {shape}; the config does not match the "
                         "weights, or the file belongs to another model")
    return tensor


def piece_shapes(parts: Parts) -> dict[str, tuple[int, ...]]:
    """Each file tensor's expected shape, by its name in the file."""
    return {name: shape for pieces in parts.values() for name, shape in pieces}


def stack_parts(file_state: dict[str, Tensor], parts: Parts) -> dict[str, Tensor]:
    """Our tensors from a file's, each piece checked first (`check_piece`); tensors no part claims keep
    their names, so the shape check names them.

    Takes each file tensor out of `file_state` as it is stacked, so it is freed once copied: a model's
    q/k/v and gate/up never live twice (a family that renames or shifts tensors before stacking keeps
    this by changing `file_state` in place, not by building a second dict beside it).
    """
    import torch  # here, not at the top: the families' data is read where torch is not imported (tokenizers)

    state = {}
    for ours, pieces in parts.items():
        if all(name in file_state for name, _ in pieces):
            taken = [check_piece(name, file_state.pop(name), shape) for name, shape in pieces]
            state[ours] = taken[0] if len(taken) == 1 else torch.cat(taken)
    state.update(file_state)  # what no part claims
    return state


def split_parts(state: dict[str, Tensor], parts: Parts) -> dict[str, Tensor]:
    """The file's tensors from ours: the inverse of `stack_parts`, each part contiguous for saving."""
    out = {}
    for ours, pieces in parts.items():
        for (name, _), piece in zip(pieces, state[ours].split([shape[0] for _, shape in pieces])):
            out[name] = piece.contiguous()
    return out


Names = dict[str, str]
"""A file's tensor name (without ".weight"/".bias") for each role; "{i}" is the block, "{e}" the expert."""


def block_parts(config: GPTConfig, names: Names) -> Parts:
    """Each of our tensors as the file's tensors it stacks, for a model whose roles `names` spells.

    Roles a config does not use are left out: post-norms without `norm_position` post, QK-norms
    without `qk_norm`, biases without `qkv_bias`/`bias`/LayerNorm. q/k/v and gate/up come separate
    ("q", "k", "v"; "gate", "up") or fused as the file keeps them ("qkv"; "gate_up"); an ungated
    MLP's first projection is "fc"; a mixture's router is "router", its experts "expert_gate",
    "expert_up", "expert_down".
    """
    width, hd, vocab = config.n_embd, config.head_dim, config.vocab_size
    q_rows, kv_rows = config.n_head * hd, config.kv_heads * hd
    norm_bias = config.norm == "layernorm"
    layout: Parts = {}

    def add(ours: str, pieces: list[tuple[str, int]], bias: bool = False, i: int = 0, e: int = 0,
            inputs: int | None = None) -> None:  # inputs: a matrix's columns; None: a vector (a norm's weight)
        for suffix in (".weight", ".bias") if bias else (".weight",):
            layout[ours + suffix] = [(names[role].format(i=i, e=e) + suffix,
                                      (rows, inputs) if inputs is not None and suffix == ".weight" else (rows,))
                                     for role, rows in pieces]

    def mlp(prefix: str, hidden: int, i: int, e: int | None = None) -> None:
        gate, up, down = ("expert_gate", "expert_up", "expert_down") if e is not None else ("gate", "up", "down")
        if config.mlp not in ("swiglu", "geglu"):
            first = [("fc", hidden)]
        elif "gate_up" in names and e is None:
            first = [("gate_up", 2 * hidden)]
        else:
            first = [(gate, hidden), (up, hidden)]
        add(f"{prefix}.c_fc", first, config.bias, i, e or 0, inputs=width)
        add(f"{prefix}.c_proj", [(down, width)], config.bias, i, e or 0, inputs=hidden)

    add("wte", [("wte", vocab)], inputs=width)
    if config.positions == "learned":
        add("wpe", [("wpe", config.context_length)], inputs=width)
    add("ln_f", [("ln_f", width)], norm_bias)
    if not config.head_is_tied:
        add("lm_head", [("lm_head", vocab)], inputs=width)
    pre, post = config.norm_position in ("pre", "both"), config.norm_position in ("post", "both")
    for i in range(config.n_layer):
        block = f"h.{i}"
        for ours, role, used in (("ln_1", "ln_1", pre), ("ln_2", "ln_2", pre),
                                 ("attn_out_norm", "attn_out_norm", post), ("mlp_out_norm", "mlp_out_norm", post)):
            if used:
                add(f"{block}.{ours}", [(role, width)], norm_bias, i)
        qkv = [("qkv", q_rows + 2 * kv_rows)] if "qkv" in names else [("q", q_rows), ("k", kv_rows), ("v", kv_rows)]
        add(f"{block}.attn.c_attn", qkv, config.qkv_bias, i, inputs=width)
        add(f"{block}.attn.c_proj", [("o", width)], config.bias, i, inputs=q_rows)
        if config.qk_norm != "none":
            per_head = config.qk_norm == "head"
            add(f"{block}.attn.q_norm", [("q_norm", hd if per_head else q_rows)], i=i)
            add(f"{block}.attn.k_norm", [("k_norm", hd if per_head else kv_rows)], i=i)
        if config.experts is None:
            mlp(f"{block}.mlp", config.hidden_size, i)
            continue
        add(f"{block}.mlp.router", [("router", config.experts.count)], i=i, inputs=width)
        for e in range(config.experts.count):
            mlp(f"{block}.mlp.experts.{e}", config.experts.hidden, i, e)
    return layout
