# Quick start: `make demo` (the main job on a built-in default) and `make test` (the whole suite).
# Both create .venv and install gptlab first when needed (scripts/setup.sh); `test` also makes
# chromium available for the chat-page browser test (scripts/browser.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
export GPTLAB_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: setup browser demo test bench

setup:
	@bash scripts/setup.sh

browser:
	@bash scripts/browser.sh

demo: setup
	@bash scripts/demo.sh

test: setup browser
	@bash scripts/test.sh

bench: setup
	$(PY) benchmarks/generate.py
