"""gptlab: a from-scratch PyTorch toolkit for GPT-2- and Llama-family language models.

The Python API (docs/python-api.md):

    from gptlab import load_model, generate, ask, GenerationSettings
    model = load_model("gpt2")            # a preset, built-in, checkpoint/run folder, HF folder, .gguf, hub name
    print(generate(model, "Every effort moves you", max_new_tokens=20, temperature=0))

Names are imported on first use, so `import gptlab` stays cheap and `gptlab --version` fast.
"""

from __future__ import annotations

import re
from importlib import import_module, metadata
from typing import Any

__version__ = "0.1.0"
# The oldest torch gptlab runs on (pyproject.toml says the same): every attention call passes
# scaled_dot_product_attention's `enable_gqa` (2.5). Newer features are checked where they are used.
MIN_TORCH = (2, 5)


def check_torch(version: str | None) -> None:
    """Refuse a torch older than MIN_TORCH in one line at import, before it fails deep in a forward pass.

    `version` is the installed distribution's (read without importing torch, which is slow); None when
    torch is not installed as a package (then importing it decides)."""
    found = re.match(r"(\d+)\.(\d+)", version or "")
    if found and (int(found[1]), int(found[2])) < MIN_TORCH:
        floor = ".".join(map(str, MIN_TORCH))
        raise ImportError(f"gptlab needs torch >= {floor}, found {version}: pip install -U 'torch>={floor}'")


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


check_torch(_installed("torch"))

_PUBLIC = {  # name -> module that defines it
    "load_model": "gptlab.loading",
    "LoadedModel": "gptlab.loading",
    "CheckpointMeta": "gptlab.checkpoint.meta",
    "save_checkpoint": "gptlab.checkpoint.native",
    "export_hf_folder": "gptlab.checkpoint.hf",
    "GPT": "gptlab.model",
    "GPTConfig": "gptlab.config",
    "GenerationSettings": "gptlab.generation",
    "Completion": "gptlab.generation",
    "Engine": "gptlab.engine",
    "EngineLimits": "gptlab.engine",
    "generate": "gptlab.api",
    "stream": "gptlab.api",
    "ask": "gptlab.api",
    "PromptStyle": "gptlab.prompts",
    "TemplateStyle": "gptlab.prompts",
    "Conversation": "gptlab.prompts",
    "prompt_style": "gptlab.prompts",
    "LoRASettings": "gptlab.lora",
    "Quantization": "gptlab.quantize",
    "get_tokenizer": "gptlab.tokenizer",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'gptlab' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value  # looked up once
    return value
