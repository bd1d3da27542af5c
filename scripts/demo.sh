#!/usr/bin/env bash
# The quick-start main job: build a small GPT, describe it, and generate with the KV cache.
# (Grows as gptlab does: the training-loop issue turns this into pretrain-then-generate.)
set -euo pipefail
cd "$(dirname "$0")/.."
export GPTLAB_DATA_DIR=${GPTLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}
GPTLAB=.venv/bin/gptlab

echo "== gptlab info gpt-small: a ~30M-parameter GPT-2-style model built from the preset"
$GPTLAB info gpt-small
echo
echo "== gptlab generate: 40 tokens through the KV-cached path."
echo "   The weights are RANDOM (nothing is trained yet), so expect gibberish; the point is the pipeline."
$GPTLAB generate --model gpt-small --prompt "Every effort moves you" --max-new-tokens 40 \
  --temperature 0.8 --top-k 50 --seed 42 --stream
echo
echo "Next: load real GPT-2 weights with --model openai-community/gpt2 (needs network once),"
echo "or any Hugging Face GPT-2 folder: gptlab generate --model path/to/folder --prompt '...'"
