"""The module seams: the pure-Python layers import neither torch nor the checkpoint readers.

Data preparation reads prompt styles and tokenizers; a fresh interpreter shows what importing them
pulls in (this test process has long since imported everything).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

REPORT = "import sys, {module}; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' " \
         "or m.startswith('gptlab.checkpoint') or m in ('gptlab.model', 'gptlab.loading'))))"


@pytest.mark.parametrize("module", ["gptlab.prompts", "gptlab.tokenizer.bpe", "gptlab.tokenizer"])
def test_pure_python_layers_import_no_torch_model_or_readers(module):
    done = subprocess.run([sys.executable, "-c", REPORT.format(module=module)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []

