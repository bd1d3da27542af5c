#!/usr/bin/env bash
# The quick-start main job: pretrain a small GPT on The Verdict for about a minute, then
# generate from it with the KV cache, and point at the run folder's plots.
set -euo pipefail
cd "$(dirname "$0")/.."
export GPTLAB_DATA_DIR=${GPTLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}
GPTLAB=.venv/bin/gptlab
RUN=runs/demo-verdict

echo "== 1. pretrain: a 4-layer, 192-wide GPT (11M parameters, GPT-2 tokenizer) on The Verdict"
echo "      (Edith Wharton's short story, 5,145 tokens: watch the loss fall and the samples improve)"
$GPTLAB pretrain --data the-verdict --model gpt-small --n-layer 4 --n-head 4 --n-embd 192 \
  --context-length 128 --batch-size 8 --max-steps 150 --warmup-steps 10 --lr 2e-3 \
  --eval-every 50 --eval-batches 2 --seed 123 --out "$RUN"
echo
echo "== 2. generate with the final weights ($RUN/checkpoints/last; KV cache, top-k sampling)."
echo "   The run folder itself means its best-validation checkpoint, which on 5 KB of text is an"
echo "   early one: the training loss keeps falling while the validation loss rises (memorisation)."
$GPTLAB generate --model "$RUN/checkpoints/last" --prompt "Every effort moves you" --max-new-tokens 40 \
  --temperature 0.7 --top-k 20 --seed 1 --stream
echo
echo "== 3. look at $RUN/loss.png and $RUN/lr.png; metrics are in $RUN/metrics.jsonl."
echo "   Five kilobytes of text teach a model little beyond memorising phrases: pretrain longer on"
echo "   more text (--data tinyshakespeare, or your own files), or load GPT-2 weights with"
echo "   --model openai-community/gpt2 (needs network once)."
