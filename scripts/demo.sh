#!/usr/bin/env bash
# The quick-start main job, with real weights and no network: the built-in SmolLM2-135M-Instruct
# answers two questions, is fine-tuned into a spam classifier (a short version of the recipe in
# docs/results.md), labels a few messages, and the command that opens the chat page is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
export GPTLAB_DATA_DIR=${GPTLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}
GPTLAB=.venv/bin/gptlab
RUN=runs/demo-spam

echo "== 1. chat: the built-in smollm2 (SmolLM2-135M-Instruct, read from its GGUF file) answers two questions"
printf '%s\n' "What is the capital of France?" "Give three tips for staying healthy." \
  | $GPTLAB chat --model smollm2 --temperature 0 --max-new-tokens 60 | tail -n +6  # tail: past the chat's help
echo
echo "== 2. fine-tune smollm2 into a spam classifier: the book's chapter 6 on a third of its balanced splits"
echo "   (355 / 50 / 102 texts), the last 4 of its 30 blocks and a new class head, 50 steps (the full"
echo "   recipe in docs/results.md trains 300 steps on all 1,045 training texts)"
$GPTLAB finetune classify --data sms-spam --model smollm2 --subset 0.34 --train-layers last-4 --lr 2e-4 \
  --min-lr 2e-5 --warmup-steps 5 --max-steps 50 --eval-every 50 --eval-batches 2 --precision bf16-mixed \
  --group-by-length --out "$RUN"
echo
echo "== 3. label new messages with the fine-tuned classifier (label, probability, text)"
$GPTLAB classify --model "$RUN" \
  "Congratulations! You've won a free cruise. Text WIN to 80086 to claim your prize now" \
  "Are we still on for dinner tonight? I'll bring the wine" \
  "URGENT: your account is locked. Call 0800 123 456 to verify your details" \
  "Sorry, running 10 min late, save me a seat"
echo
echo "== 4. chat with smollm2 in your browser (OpenAI-compatible API on the same port):"
echo "   .venv/bin/gptlab serve --model smollm2      # then open http://127.0.0.1:8000/"
echo "   The full spam recipe, instruction tuning, a local LLM judge and DPO: docs/results.md."
echo "   The old demo, pretraining a small GPT from scratch on The Verdict: see docs/getting-started.md."
