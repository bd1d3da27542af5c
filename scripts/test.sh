#!/usr/bin/env bash
# Run the whole test suite in .venv. pytest's "no tests collected" (exit 5) is a failure here.
set -uo pipefail
cd "$(dirname "$0")/.."
export GPTLAB_DATA_DIR=${GPTLAB_DATA_DIR:-$(cd .. && pwd)/shared/data}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# two workers (pytest-xdist), each test module on one of them so its fixtures are built once; on this 2-core
# machine much of a test's time is a subprocess starting or a server waiting, which the other worker fills.
# GPTLAB_TEST_WORKERS=0 runs everything in this one process.
workers=${GPTLAB_TEST_WORKERS:-2}
# One torch thread per worker (and per command it starts): two workers on two cores each with two threads
# spend their time in OpenMP's spin-waits (the family engine tests: 10x the CPU time on this machine).
if [ "$workers" = 0 ]; then parallel=(); else parallel=(-n "$workers" --dist loadscope); export OMP_NUM_THREADS=1; fi
.venv/bin/python -m pytest "${parallel[@]}" "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi
exit $rc
