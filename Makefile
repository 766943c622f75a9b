# The README's two set-up commands: `make tiny` (main job) and `make test` (lint + tests).
# Both install the project into .venv on first use. torch is pinned first: 2.13.0 is a local CPU wheel on
# this kind of machine, while an unpinned torch would pull several GB of CUDA wheels. Override on a GPU box:
#   make tiny TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
VENV ?= .venv
TORCH ?= torch==2.13.0
INSTALLED := $(VENV)/.installed

.PHONY: tiny test lint clean

$(INSTALLED): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check $(TORCH)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

tiny: $(INSTALLED)
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
		recipes/zephyr_style.py --config recipes/zephyr_style/tiny.yaml

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
