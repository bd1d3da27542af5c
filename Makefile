# Quick start: `make demo` (the main job: real weights, offline; scripts/demo.sh) and `make test` (the whole suite).
# `make test` lints first (ruff and mypy, configured in pyproject.toml).
# Both create .venv and install gptlab first when needed (scripts/setup.sh); `test` also makes
# chromium available for the chat-page browser test (scripts/browser.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
export GPTLAB_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup browser demo lint test bench

setup:
	@bash scripts/setup.sh

browser:
	@bash scripts/browser.sh

demo: setup
	@bash scripts/demo.sh

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy

test: setup browser lint
	@bash scripts/test.sh

bench: setup
	$(PY) benchmarks/generate.py
